"""Load and soak: a realistic mix against `ledger serve` for a fixed time, on SQLite and PostgreSQL,
with 1, 2 and 4 worker processes, beside the bare Flask+eventsourcing app under the same mix.

    python bench/load.py [--seconds 60] [--connections 16] [--workers 1,2,4] [--no-postgres]
                         [--no-sqlite] [--no-scale-out]

The mix, per request: 80 % reads (GET /participants/{id}, and one in eight a page of
GET /participants), 15 % consent changes (a grant or a withdrawal, whichever the scope's current
state allows) and 5 % payments (each for a participant and activity not yet paid, with its own
Idempotency-Key). As in a real study, each person makes a handful of consent changes
(CHANGES_PER_PERSON) and is then settled; once a client's people are all settled, its next
consent change is a new registration, so the study grows while each record stays the size of a
real one. (Toggling the same few hundred people for ever would grow every record, and with it
every read, without bound: a test of something no study does.) Each client thread owns its own
participants, so it always knows what the ledger should answer: every status other than the
expected 2xx is counted as an error.

Against each configuration it reports throughput, p50/p99 per kind of request, errors, and the
resident memory of the whole server (gunicorn's master and workers, and on the scale-out run the
projection follower too), sampled every second: growth is the change from the first sample after
a warm-up (a fifth of the run) to the last, and the slope is a least-squares fit over those
samples. After each run the script checks what was acknowledged: every participant's consent
states (read through the API) equal the client's record, and the number of payments in the log
equals the number of 201 answers.

The bare side is bench/bare_app.py under the same workers, threads, connections and duration:
80 % GET /read/{id} (one aggregate load), 20 % POST /save (one save).

Scale-out (PostgreSQL): two `ledger serve` processes on different ports with
LEDGER_PROJECTIONS=external and one `ledger projections run`, the client threads spreading every
request across both ports. Ends with one JSON line.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import random
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from api import BIN, HERE, free_port, start, stores  # noqa: E402

THREADS = int(os.environ.get("BENCH_THREADS", 4))
SCOPES = ("record", "store", "quote", "publish")
ACTIVITIES = ("conversation", "workshop")
CHANGES_PER_PERSON = 6  # consent changes per person before they are settled (and someone new joins)
PAGE = os.sysconf("SC_PAGE_SIZE")


# -- memory of a process tree -------------------------------------------------------------------

def _tree(root: int) -> list[int]:
    parents: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            parents.setdefault(ppid, []).append(int(entry))
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(parents.get(pid, []))
    return found


def rss_mib(roots: list[int]) -> float:
    """Resident memory of the processes and all their descendants, in MiB."""
    total = 0
    for root in roots:
        for pid in _tree(root):
            try:
                with open(f"/proc/{pid}/statm") as f:
                    total += int(f.read().split()[1]) * PAGE
            except (OSError, IndexError, ValueError):
                pass
    return total / 2**20


class MemorySampler(threading.Thread):
    def __init__(self, roots: list[int]) -> None:
        super().__init__(daemon=True)
        self.roots, self.samples = roots, []  # (seconds since start, MiB)
        self.stop = threading.Event()
        self.t0 = time.perf_counter()

    def run(self) -> None:
        while not self.stop.is_set():
            self.samples.append((time.perf_counter() - self.t0, rss_mib(self.roots)))
            self.stop.wait(1.0)

    @staticmethod
    def _slope(kept: list[tuple[float, float]]) -> float:
        """Least-squares MiB per minute."""
        n = len(kept)
        mean_t = sum(t for t, _ in kept) / n
        mean_m = sum(m for _, m in kept) / n
        var = sum((t - mean_t) ** 2 for t, _ in kept) or 1.0
        return 60 * sum((t - mean_t) * (m - mean_m) for t, m in kept) / var

    def summary(self, warmup_s: float) -> dict[str, Any]:
        kept = [(t, m) for t, m in self.samples if t >= warmup_s] or self.samples[-2:]
        first, last = kept[0][1], kept[-1][1]
        end = self.samples[-1][0] if self.samples else 0.0
        sixths = [[m for t, m in self.samples if i * end / 6 <= t < (i + 1) * end / 6]
                  for i in range(6)]
        half = [(t, m) for t, m in self.samples if t >= end / 2] or self.samples[-2:]
        return {"rss_after_warmup_mib": round(first, 1), "rss_end_mib": round(last, 1),
                "rss_peak_mib": round(max(m for _, m in self.samples), 1),
                "rss_growth_mib": round(last - first, 1),
                "rss_growth_pct": round(100 * (last - first) / first, 1),
                "rss_slope_mib_per_min": round(self._slope(kept), 2),
                # the second half alone: once the bounded caches have filled, it should be ~0
                "rss_slope_second_half_mib_per_min": round(self._slope(half), 2),
                "rss_mean_by_sixth_mib": [round(sum(x) / len(x), 1) if x else None
                                          for x in sixths]}


# -- the client ---------------------------------------------------------------------------------

@dataclass
class Owned:
    """What one client thread knows about its participants (it alone writes to them)."""

    consents: dict[str, dict[str, str]] = field(default_factory=dict)  # pid -> scope -> state
    unpaid: list[tuple[str, str]] = field(default_factory=list)  # (pid, activity)
    active: list[str] = field(default_factory=list)  # people still changing their consents
    changes: dict[str, int] = field(default_factory=dict)
    paid: int = 0

    def add(self, pid: str) -> None:
        self.consents[pid] = {scope: "none" for scope in SCOPES}
        self.unpaid.extend((pid, activity) for activity in ACTIVITIES)
        self.active.append(pid)
        self.changes[pid] = 0


@dataclass
class Tally:
    latencies: dict[str, list[float]] = field(default_factory=dict)
    errors: dict[str, int] = field(default_factory=dict)
    error_samples: list[str] = field(default_factory=list)
    finished: list[float] = field(default_factory=list)  # perf_counter at each answer

    def add(self, kind: str, seconds: float, ok: bool, detail: str = "") -> None:
        self.latencies.setdefault(kind, []).append(seconds)
        self.finished.append(time.perf_counter())
        if not ok:
            self.errors[kind] = self.errors.get(kind, 0) + 1
            if len(self.error_samples) < 5:
                self.error_samples.append(f"{kind}: {detail}")

    def merge(self, other: Tally) -> None:
        for k, v in other.latencies.items():
            self.latencies.setdefault(k, []).extend(v)
        for k, v in other.errors.items():
            self.errors[k] = self.errors.get(k, 0) + v
        self.error_samples.extend(other.error_samples[: 5 - len(self.error_samples)])
        self.finished.extend(other.finished)


def _pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return round(values[min(len(values) - 1, int(len(values) * q))] * 1000, 2)


def figures(tally: Tally, elapsed: float, started: float) -> dict:
    every = [x for v in tally.latencies.values() for x in v]
    window = max(elapsed / 6, 1.0)  # throughput in six slices of the run: is it steady?
    slices = [0] * 6
    for t in tally.finished:
        slices[min(5, int((t - started) / window))] += 1
    out = {"requests": len(every), "requests_per_s": round(len(every) / elapsed, 1),
           "p50_ms": _pct(every, 0.50), "p99_ms": _pct(every, 0.99),
           "requests_per_s_by_sixth": [round(n / window, 1) for n in slices],
           "errors": sum(tally.errors.values()), "error_samples": tally.error_samples,
           "by_kind": {k: {"count": len(v), "p50_ms": _pct(v, 0.5), "p99_ms": _pct(v, 0.99),
                           "errors": tally.errors.get(k, 0)}
                       for k, v in sorted(tally.latencies.items())}}
    return out


class Connection:
    """Keep-alive HTTP to one or several ports (spread round-robin, per request)."""

    def __init__(self, ports: list[int]) -> None:
        self.conns = [http.client.HTTPConnection("127.0.0.1", p, timeout=60) for p in ports]
        self.turn = 0

    def call(self, method: str, path: str, body: bytes | None, headers: dict[str, str]
             ) -> tuple[int, bytes]:
        conn = self.conns[self.turn % len(self.conns)]
        self.turn += 1
        try:
            conn.request(method, path, body=body, headers=headers)
            resp = conn.getresponse()
            return resp.status, resp.read()
        except (OSError, http.client.HTTPException) as error:
            conn.close()
            return 0, type(error).__name__.encode()

    def close(self) -> None:
        for c in self.conns:
            c.close()


def ledger_client(ports: list[int], token: str, owned: Owned, seed: int, until: float,
                  tally: Tally) -> None:
    rnd = random.Random(seed)
    conn = Connection(ports)
    auth = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    pids = list(owned.consents)
    while time.perf_counter() < until:
        r = rnd.random()
        pid = rnd.choice(pids)
        scope = ""
        if r < 0.70:
            kind, method, path, body, want = "read", "GET", f"/api/v1/participants/{pid}", None, 200
        elif r < 0.80:
            kind, method, path, body, want = ("list", "GET", "/api/v1/participants?limit=50",
                                              None, 200)
        elif (r < 0.95 or not owned.unpaid) and not owned.active:
            # Everyone here has made their consent choices: a new person joins the study.
            kind, method, path, want = "register", "POST", "/api/v1/participants", 201
            body = json.dumps({"name": "Load Person"}).encode()
        elif r < 0.95 or not owned.unpaid:
            pid = rnd.choice(owned.active)
            scope = rnd.choice(SCOPES)
            state = owned.consents[pid][scope]
            if state == "given":
                kind, method = "withdraw", "POST"
                path = f"/api/v1/participants/{pid}/consents/{scope}/withdrawal"
                body = json.dumps({"channel": "email"}).encode()
            else:
                kind, method, path = "grant", "POST", f"/api/v1/participants/{pid}/consents"
                body = json.dumps({"scope": scope, "form_version": "1.0", "method": "online",
                                   "attribution": "anonymous" if scope == "quote" else None
                                   }).encode()
            want = 201
        else:
            pid, activity = owned.unpaid.pop()
            kind, method, path, want = "pay", "POST", f"/api/v1/participants/{pid}/payments", 201
            body = json.dumps({"activity": activity, "amount": "25.00",
                               "method": "bank_transfer"}).encode()
        headers = auth if kind != "pay" else {**auth, "Idempotency-Key": str(uuid.uuid4())}
        t = time.perf_counter()
        status, answer = conn.call(method, path, body, headers)
        ok = status == want
        tally.add(kind, time.perf_counter() - t, ok, f"{status} {answer[:120]!r}")
        if ok and kind in ("withdraw", "grant"):
            owned.consents[pid][scope] = "withdrawn" if kind == "withdraw" else "given"
            owned.changes[pid] += 1
            if owned.changes[pid] >= CHANGES_PER_PERSON:
                owned.active.remove(pid)
        elif ok and kind == "register":
            pid = json.loads(answer)["id"]
            owned.add(pid)
            pids.append(pid)
        elif ok and kind == "pay":
            owned.paid += 1
    conn.close()


def bare_client(port: int, ids: list[str], seed: int, until: float, tally: Tally) -> None:
    rnd = random.Random(seed)
    conn = Connection([port])
    headers = {"Content-Type": "application/json"}
    body = json.dumps({"activity": "conversation", "amount": "25.00"}).encode()
    while time.perf_counter() < until:
        if rnd.random() < 0.80:
            kind, status_want = "read", 200
            t = time.perf_counter()
            status, answer = conn.call("GET", f"/read/{rnd.choice(ids)}", None, {})
        else:
            kind, status_want = "write", 201
            t = time.perf_counter()
            status, answer = conn.call("POST", "/save", body, headers)
        tally.add(kind, time.perf_counter() - t, status == status_want, f"{status}")
    conn.close()


def drive(target, connections: int, seconds: float, roots: list[int]
          ) -> tuple[Tally, dict, float, float]:
    """Run ``target(i, until, tally)`` in ``connections`` threads for ``seconds``."""
    sampler = MemorySampler(roots)
    sampler.start()
    until = time.perf_counter() + seconds
    tallies = [Tally() for _ in range(connections)]
    threads = [threading.Thread(target=target, args=(i, until, tallies[i]))
               for i in range(connections)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - t0
    sampler.stop.set()
    sampler.join()
    total = Tally()
    for t in tallies:
        total.merge(t)
    return total, sampler.summary(seconds / 5), elapsed, t0


# -- one configuration --------------------------------------------------------------------------

def seed_study(env: dict[str, str], participants: int, connections: int
               ) -> tuple[str, list[Owned]]:
    from ledger.application import Ledger

    setup = Ledger(env)
    setup.init_study(by="bench")
    _, token = setup.tokens.create("staff", "load")
    owned = [Owned() for _ in range(connections)]
    for i in range(participants):
        pid = str(setup.register_participant(f"Load Person {i}", by="bench")["id"])
        setup.grant_consent(uuid.UUID(pid), "take_part", "1.0", "online", by="bench")
        owned[i % connections].add(pid)
    for mine in owned:
        random.Random(7).shuffle(mine.unpaid)
    setup.close()
    return token, owned


def check_acknowledged(env: dict[str, str], port: int, token: str, owned: list[Owned]
                       ) -> dict[str, int]:
    """After the run: the views answer every acknowledged consent state, the log every payment."""
    from ledger.application import Ledger
    from ledger.domain.base import topic

    conn = Connection([port])
    auth = {"Authorization": f"Bearer {token}"}
    mismatched = 0
    deadline = time.monotonic() + 60
    for mine in owned:
        for pid, expected in mine.consents.items():
            while True:
                status, body = conn.call("GET", f"/api/v1/participants/{pid}", None, auth)
                states = {s: c["state"] for s, c in json.loads(body)["consents"].items()
                          if s in SCOPES} if status == 200 else {}
                want = {s: v for s, v in expected.items() if v != "none"}
                if states == want or time.monotonic() > deadline:  # external views may lag
                    break
                time.sleep(0.2)
            mismatched += states != want
    conn.close()
    check = Ledger({**env, "LEDGER_PROJECTIONS": "external"})
    payments = sum(1 for _ in check.recorder.select_notifications(
        start=1, limit=10**7, topics=[topic("Payment.Recorded")]))
    check.close()
    acknowledged = sum(m.paid for m in owned)
    return {"consent_states_checked": sum(len(m.consents) for m in owned),
            "consent_states_mismatched": mismatched, "payments_acknowledged": acknowledged,
            "payments_in_log": payments, "payments_lost": acknowledged - min(acknowledged, payments)}


def follower(env: dict[str, str], log: Path) -> subprocess.Popen:
    """`ledger projections run`, the one process that keeps the views up to date."""
    full = {k: v for k, v in os.environ.items() if not k.startswith(("LEDGER_", "BARE_"))}
    full.update(env)
    with log.open("wb") as out:
        return subprocess.Popen([str(BIN / "ledger"), "projections", "run"], env=full,
                                stdout=out, stderr=subprocess.STDOUT, cwd=HERE)


def run_ledger(env: dict[str, str], workers: int, processes: int, seconds: float,
               connections: int, participants: int, tmp: Path, external: bool = False) -> dict:
    token, owned = seed_study(env, participants, connections)
    procs: list[subprocess.Popen] = []
    ports: list[int] = []
    try:
        if processes > 1 or external:
            env = {**env, "LEDGER_PROJECTIONS": "external"}
            procs.append(follower(env, tmp / "follower.log"))
        for i in range(processes):
            port = free_port()
            procs.append(start([str(BIN / "ledger"), "serve", "--port", str(port),
                                "--workers", str(workers), "--threads", str(THREADS)],
                               env, port, "/readyz", tmp / f"serve-{i}.log"))
            ports.append(port)
        tally, memory, elapsed, started = drive(
            lambda i, until, t: ledger_client(ports[i % len(ports):] + ports[:i % len(ports)],
                                              token, owned[i], 1000 + i, until, t),
            connections, seconds, [p.pid for p in procs])
        result = {**figures(tally, elapsed, started), "memory": memory}
        result["acknowledged"] = check_acknowledged(env, ports[-1], token, owned)
        return result
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait(timeout=60)


def run_bare(env: dict[str, str], workers: int, seconds: float, connections: int,
             tmp: Path) -> dict:
    port = free_port()
    proc = start([str(BIN / "gunicorn"), "--workers", str(workers), "--threads", str(THREADS),
                  "-k", "gthread", "--bind", f"127.0.0.1:{port}", "--chdir", str(HERE),
                  "bare_app:create()"], env, port, "/", tmp / "bare.log")
    try:
        conn = Connection([port])
        body = json.dumps({"activity": "conversation", "amount": "25.00"}).encode()
        ids: list[str] = []
        dropped = 0
        while len(ids) < 200:
            status, answer = conn.call("POST", "/save", body, {"Content-Type": "application/json"})
            if status == 0 and dropped < 20:  # a worker still starting dropped the connection
                dropped += 1
                time.sleep(0.5)
                continue
            if status != 201:
                raise RuntimeError(f"the bare app answered {status}: {answer[:300]!r}")
            ids.append(json.loads(answer)["id"])
        conn.close()
        tally, memory, elapsed, started = drive(
            lambda i, until, t: bare_client(port, ids, 2000 + i, until, t),
            connections, seconds, [proc.pid])
        return {**figures(tally, elapsed, started), "memory": memory}
    finally:
        proc.terminate()
        proc.wait(timeout=60)


def configuration(store: str, workers: int, processes: int, args: argparse.Namespace) -> dict:
    with tempfile.TemporaryDirectory() as d, stores(store, Path(d), "load") as (bare_env,
                                                                                 ledger_env):
        bare = run_bare(bare_env, workers * processes, args.bare_seconds or args.seconds,
                        args.connections, Path(d))
        ledger = run_ledger(ledger_env, workers, processes, args.seconds, args.connections,
                            args.participants, Path(d), args.projections == "external")
    return {"store": store, "workers": workers, "serve_processes": processes,
            "projections": "external" if processes > 1 else args.projections,
            "bare": bare, "ledger": ledger,
            "throughput_ratio": round(ledger["requests_per_s"] / bare["requests_per_s"], 3)}


def line(c: dict) -> str:
    lg, b = c["ledger"], c["bare"]
    ack = lg["acknowledged"]
    return (f"{c['store']:8} {c['serve_processes']}x{c['workers']} workers | ledger "
            f"{lg['requests_per_s']:6.1f} req/s p50 {lg['p50_ms']:6.2f} p99 {lg['p99_ms']:7.2f} "
            f"errors {lg['errors']} rss {lg['memory']['rss_after_warmup_mib']:.0f}->"
            f"{lg['memory']['rss_end_mib']:.0f} MiB ({lg['memory']['rss_slope_mib_per_min']:+.2f}"
            f"/min, second half {lg['memory']['rss_slope_second_half_mib_per_min']:+.2f}/min) "
            f"| bare {b['requests_per_s']:6.1f} req/s p99 {b['p99_ms']:6.2f} | ratio "
            f"{c['throughput_ratio']:.2f} | paid {ack['payments_acknowledged']} in log "
            f"{ack['payments_in_log']} consents mismatched {ack['consent_states_mismatched']}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--bare-seconds", type=float, default=None,
                        help="the bare app's run, if shorter (a long soak of the ledger)")
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--workers", default="1,2,4")
    parser.add_argument("--participants", type=int, default=400)
    parser.add_argument("--no-postgres", action="store_true")
    parser.add_argument("--no-sqlite", action="store_true", help="PostgreSQL runs only")
    parser.add_argument("--no-scale-out", action="store_true")
    parser.add_argument("--projections", choices=("inline", "external"), default="inline",
                        help="how the single-server runs keep their views (LEDGER_PROJECTIONS)")
    args = parser.parse_args()
    worker_counts = [int(w) for w in args.workers.split(",")]
    stores_run = ([] if args.no_sqlite else ["sqlite"]) + ([] if args.no_postgres else ["postgres"])
    plan = [(store, w, 1) for store in stores_run for w in worker_counts]
    if not args.no_postgres and not args.no_scale_out:
        plan.append(("postgres", 2, 2))
    results = []
    for store, workers, processes in plan:
        c = configuration(store, workers, processes, args)
        print(line(c), flush=True)
        results.append(c)
    print(json.dumps({"bench": "load", "seconds": args.seconds, "connections": args.connections,
                      "threads": THREADS, "mix": {"read": 0.8, "consent": 0.15, "payment": 0.05},
                      "runs": results,
                      "errors": sum(c["ledger"]["errors"] for c in results),
                      "payments_lost": sum(c["ledger"]["acknowledged"]["payments_lost"]
                                           for c in results),
                      "consent_states_mismatched": sum(
                          c["ledger"]["acknowledged"]["consent_states_mismatched"]
                          for c in results)}))


if __name__ == "__main__":
    main()
