"""HTTP throughput and latency: `ledger serve` against a bare Flask+eventsourcing app, measured in
the same run, on SQLite and PostgreSQL.

    python bench/api.py [--seconds 5] [--connections 16] [--rounds 3] [--no-postgres]
                        [--no-sqlite]

Writes: POST /participants/{id}/payments, each for a fresh participant with its own
Idempotency-Key (so every request really pays), against the bare app's POST /save (one save).
Reads: GET /participants/{id} against the bare app's GET /read/{id} (one aggregate load).

The load comes from wrk (Debian's package `wrk`), with bench/wrk_requests.lua giving every
request its own participant and key from a file made beforehand. wrk is written in C: it takes
a few percent of a core where a Python client took a fifth or more of the machine, and the
latencies it records are the server's, not those of a client thread waiting for its own GIL.
Each measurement runs for a fixed time after a one-second warm-up (the same for both sides); the
CPU time the server's processes used (gunicorn's workers and, on PostgreSQL, the database's own
processes) is read from /proc around it and reported per request: what the ledger costs beside
the bare app, whatever rate the load reached. This machine's speed drifts by a third within
minutes, so each round starts both servers on fresh stores and runs the two sides of each
comparison back to back (bare writes, ledger writes, bare reads, ledger reads); each figure is
the median over the rounds, each ratio the median of the rounds' own. Ends with one JSON line.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
BIN = Path(sys.executable).parent
PG = "postgresql://postgres@127.0.0.1:5432/test"
# The same gunicorn settings on both sides (`ledger serve` defaults to 4 threads).
WORKERS, THREADS = int(os.environ.get("BENCH_WORKERS", 2)), int(os.environ.get("BENCH_THREADS", 4))
WRK_THREADS = 2  # one per core
WARMUP_S = 1
MAX_RATE = 2000  # payments/s the ledger could reach here at most: how many fresh people to make
TICK = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_ready(port: int, path: str) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            c.request("GET", path)
            c.getresponse().read()
            return  # any answer means it is listening
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"server on {port} not ready")


def start(cmd: list[str], env: dict[str, str], port: int, ready: str, log: Path
          ) -> subprocess.Popen:
    full = {k: v for k, v in os.environ.items() if not k.startswith(("LEDGER_", "BARE_"))}
    full.update(env)
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, env=full, stdout=out, stderr=subprocess.STDOUT, cwd=HERE)
    wait_ready(port, ready)
    return proc


# -- CPU time of the server's processes ----------------------------------------------------------

def _stat(pid: int) -> tuple[str, int, int]:
    """(command name, parent pid, CPU ticks used: user + system, all threads)."""
    with open(f"/proc/{pid}/stat") as f:
        raw = f.read()
    name = raw[raw.index("(") + 1:raw.rindex(")")]
    rest = raw.rsplit(")", 1)[1].split()
    return name, int(rest[1]), int(rest[11]) + int(rest[12])


def server_ticks(root: int, with_postgres: bool) -> int:
    """CPU ticks used so far by ``root`` and its children, plus every PostgreSQL process (the
    bench is the only thing using the database while it runs)."""
    total = 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            name, ppid, ticks = _stat(int(entry))
        except (OSError, ValueError, IndexError):
            continue
        if int(entry) == root or ppid == root or (with_postgres and name.startswith("postgres")):
            total += ticks
    return total


# -- the load ------------------------------------------------------------------------------------

def write_requests(path: Path, lines: list[tuple[str, str, str, str]]) -> Path:
    with path.open("w") as f:
        for method, url, key, body in lines:
            f.write(f"{method}\t{url}\t{key}\t{body}\n")
    return path


def wrk(port: int, requests: Path, seconds: int, connections: int, token: str = "",
        repeat: bool = False) -> dict:
    """One wrk run; its JSON line. Unless ``repeat``, each line must be sent at most once."""
    cmd = ["wrk", "-t", str(WRK_THREADS), "-c", str(connections), "-d", f"{seconds:g}s",
           "--timeout", "30s", "-s", str(HERE / "wrk_requests.lua"), f"http://127.0.0.1:{port}",
           "--", str(requests), str(WRK_THREADS), token]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    result = json.loads(out.strip().splitlines()[-1])
    if result["exhausted_threads"] and not repeat:
        raise RuntimeError(f"wrk ran out of requests in {requests.name}: raise --max-rate")
    return result


def load(port: int, proc: subprocess.Popen, with_postgres: bool, warmup: Path, requests: Path,
         seconds: int, connections: int, token: str = "", repeat: bool = False
         ) -> dict[str, float]:
    """A warm-up, then the measured run: rate, latency, errors and server CPU per request."""
    wrk(port, warmup, WARMUP_S, connections, token, repeat)
    before = server_ticks(proc.pid, with_postgres)
    r = wrk(port, requests, seconds, connections, token, repeat)
    cpu_s = (server_ticks(proc.pid, with_postgres) - before) / TICK
    ok = sum(v for k, v in r["statuses"].items() if int(k) < 400)
    return {"requests_per_s": round(r["requests"] / r["seconds"], 1),
            "p50_ms": round(r["p50_us"] / 1000, 2), "p90_ms": round(r["p90_us"] / 1000, 2),
            "p99_ms": round(r["p99_us"] / 1000, 2), "max_ms": round(r["max_us"] / 1000, 2),
            "server_cpu_ms_per_request": round(cpu_s * 1000 / max(r["requests"], 1), 3),
            "errors": r["requests"] - ok + r["socket_errors"]}


@dataclass
class Side:
    """One server under test, with the request files for its warm-ups and measured runs."""

    proc: subprocess.Popen
    port: int
    postgres: bool
    files: dict[str, tuple[Path, Path]]  # kind -> (warm-up, measured)
    token: str = ""
    repeat: dict[str, bool] = field(default_factory=dict)  # kind -> may a line be sent again

    def run(self, kind: str, seconds: int, connections: int) -> dict[str, float]:
        warm, measured = self.files[kind]
        return load(self.port, self.proc, self.postgres, warm, measured, seconds, connections,
                    self.token, self.repeat.get(kind, False))

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=30)


def ledger_side(env: dict[str, str], seconds: int, tmp: Path, max_rate: int) -> Side:
    """A ledger with one fresh person for each payment it could make, served by `ledger serve`."""
    sys.path.insert(0, str(HERE.parent))
    from ledger.application import Ledger

    fresh = int(max_rate * (seconds + WARMUP_S))
    setup = Ledger(env)
    setup.init_study(by="bench")
    _, token = setup.tokens.create("staff", "bench")
    pids = [setup.register_participant("Bench Person", by="bench")["id"] for _ in range(fresh)]
    # A running ledger's follower keeps the views and the Merkle leaves up to date as people
    # register; bring them up to date here, or the measured run pays for the set-up's backlog.
    setup.projector.catch_up()
    setup.merkle.catch_up()
    setup.close()
    body = json.dumps({"activity": "conversation", "amount": "25.00", "method": "bank_transfer"})
    pays = [("POST", f"/api/v1/participants/{pid}/payments", str(uuid.uuid4()), body)
            for pid in pids]
    reads = [("GET", f"/api/v1/participants/{pid}", "", "") for pid in pids]
    split = int(max_rate * WARMUP_S)
    files = {kind: (write_requests(tmp / f"ledger-{kind}-warm.tsv", lines[:split]),
                    write_requests(tmp / f"ledger-{kind}.tsv", lines[split:]))
             for kind, lines in (("write", pays), ("read", reads))}
    port = free_port()
    proc = start([str(BIN / "ledger"), "serve", "--port", str(port), "--workers", str(WORKERS),
                  "--threads", str(THREADS)], env, port, "/readyz", tmp / "ledger.log")
    # (reading someone again is a read like any other; a payment must be new each time)
    return Side(proc, port, "LEDGER_DATABASE_URL" in env, files, token, {"read": True})


def bare_side(env: dict[str, str], tmp: Path) -> Side:
    """The bare app under the same gunicorn settings, with 100 saved aggregates to read."""
    port = free_port()
    cmd = [str(BIN / "gunicorn"), "--workers", str(WORKERS), "--threads", str(THREADS),
           "-k", "gthread", "--bind", f"127.0.0.1:{port}", "--chdir", str(HERE),
           "bare_app:create()"]
    proc = start(cmd, env, port, "/", tmp / "bare.log")
    headers = {"Content-Type": "application/json"}
    body = json.dumps({"activity": "conversation", "amount": "25.00"})
    # Reads need ids: save some through the app first (reconnecting if a worker still
    # starting drops the connection).
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    ids: list[str] = []
    deadline = time.monotonic() + 60
    while len(ids) < 100:
        try:
            conn.request("POST", "/save", body=body.encode(), headers=headers)
            ids.append(json.loads(conn.getresponse().read())["id"])
        except (OSError, http.client.HTTPException):
            conn.close()
            if time.monotonic() > deadline:
                proc.terminate()
                raise
            time.sleep(0.2)
    conn.close()
    saves = write_requests(tmp / "bare-write.tsv", [("POST", "/save", "", body)] * 100)
    reads = write_requests(tmp / "bare-read.tsv", [("GET", f"/read/{i}", "", "") for i in ids])
    # (every line may be sent again: a save makes a new aggregate whatever its body)
    return Side(proc, port, "BARE_POSTGRES_SCHEMA" in env,
                {"write": (saves, saves), "read": (reads, reads)}, "",
                {"write": True, "read": True})


def new_schema(prefix: str, url: str = PG) -> str:
    """A fresh, empty schema in the PostgreSQL database at ``url``; its name."""
    import psycopg

    schema = f"{prefix}_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    return schema


def drop_schema(schema: str, url: str = PG) -> None:
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


@contextmanager
def stores(store: str, tmp: Path, prefix: str) -> Iterator[tuple[dict[str, str], dict[str, str]]]:
    """The bare app's and the ledger's storage settings for one run (fresh PostgreSQL schemas,
    dropped afterwards, or SQLite files in ``tmp``)."""
    if store == "sqlite":
        yield {"BARE_SQLITE": str(tmp / "bare.sqlite3")}, {"LEDGER_DATA_DIR": str(tmp / "ledger")}
        return
    # (the bare app needs its schema made; the ledger makes its own, named here)
    schemas = [new_schema(f"{prefix}_bare"), f"{prefix}_ledger_{uuid.uuid4().hex[:8]}"]
    try:
        yield ({"BARE_POSTGRES_SCHEMA": schemas[0]},
               {"LEDGER_DATA_DIR": str(tmp / "ledger"),
                "LEDGER_DATABASE_URL": f"{PG}?schema={schemas[1]}"})
    finally:
        for s in schemas:
            drop_schema(s)


def measure(store: str, seconds: int, connections: int, max_rate: int) -> dict:
    """One round: both servers up on fresh stores, then bare and ledger writes back to back, and
    bare and ledger reads, so that both sides of each comparison run within seconds."""
    with tempfile.TemporaryDirectory() as d, stores(store, Path(d), "bench") as (bare_env,
                                                                                  ledger_env):
        sides = {"ledger": ledger_side(ledger_env, seconds, Path(d), max_rate)}
        try:
            sides["bare"] = bare_side(bare_env, Path(d))
            out: dict = {"bare": {}, "ledger": {}}
            for kind in ("write", "read"):
                for name in ("bare", "ledger"):
                    out[name][kind] = sides[name].run(kind, seconds, connections)
        finally:
            for side in sides.values():
                side.stop()
    for kind in ("write", "read"):
        lg, b = out["ledger"][kind], out["bare"][kind]
        out[f"{kind}_ratio"] = round(lg["requests_per_s"] / b["requests_per_s"], 3)
        out[f"{kind}_cpu_ratio"] = round(lg["server_cpu_ms_per_request"]
                                         / b["server_cpu_ms_per_request"], 3)
    return out


FIGURES = ("requests_per_s", "p50_ms", "p90_ms", "p99_ms", "max_ms", "server_cpu_ms_per_request")


def median_round(rounds: list[dict]) -> dict:
    """Each figure's median over the rounds (ratios as the median of each round's own ratio:
    both sides of a round ran within the same half minute)."""
    def med(values: list[float]) -> float:
        return statistics.median(values)
    out: dict = {}
    for side in ("bare", "ledger"):
        out[side] = {kind: {k: med([r[side][kind][k] for r in rounds]) for k in FIGURES}
                     for kind in ("write", "read")}
        for kind in ("write", "read"):
            out[side][kind]["errors"] = sum(r[side][kind]["errors"] for r in rounds)
    for kind in ("write", "read"):
        for ratio in (f"{kind}_ratio", f"{kind}_cpu_ratio"):
            out[ratio] = med([r[ratio] for r in rounds])
            out[ratio + "s"] = [r[ratio] for r in rounds]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=int, default=5, help="each measured run")
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=3,
                        help="bare then ledger, this many times on fresh stores (medians)")
    parser.add_argument("--max-rate", type=int, default=MAX_RATE,
                        help="payments/s the ledger could reach at most (one fresh person each)")
    parser.add_argument("--no-postgres", action="store_true")
    parser.add_argument("--no-sqlite", action="store_true")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("bench/api.py needs wrk: apt-get install wrk")
    out: dict = {"bench": "api", "seconds": args.seconds, "connections": args.connections,
                 "workers": WORKERS, "threads": THREADS, "rounds": args.rounds, "client": "wrk"}
    for store in ([] if args.no_sqlite else ["sqlite"]) + ([] if args.no_postgres else ["postgres"]):
        rounds = [measure(store, args.seconds, args.connections, args.max_rate)
                  for _ in range(args.rounds)]
        r = out[store] = median_round(rounds)
        for kind in ("write", "read"):
            b, lg = r["bare"][kind], r["ledger"][kind]
            print(f"{store:9} {kind:5}  bare {b['requests_per_s']:7.1f} req/s p50 {b['p50_ms']:6.2f}"
                  f" p99 {b['p99_ms']:6.2f} cpu {b['server_cpu_ms_per_request']:.3f} ms | ledger "
                  f"{lg['requests_per_s']:7.1f} req/s p50 {lg['p50_ms']:6.2f} p99 {lg['p99_ms']:6.2f}"
                  f" cpu {lg['server_cpu_ms_per_request']:.3f} ms errors {lg['errors']} | ratio "
                  f"{r[kind + '_ratio']:.2f} (rounds: "
                  f"{', '.join(f'{x:.2f}' for x in r[kind + '_ratios'])}), cpu per request x"
                  f"{r[kind + '_cpu_ratio']:.2f}", flush=True)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
