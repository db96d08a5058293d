"""Tamper check at scale: ``ledger verify`` over a study of about 1,000,000 events, next to the
least any verifier must do with the same store, measured in the same run, on SQLite and
PostgreSQL.

    python bench/verify.py [--participants 10000] [--events-per-person 100]
                           [--postgres URL | --no-postgres]

The study is written by ``bench/reports.py``'s generator (through the domain model, views and
Merkle leaves left to other processes, as ``LEDGER_PROJECTIONS=external`` does), so no leaf is
recorded while writing (``leaves_after_write``). The first hashing of the whole log
(``merkle.catch_up()``: every leaf computed and recorded, a one-off a live ledger spreads over its
saves) and the first signed checkpoint are timed on their own.

Then, each in a fresh child process, so each peak RSS belongs to that step alone
(``idle_rss_mb`` is the same child before it starts):

- bare: ``recorder.select_notifications`` in pages of 5,000 and SHA-256 of each notification's
  stored bytes (id, topic and encrypted state) -- reading and hashing every event once, the least
  any verifier must do;
- verify: ``ledger.audit.checkpoints.verify`` on the same store: every leaf recomputed, held
  against the leaf recorded when the event was first seen, the tree rebuilt and every signed
  checkpoint's signature and root checked.

The real command, ``ledger verify``, is also run once in a subprocess on the same store (with
``LEDGER_DATA_DIR`` / ``LEDGER_DATABASE_URL`` as the generator had them) and must exit 0; its time
includes starting Python and opening the ledger. Then the views are built (``ledger projections
rebuild``, timed apart) and ``ledger verify --views`` is run the same way: the log's check plus a
replay of the whole log held against the views (``views_ratio_to_cli_verify``: what the flag
costs). Ends with one JSON line.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.reports import generate, run  # noqa: E402
from bench.reports import step as reports_step  # noqa: E402

PAGE = 5000
LEDGER = str(Path(sys.executable).parent / "ledger")  # the console script pip installed


def _bare(ledger: Any) -> int:
    """Read every notification in pages and hash its stored bytes; returns how many."""
    recorder = ledger.recorder
    start, count = 1, 0
    while True:
        page = recorder.select_notifications(start=start, limit=PAGE)
        for n in page:
            hashlib.sha256(n.originator_id.bytes + n.topic.encode() + n.state).digest()
            count += 1
        if len(page) < PAGE:
            return count
        start = page[-1].id + 1


def _step(ledger: Any, name: str, _: Any = None) -> Any:
    from ledger.audit.checkpoints import verify

    if name == "idle":
        return None
    if name == "leaves":
        return ledger.merkle._state()[0]
    if name == "first_hashing":
        return ledger.merkle.catch_up()[0]
    if name == "checkpoint":
        return ledger.merkle.checkpoint()["size"]
    if name == "bare":
        return _bare(ledger)
    if name == "verify":
        verdict = verify(ledger.merkle)
        return {"ok": verdict.ok, "size": verdict.size, "checkpoints": verdict.checkpoints,
                "problems": verdict.problems[:5]}
    raise ValueError(name)


def step(name: str, env: dict[str, str]) -> tuple[float, float, Any]:
    """(seconds, peak RSS in MiB, result) of one step in a fresh process."""
    return reports_step(name, env, run_step=_step)


def cli_verify(env: dict[str, str], *args: str) -> tuple[float, float, int, str]:
    """(seconds, peak RSS in MiB, exit code, output) of ``ledger verify`` (or, given ``args``,
    that command) in a subprocess, run in the data directory (so no stray .env is read) with
    only this store's settings."""
    full = {k: v for k, v in os.environ.items() if not k.startswith("LEDGER_")}
    full.update(env)
    with tempfile.TemporaryFile() as output:
        start = time.perf_counter()
        process = subprocess.Popen([LEDGER, *(args or ("verify",))], env=full,
                                   cwd=env["LEDGER_DATA_DIR"],
                                   stdout=output, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(process.pid, 0)  # this child's own peak RSS
        seconds = time.perf_counter() - start
        process.returncode = code = os.waitstatus_to_exitcode(status)
        output.seek(0)
        text = output.read().decode(errors="replace").strip()
    return seconds, usage.ru_maxrss / 1024, code, text


def measure(env: dict[str, str], participants: int, events: int) -> dict[str, Any]:
    size = generate(env, participants, events)
    print(f"  written: {size}", file=sys.stderr, flush=True)
    _, _, leaves_after_write = step("leaves", env)
    hash_s, hash_rss, hashed = step("first_hashing", env)
    checkpoint_s, _, signed = step("checkpoint", env)
    assert hashed == signed == size["events"], (hashed, signed, size)
    print(f"  first hashing {hash_s:.1f} s, checkpoint at {signed}", file=sys.stderr, flush=True)
    _, idle_rss, _ = step("idle", env)
    bare_s, bare_rss, read = step("bare", env)
    verify_s, verify_rss, verdict = step("verify", env)
    assert read == verdict["size"] == size["events"], (read, verdict)
    cli_s, cli_rss, cli_code, cli_out = cli_verify(env)
    print(f"  ledger verify: exit {cli_code}: {cli_out[-500:]}", file=sys.stderr, flush=True)
    if cli_code != 0 or not verdict["ok"]:
        raise RuntimeError(f"verify failed: {verdict}; ledger verify exit {cli_code}: {cli_out}")
    rebuild_s, _, rebuild_code, rebuild_out = cli_verify(env, "projections", "rebuild")
    views_s, views_rss, views_code, views_out = cli_verify(env, "verify", "--views")
    print(f"  rebuild {rebuild_s:.1f} s; ledger verify --views {views_s:.1f} s: exit "
          f"{views_code}: {views_out[-300:]}", file=sys.stderr, flush=True)
    if rebuild_code != 0 or views_code != 0:
        raise RuntimeError(f"rebuild exit {rebuild_code}: {rebuild_out[-500:]}; verify --views "
                           f"exit {views_code}: {views_out[-500:]}")
    return {
        **size,
        "leaves_after_write": leaves_after_write,
        "first_hashing_s": round(hash_s, 2), "first_hashing_rss_mb": round(hash_rss),
        "checkpoint_s": round(checkpoint_s, 2),
        "idle_rss_mb": round(idle_rss),
        "bare_read_hash_s": round(bare_s, 2), "bare_read_hash_rss_mb": round(bare_rss),
        "verify_s": round(verify_s, 2), "verify_rss_mb": round(verify_rss),
        "verify_ratio_to_bare": round(verify_s / bare_s, 2),
        "verify_ok": verdict["ok"], "verify_checkpoints": verdict["checkpoints"],
        "cli_verify_s": round(cli_s, 2), "cli_verify_rss_mb": round(cli_rss),
        "cli_verify_exit": cli_code,
        "cli_verify_ratio_to_bare": round(cli_s / bare_s, 2),
        "rebuild_s": round(rebuild_s, 2),
        "cli_verify_views_s": round(views_s, 2), "cli_verify_views_rss_mb": round(views_rss),
        "cli_verify_views_exit": views_code,
        "views_ratio_to_cli_verify": round(views_s / cli_s, 2),
    }


def main() -> None:
    run("verify", __doc__, measure, lambda r: (
        f"{r['events']} events: first hashing {r['first_hashing_s']} s, bare read+hash "
        f"{r['bare_read_hash_s']} s ({r['bare_read_hash_rss_mb']} MiB), verify {r['verify_s']} s "
        f"({r['verify_ratio_to_bare']}x, {r['verify_rss_mb']} MiB), ledger verify "
        f"{r['cli_verify_s']} s ({r['cli_verify_rss_mb']} MiB), ledger verify --views "
        f"{r['cli_verify_views_s']} s ({r['views_ratio_to_cli_verify']}x, "
        f"{r['cli_verify_views_rss_mb']} MiB)"))


if __name__ == "__main__":
    main()
