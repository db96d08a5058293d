"""SIGKILL at random moments: no acknowledged write is lost, no command is half-written, the views
catch up and equal a rebuild, and the log verifies (issue 7, point 2).

Writer threads (several connections at once) grant consents and record payments through a real
`ledger serve` as fast as they can, and keep every acknowledged (201) answer. At a random moment
the test kills the whole server -- the gunicorn master and its workers, one process group -- with
SIGKILL, checks the store, restarts the server on the same data and goes on. A request in flight
at the kill was not acknowledged: it may or may not be stored, never half; a payment retried with
its Idempotency-Key after the restart is paid exactly once.

LEDGER_CRASH_TRIALS sets the number of trials (default: 30 on SQLite, 10 on PostgreSQL);
LEDGER_CRASH_SEED replays the kill moments of a failed run (every failure names its seed).
"""

from __future__ import annotations

import http.client
import json
import os
import random
import signal
import subprocess
import threading
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

from ledger.application import Ledger
from ledger.audit.checkpoints import verify
from ledger.domain import Payment
from ledger.domain.base import topic
from ledger.projections.rows import rows_key
from tests.conftest import wait_for_postgres_backends

from .conftest import LEDGER, Server
from .conftest import start_server as start_shared

STEPS = (("consent", "take_part"), ("payment", "conversation"), ("consent", "record"),
         ("payment", "workshop"))  # what the writer does for each fresh participant
WRITERS = 4  # concurrent connections (2 workers x 4 threads serve them)
PER_TRIAL = 120  # fresh participants for a trial, at least (a busy trial here starts ~60)
KILL_AFTER_S = (0.05, 0.6)  # the kill comes this long after the first acknowledged write
RECORDED, NOTED = topic("Payment.Recorded"), topic("Participant.PaymentNoted")
REVERSAL_NOTED = topic("Participant.PaymentReversalNoted")
CONNECTION_LOST = (OSError, http.client.HTTPException)


@dataclass(frozen=True)
class Write:
    """One request the writer sends: a consent for a scope, or a payment for an activity."""

    kind: str
    pid: UUID
    what: str
    key: str = ""  # a payment's Idempotency-Key

    def body(self) -> dict[str, str]:
        if self.kind == "consent":
            return {"scope": self.what, "form_version": "1.0", "method": "online"}
        return {"activity": self.what, "amount": "25.00", "method": "cash",
                "reference": f"crash {self.key}"}

    def send(self, server: Server, auth: dict[str, str]) -> tuple[int, dict, bytes]:
        path = f"/api/v1/participants/{self.pid}/{self.kind}s"
        headers = auth if self.kind == "consent" else {**auth, "Idempotency-Key": self.key}
        return server.request("POST", path, self.body(), headers)


@dataclass(frozen=True)
class Acked:
    """An acknowledged write: what it was, the answer, and where it says it is in the log."""

    write: Write
    body: bytes
    position: int | None
    replayed: bool = False  # the kept answer to a payment stored before a kill

    @property
    def payment_id(self) -> UUID:
        return UUID(json.loads(self.body)["id"])


def acked(write: Write, headers: dict[str, str], body: bytes, *, replayed: bool = False) -> Acked:
    position = {k.lower(): v for k, v in headers.items()}.get("ledger-position")
    return Acked(write, body, None if position is None else int(position), replayed)


class Writer:
    """Threads that write for fresh participants until the server stops answering."""

    def __init__(self, server: Server, auth: dict[str, str], pids: list[UUID]) -> None:
        self.server, self.auth = server, auth
        self._pids = iter(pids)
        self._lock = threading.Lock()
        self.acked: list[Acked] = []
        self.lost: list[tuple[float, Write, str]] = []  # (when, request, error): not acknowledged
        self.refused: list[tuple[Write, int, bytes]] = []  # answered, but not 201
        self.threads = [threading.Thread(target=self._run, daemon=True) for _ in range(WRITERS)]

    def start(self) -> None:
        for t in self.threads:
            t.start()

    def join(self) -> None:
        for t in self.threads:
            t.join(timeout=90)
            assert not t.is_alive(), "a writer thread is stuck"

    def _next(self) -> UUID | None:
        with self._lock:
            return next(self._pids, None)

    def _run(self) -> None:
        while (pid := self._next()) is not None:
            for kind, what in STEPS:
                write = Write(kind, pid, what, str(uuid4()) if kind == "payment" else "")
                try:
                    status, headers, body = write.send(self.server, self.auth)
                except CONNECTION_LOST as e:
                    with self._lock:
                        self.lost.append((time.monotonic(), write, type(e).__name__))
                    return  # the server is gone
                with self._lock:
                    if status != 201:
                        self.refused.append((write, status, body))
                        return
                    self.acked.append(acked(write, headers, body))


# -- the server, in its own process group ---------------------------------------------------------


def _group(pgid: int) -> list[int]:
    """The live (not zombie) processes of a process group."""
    alive = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue  # gone meanwhile
        if int(fields[2]) == pgid and fields[0] != "Z":
            alive.append(int(entry.name))
    return alive


def kill_server(proc: subprocess.Popen) -> list[int]:
    """SIGKILL the master and every worker at once; returns the processes that were running."""
    running = _group(proc.pid)
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait(timeout=30)
    deadline = time.monotonic() + 30
    while alive := _group(proc.pid):
        assert time.monotonic() < deadline, f"still running after SIGKILL: {alive}"
        time.sleep(0.01)
    return running


def start_server(env: dict[str, str], log: Path, workers: int = 2) -> tuple[subprocess.Popen,
                                                                             Server]:
    """`ledger serve` in its own process group, so that one killpg reaches the workers too."""
    return start_shared(env, log, workers, new_session=True)


# -- the checks -----------------------------------------------------------------------------------


def _notifications(lg: Ledger) -> list[Any]:
    out: list[Any] = []
    while page := lg.recorder.select_notifications(start=(out[-1].id + 1 if out else 1),
                                                   limit=5_000):
        out += page
    return out


def _views(lg: Ledger) -> tuple[int, dict[str, list[tuple[str, ...]]], list[Any]]:
    """Everything in the views, comparable (as in tests/integration/test_projections.py)."""
    views = lg.projector.views
    position, _, rows, people = views.snapshot(
        lg.recorder.events_table_name)  # type: ignore[attr-defined]
    docs = views.page(after_seq=0, limit=1_000_000)  # as stored: sealed values as ciphertext
    return position, {k: sorted(map(rows_key, v)) for k, v in rows.items()}, docs + people


def check_store(lg: Ledger, where: str, acks: list[Acked], in_flight: list[Write],
                token_id: str) -> dict[str, bytes | None]:
    """Check the store as a crash left it (``lg`` just opened on it). Returns the response kept
    for each payment in flight at the kill (None if it was not stored)."""
    log = _notifications(lg)
    last = log[-1].id

    # The views caught up when the ledger opened (inline, as a restarted server does).
    assert lg.projector.views.position() == last, where

    # No half-written command: every aggregate's versions are 1..n in log order ...
    versions: dict[UUID, int] = {}
    for n in log:
        expected = versions.get(n.originator_id, 0) + 1
        assert n.originator_version == expected, \
            f"{where}: {n.originator_id} at version {n.originator_version} (notification " \
            f"{n.id}), expected {expected}"
        versions[n.originator_id] = expected
    # ... every payment stored has its note on the participant, and every note its payment ...
    recorded = {n.originator_id for n in log if n.topic == RECORDED}
    decode: Any = lg.mapper.to_domain_event  # Participant.PaymentNoted and ReversalNoted
    notes = [decode(n) for n in log if n.topic == NOTED]
    reversed_ids = {decode(n).payment_id for n in log if n.topic == REVERSAL_NOTED}
    assert {e.payment_id for e in notes} == recorded, where
    for e in notes:
        assert e.payment_id == Payment.create_id(e.originator_id, e.activity, e.slot), where
    # ... and no one is paid twice for one activity.
    live = Counter((e.originator_id, e.activity) for e in notes
                   if e.payment_id not in reversed_ids)
    assert [k for k, count in live.items() if count > 1] == [], where

    # Every acknowledged write is in the event store, where its Ledger-Position says ...
    by_id = {n.id: n for n in log}
    for a in acks:
        w = a.write
        record = lg.participant(w.pid)  # read from the aggregates
        if w.kind == "consent":
            assert json.loads(a.body)["state"] == "given", where
            assert record["consents"].get(w.what, {}).get("state") == "given", \
                f"{where}: acknowledged consent lost: {w} at position {a.position}"
            near = {w.pid}
        else:
            paid = {p["id"]: p["activity"] for p in record["payments"]}
            assert paid.get(a.payment_id) == w.what, \
                f"{where}: acknowledged payment lost: {w} ({a.payment_id}) at {a.position}"
            near = {w.pid, a.payment_id}
        if a.position is not None and a.replayed:  # the log's position when it was replayed
            own = max(n.id for n in log if n.originator_id == a.payment_id)
            assert own <= a.position <= max(by_id), \
                f"{where}: {w} replayed at position {a.position}, before its write at {own}"
        elif a.position is not None:
            assert a.position in by_id and by_id[a.position].originator_id in near, \
                f"{where}: {w} acknowledged at position {a.position}, which is not its write"

    # ... and in the views (their rows, not the aggregates).
    rows = lg.projector.views.all_rows()
    given = {(r["participant_id"], r["scope"]) for r in rows["consents"] if r["state"] == "given"}
    view_paid = {r["payment_id"] for r in rows["payments"]}
    for a in acks:
        w = a.write
        if w.kind == "consent":
            assert (str(w.pid), w.what) in given, f"{where}: views lost consent {w}"
        else:
            assert str(a.payment_id) in view_paid, f"{where}: views lost payment {w}"

    # A payment in flight at the kill is stored together with its idempotency key, or neither.
    kept: dict[str, bytes | None] = {}
    for w in in_flight:
        key = lg.idempotency.stored_key(w.key)
        stored = lg.idempotency.lookup(token_id, key)
        exists = Payment.create_id(w.pid, w.what, 0) in recorded
        assert (stored is not None) == exists, \
            f"{where}: payment in flight at the kill {'without' if exists else 'only'} " \
            f"its idempotency key: {w}"
        # (kept sealed with the person's data key: the response as it was sent)
        kept[w.key] = None if stored is None else lg.idempotency.opened(stored, token_id, key)

    # The views after the crash equal views rebuilt from the log.
    before = _views(lg)
    lg.projector.rebuild()
    assert _views(lg) == before, f"{where}: the views differ from a rebuild"

    verdict = verify(lg.merkle)
    assert verdict.ok, f"{where}: {verdict.problems[:5]}"
    return kept


def check_views_list(lg: Ledger, where: str, after: UUID | None, block: list[UUID]) -> None:
    """The staff list (read from the views) shows each participant of ``block`` exactly as
    their record (read from the aggregates) does."""
    page = lg.participants_page(limit=len(block), after=after)["items"]
    assert [p["id"] for p in page] == block, where
    for listed in page:
        assert listed == lg.participant(listed["id"]), \
            f"{where}: the views show {listed['id']} differently from its record"


# -- the test -------------------------------------------------------------------------------------


def test_sigkill_at_random_moments_loses_no_acknowledged_write(store_env, tmp_path):
    postgres = "LEDGER_DATABASE_URL" in store_env
    trials = int(os.environ.get("LEDGER_CRASH_TRIALS") or (10 if postgres else 30))
    seed = int(os.environ.get("LEDGER_CRASH_SEED") or random.SystemRandom().randrange(2**32))
    rng = random.Random(seed)

    def register(lg: Ledger, count: int) -> list[UUID]:
        return [lg.register_participant(f"Crash Person {n}", by="test")["id"]
                for n in range(count)]

    setup = Ledger(store_env)
    setup.init_study(by="test")
    info, secret = setup.tokens.create("staff", "crash writer")
    auth = {"Authorization": f"Bearer {secret}"}
    after, block = None, register(setup, PER_TRIAL)
    setup.close()

    every_ack: list[Acked] = []
    in_flight: list[Write] = []  # payments in flight at the last kill, to retry
    kept: dict[str, bytes | None] = {}
    previous: list[Acked] = []  # payments acknowledged in the last trial
    used = []
    retried = stored_before = 0  # payments in flight at a kill; of them, stored before it
    proc = None
    try:
        for trial in range(trials + 1):  # the last start only retries, then stops cleanly
            where = f"seed {seed}, trial {trial} (LEDGER_CRASH_SEED={seed} replays it)"
            proc, server = start_server(store_env, tmp_path / f"server-{trial}.log")

            # After the restart: a payment in flight at the kill, retried with its key, is
            # paid exactly once: its first answer again if it was stored, or now.
            for w in in_flight:
                status, headers, body = w.send(server, auth)
                assert status == 201, f"{where}: retry of {w}: {status} {body[:300]!r}"
                assert UUID(json.loads(body)["id"]) == Payment.create_id(w.pid, w.what, 0), where
                assert kept[w.key] is None or body == kept[w.key], f"{where}: {w}"
                every_ack.append(acked(w, headers, body, replayed=kept[w.key] is not None))
                retried, stored_before = retried + 1, stored_before + (kept[w.key] is not None)
            # An acknowledged payment sent again gets its answer again, byte for byte.
            for a in rng.sample(previous, min(3, len(previous))):
                status, headers, body = a.write.send(server, auth)
                assert (status, body) == (201, a.body), f"{where}: replay of {a.write}"
                again = acked(a.write, headers, body).position  # the log's position by then
                assert a.position is None or (again is not None and again >= a.position), where
            # The restarted server's views include every acknowledged write.
            positions = [a.position for a in every_ack if a.position is not None]
            if positions:
                status, _, _ = server.request(
                    "GET", f"/api/v1/participants?limit=1&min_position={max(positions)}",
                    headers=auth)
                assert status == 200, where
            if trial == trials:
                proc.terminate()
                assert proc.wait(timeout=60) == 0, where
                break

            writer = Writer(server, auth, block)
            writer.start()
            deadline = time.monotonic() + 60
            while not writer.acked:
                assert time.monotonic() < deadline and not writer.lost and not writer.refused, \
                    f"{where}: nothing acknowledged: {writer.lost} {writer.refused}"
                time.sleep(0.002)
            time.sleep(rng.uniform(*KILL_AFTER_S))  # the random moment of the crash
            killed_at = time.monotonic()
            running = kill_server(proc)
            if postgres:
                wait_for_postgres_backends(store_env)
            writer.join()

            assert len(running) >= 2, f"{where}: the master and its workers: {running}"
            assert writer.refused == [], f"{where}: {writer.refused[:3]}"
            assert [e for e in writer.lost if e[0] < killed_at] == [], \
                f"{where}: connections lost before the kill: {writer.lost}"
            started = {a.write.pid for a in writer.acked} | {w.pid for _, w, _ in writer.lost}
            assert len(started) < len(block), f"{where}: the writer ran out of participants"
            used.append((len(writer.acked), len(started)))
            every_ack += writer.acked
            previous = [a for a in writer.acked if a.write.kind == "payment"]
            in_flight = [w for _, w, _ in writer.lost if w.kind == "payment"]

            check = Ledger(store_env)  # as a restarted server would: it catches the views up
            try:
                kept = check_store(check, where, writer.acked, in_flight, info.id)
                check_views_list(check, where, after, block)
                # Fresh participants for the next trial: many more than the busiest one used.
                after = block[-1]
                block = register(check, max(PER_TRIAL, 3 * max(n for _, n in used)))
            finally:
                check.close()

        where = f"seed {seed}, after {trials} trials"
        final = Ledger(store_env)
        try:  # every write acknowledged in any trial, and every retried one
            check_store(final, where, every_ack, [], info.id)
        finally:
            final.close()
    finally:
        if proc is not None and proc.poll() is None:
            kill_server(proc)

    cli_env = {k: v for k, v in os.environ.items() if not k.startswith("LEDGER_")}
    done = subprocess.run([LEDGER, "verify"], env={**cli_env, **store_env}, cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, f"seed {seed}: {done.stdout} {done.stderr}"
    print(f"seed {seed}: {trials} kills, {len(every_ack)} acknowledged writes, {retried} "
          f"payments in flight at a kill retried ({stored_before} had been stored); per trial "
          f"(acknowledged, participants started): {used}")
