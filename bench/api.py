"""HTTP throughput and latency: `ledger serve` against a bare Flask+eventsourcing app, measured in
the same run, on SQLite and PostgreSQL.

    python bench/api.py [--requests 2000] [--connections 16] [--rounds 3] [--no-postgres]

Writes: POST /participants/{id}/payments, each for a fresh participant with its own
Idempotency-Key (so every request really pays), against the bare app's POST /save (one save).
Reads: GET /participants/{id} against the bare app's GET /read/{id} (one aggregate load).
The client is plain Python threads with keep-alive connections, so that every request can carry
its own participant, key and body, and every latency is recorded exactly; it shares the machine's
two cores with the server, equally for both sides. This machine's speed drifts by a third within
minutes, so each store is measured in rounds (bare, then the ledger, on fresh stores) and each
figure is the median over the rounds, each ratio the median of the rounds' own ratios. Ends with
one JSON line.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import queue
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

HERE = Path(__file__).resolve().parent
BIN = Path(sys.executable).parent
PG = "postgresql://postgres@127.0.0.1:5432/test"
# 8 threads a worker, on both sides: under writes alone both serve more with 8 than with 4 (the
# ledger's saves share commits; see the README), though `ledger serve` defaults to 4 for the mix.
WORKERS, THREADS = int(os.environ.get("BENCH_WORKERS", 2)), int(os.environ.get("BENCH_THREADS", 8))


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


def load(port: int, requests: list[tuple[str, str, bytes | None, dict[str, str]]],
         connections: int) -> dict[str, float]:
    """Send the requests over ``connections`` keep-alive connections; rate and latency."""
    work: queue.Queue = queue.Queue()
    for r in requests:
        work.put(r)
    latencies: list[float] = []
    statuses: list[int] = []
    lock = threading.Lock()

    def client() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        mine, codes = [], []
        while True:
            try:
                method, path, body, headers = work.get_nowait()
            except queue.Empty:
                break
            t = time.perf_counter()
            conn.request(method, path, body=body, headers=headers)
            resp = conn.getresponse()
            resp.read()
            mine.append(time.perf_counter() - t)
            codes.append(resp.status)
        conn.close()
        with lock:
            latencies.extend(mine)
            statuses.extend(codes)

    threads = [threading.Thread(target=client) for _ in range(connections)]
    start_time = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - start_time
    latencies.sort()
    ok = sum(1 for s in statuses if s < 400)
    return {"requests_per_s": round(len(latencies) / elapsed, 1),
            "p50_ms": round(latencies[len(latencies) // 2] * 1000, 2),
            "p99_ms": round(latencies[int(len(latencies) * 0.99) - 1] * 1000, 2),
            "errors": len(statuses) - ok}


def ledger_side(env: dict[str, str], n: int, connections: int, log: Path) -> dict[str, dict]:
    sys.path.insert(0, str(HERE.parent))
    from ledger.application import Ledger

    setup = Ledger(env)
    setup.init_study(by="bench")
    _, token = setup.tokens.create("staff", "bench")
    pids = [setup.register_participant("Bench Person", by="bench")["id"] for _ in range(n)]
    setup.close()
    port = free_port()
    proc = start([str(BIN / "ledger"), "serve", "--port", str(port), "--workers", str(WORKERS),
                  "--threads", str(THREADS)],
                 env, port, "/readyz", log)
    auth = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    try:
        writes = [("POST", f"/api/v1/participants/{pid}/payments",
                   json.dumps({"activity": "conversation", "amount": "25.00",
                               "method": "bank_transfer"}).encode(),
                   {**auth, "Idempotency-Key": str(uuid.uuid4())}) for pid in pids]
        reads = [("GET", f"/api/v1/participants/{pids[i % len(pids)]}", None, auth)
                 for i in range(n)]
        return {"write": load(port, writes, connections), "read": load(port, reads, connections)}
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def bare_side(env: dict[str, str], n: int, connections: int, log: Path) -> dict[str, dict]:
    port = free_port()
    cmd = [str(BIN / "gunicorn"), "--workers", str(WORKERS), "--threads", str(THREADS),
           "-k", "gthread", "--bind", f"127.0.0.1:{port}", "--chdir", str(HERE),
           "bare_app:create()"]
    proc = start(cmd, env, port, "/", log)
    headers = {"Content-Type": "application/json"}
    try:
        body = json.dumps({"activity": "conversation", "amount": "25.00"}).encode()
        writes = [("POST", "/save", body, headers)] * n
        # Reads need ids: save a few through the app first (reconnecting if a worker still
        # starting drops the connection).
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        ids: list[str] = []
        deadline = time.monotonic() + 60
        while len(ids) < 100:
            try:
                conn.request("POST", "/save", body=body, headers=headers)
                ids.append(json.loads(conn.getresponse().read())["id"])
            except (OSError, http.client.HTTPException):
                conn.close()
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        conn.close()
        write = load(port, writes, connections)
        reads = [("GET", f"/read/{ids[i % len(ids)]}", None, {}) for i in range(n)]
        return {"write": write, "read": load(port, reads, connections)}
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def drop_schema(schema: str) -> None:
    import psycopg

    with psycopg.connect(PG, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


@contextmanager
def stores(store: str, tmp: Path, prefix: str) -> Iterator[tuple[dict[str, str], dict[str, str]]]:
    """The bare app's and the ledger's storage settings for one run (fresh PostgreSQL schemas,
    dropped afterwards, or SQLite files in ``tmp``)."""
    if store == "sqlite":
        yield {"BARE_SQLITE": str(tmp / "bare.sqlite3")}, {"LEDGER_DATA_DIR": str(tmp / "ledger")}
        return
    import psycopg

    schemas = [f"{prefix}_bare_{uuid.uuid4().hex[:8]}", f"{prefix}_ledger_{uuid.uuid4().hex[:8]}"]
    with psycopg.connect(PG, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schemas[0]}"')
    try:
        yield ({"BARE_POSTGRES_SCHEMA": schemas[0]},
               {"LEDGER_DATA_DIR": str(tmp / "ledger"),
                "LEDGER_DATABASE_URL": f"{PG}?schema={schemas[1]}"})
    finally:
        for s in schemas:
            drop_schema(s)


def measure(store: str, n: int, connections: int) -> dict:
    with tempfile.TemporaryDirectory() as d, stores(store, Path(d), "bench") as (bare_env,
                                                                                  ledger_env):
        bare = bare_side(bare_env, n, connections, Path(d) / "bare.log")
        ledger = ledger_side(ledger_env, n, connections, Path(d) / "ledger.log")
    return {"bare": bare, "ledger": ledger,
            "write_ratio": round(ledger["write"]["requests_per_s"]
                                 / bare["write"]["requests_per_s"], 3),
            "read_ratio": round(ledger["read"]["requests_per_s"]
                                / bare["read"]["requests_per_s"], 3)}


def median_round(rounds: list[dict]) -> dict:
    """Each figure's median over the rounds (ratios as the median of each round's own ratio:
    both sides of a round ran within the same half minute)."""
    def med(values: list[float]) -> float:
        return statistics.median(values)
    out: dict = {}
    for side in ("bare", "ledger"):
        out[side] = {kind: {k: med([r[side][kind][k] for r in rounds])
                            for k in ("requests_per_s", "p50_ms", "p99_ms")}
                     for kind in ("write", "read")}
        for kind in ("write", "read"):
            out[side][kind]["errors"] = sum(r[side][kind]["errors"] for r in rounds)
    for kind in ("write", "read"):
        out[f"{kind}_ratio"] = med([r[f"{kind}_ratio"] for r in rounds])
        out[f"{kind}_ratios"] = [r[f"{kind}_ratio"] for r in rounds]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=3,
                        help="bare then ledger, this many times on fresh stores (medians)")
    parser.add_argument("--no-postgres", action="store_true")
    args = parser.parse_args()
    out: dict = {"bench": "api", "requests": args.requests, "connections": args.connections,
                 "workers": WORKERS, "threads": THREADS, "rounds": args.rounds}
    for store in ["sqlite"] + ([] if args.no_postgres else ["postgres"]):
        rounds = [measure(store, args.requests, args.connections) for _ in range(args.rounds)]
        r = out[store] = median_round(rounds)
        for kind in ("write", "read"):
            b, lg = r["bare"][kind], r["ledger"][kind]
            print(f"{store:9} {kind:5}  bare {b['requests_per_s']:7.1f} req/s p50 {b['p50_ms']:6.2f}"
                  f" p99 {b['p99_ms']:6.2f} | ledger {lg['requests_per_s']:7.1f} req/s p50 "
                  f"{lg['p50_ms']:6.2f} p99 {lg['p99_ms']:6.2f} errors {lg['errors']} | "
                  f"ratio {r[kind + '_ratio']:.2f} (rounds: "
                  f"{', '.join(f'{x:.2f}' for x in r[kind + '_ratios'])})")
    print(json.dumps(out))


if __name__ == "__main__":
    main()
