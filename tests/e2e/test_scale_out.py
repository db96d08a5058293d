"""Scale-out on PostgreSQL: two `ledger serve` processes on different ports (as on two hosts) with
LEDGER_PROJECTIONS=external, and one `ledger projections run`, share one database correctly.

The guarantees that hold inside one server hold across them: one payment per participant and
activity whatever the key and whichever process answers, one write per Idempotency-Key with the
same answer byte for byte from either process, a changed body under a used key refused, a write
on one process readable on the other with read-your-writes, and the follower killed with SIGKILL
mid-stream resumes exactly where the views stand (issue 7, point 3).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ledger.application import Ledger
from ledger.audit.checkpoints import verify
from ledger.domain import Payment
from ledger.domain.base import topic
from tests.concurrency import race

from .conftest import LEDGER, Server, clean_environ, start_server
from .test_crash import _views

pytestmark = pytest.mark.postgres
PG_URL = os.environ.get("LEDGER_TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test")
PAYMENT = {"activity": "conversation", "amount": "25.00", "method": "bank_transfer"}


class Cluster:
    """Two servers, one follower, one database and one data directory (keys shared)."""

    def __init__(self, env: dict[str, str], tmp: Path) -> None:
        self.env, self.tmp = env, tmp
        self.procs: list[subprocess.Popen] = []
        self.follower: subprocess.Popen | None = None
        self.servers: list[Server] = []

    def start_follower(self) -> None:
        full = clean_environ()
        with (self.tmp / "follower.log").open("ab") as out:
            self.follower = subprocess.Popen([LEDGER, "projections", "run"],
                                             env={**full, **self.env}, stdout=out,
                                             stderr=subprocess.STDOUT, cwd=self.tmp)

    def start(self) -> None:
        self.start_follower()
        for i in range(2):
            proc, server = start_server(self.env, self.tmp / f"serve-{i}.log", workers=2)
            self.procs.append(proc)
            self.servers.append(server)

    def stop(self) -> None:
        for proc in [*self.procs, *([self.follower] if self.follower else [])]:
            proc.terminate()
        for proc in [*self.procs, *([self.follower] if self.follower else [])]:
            proc.wait(timeout=60)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory, pg_available) -> Iterator[tuple[Cluster, dict[str, str]]]:
    from tests.conftest import drop_schema

    schema = f"t_{uuid.uuid4().hex[:12]}"
    tmp = tmp_path_factory.mktemp("scale_out")
    env = {"LEDGER_DATA_DIR": str(tmp / "data"),
           "LEDGER_DATABASE_URL": f"{PG_URL.split('?')[0]}?schema={schema}",
           "LEDGER_PROJECTIONS": "external"}
    setup = Ledger(env)
    setup.init_study(by="test")
    _, token = setup.tokens.create("staff", "scale-out")
    setup.close()
    c = Cluster(env, tmp)
    try:
        c.start()
        yield c, {"Authorization": f"Bearer {token}"}
    finally:
        c.stop()
        drop_schema(schema)


def _register(server: Server, auth: dict[str, str], name: str) -> uuid.UUID:
    status, _, body = server.request("POST", "/api/v1/participants", {"name": name}, auth)
    assert status == 201, body
    return uuid.UUID(json.loads(body)["id"])


def _payments(env: dict[str, str]) -> list[Any]:
    lg = Ledger(env)
    try:
        return list(lg.recorder.select_notifications(start=1, limit=100_000,
                                                     topics=[topic("Payment.Recorded")]))
    finally:
        lg.close()


def test_the_two_servers_are_separate_processes_on_one_database(cluster):
    c, auth = cluster
    a, b = c.servers
    assert a.url != b.url and c.procs[0].pid != c.procs[1].pid
    pid = _register(a, auth, "Seen Everywhere")
    status, _, _ = b.request("GET", f"/api/v1/participants/{pid}", headers=auth)
    assert status == 200  # written through one process, read through the other


def test_fifty_concurrent_payments_spread_over_two_servers_pay_once(cluster):
    c, auth = cluster
    pid = _register(c.servers[0], auth, "Raced Across Hosts")
    calls = [lambda i=i: c.servers[i % 2].request(
        "POST", f"/api/v1/participants/{pid}/payments", {**PAYMENT, "reference": f"SO-{i}"},
        {**auth, "Idempotency-Key": f"so-race-{i}"}) for i in range(50)]

    statuses = [r[0] for r in race(calls)]

    assert statuses.count(201) == 1 and statuses.count(409) == 49, sorted(statuses)
    ours = [n for n in _payments(c.env)
            if n.originator_id == Payment.create_id(pid, "conversation", 0)]
    assert len(ours) == 1


def test_one_key_sent_to_both_servers_at_once_writes_once_and_answers_alike(cluster):
    c, auth = cluster
    pid = _register(c.servers[1], auth, "Retried Across Hosts")
    before = len(_payments(c.env))
    calls = [lambda i=i: c.servers[i % 2].request(
        "POST", f"/api/v1/participants/{pid}/payments", PAYMENT,
        {**auth, "Idempotency-Key": "so-one-key"}) for i in range(20)]

    results = race(calls)

    assert {r[0] for r in results} == {201}, sorted(r[0] for r in results)
    assert len({r[2] for r in results}) == 1  # byte for byte, whichever process answered
    assert len(_payments(c.env)) == before + 1
    # The same key with another body is refused by either process, and writes nothing.
    for server in c.servers:
        status, headers, body = server.request(
            "POST", f"/api/v1/participants/{pid}/payments", {**PAYMENT, "amount": "20.00"},
            {**auth, "Idempotency-Key": "so-one-key"})
        assert status == 422 and headers["Content-Type"] == "application/problem+json", body
    assert len(_payments(c.env)) == before + 1


def test_a_write_on_one_server_is_read_on_the_other_with_read_your_writes(cluster):
    c, auth = cluster
    a, b = c.servers
    pid = _register(a, auth, "Read Your Writes")
    status, headers, _ = a.request("POST", f"/api/v1/participants/{pid}/consents",
                                   {"scope": "take_part", "form_version": "1.0",
                                    "method": "online"}, auth)
    assert status == 201
    position = int(headers["Ledger-Position"])

    # Server b waits up to VIEW_WAIT_S for the follower to pass ``position``, then answers 503
    # ViewsBehind with Retry-After, as a client is told to retry; on a loaded two-core machine
    # the follower may need longer than that, so retry as a client would, for up to 60 s.
    deadline = time.monotonic() + 60
    while True:
        status, headers, body = b.request(
            "GET", f"/api/v1/participants?limit=200&min_position={position}", headers=auth)
        if status != 503 or time.monotonic() > deadline:
            break
        assert "Retry-After" in headers, headers
        time.sleep(0.2)

    assert status == 200, body
    seen = {item["id"]: item for item in json.loads(body)["items"]}
    assert seen[str(pid)]["consents"]["take_part"]["state"] == "given"


def test_the_follower_killed_mid_stream_resumes_and_the_views_equal_a_rebuild(cluster):
    c, auth = cluster
    pids = [_register(c.servers[i % 2], auth, f"Kept {i}") for i in range(8)]
    stop = threading.Event()
    states: dict[tuple[uuid.UUID, str], str] = {}  # what the servers acknowledged, last first
    failures: list[int] = []
    writes = [0, 0]

    def writer(k: int) -> None:  # each writer its own people, each request to either server
        mine = [(pid, scope) for pid in pids[k::2] for scope in ("take_part", "record", "store")]
        n = 0
        while not stop.is_set():
            pid, scope = mine[n % len(mine)]
            server = c.servers[n % 2]
            if states.get((pid, scope)) == "given":
                status, _, _ = server.request(
                    "POST", f"/api/v1/participants/{pid}/consents/{scope}/withdrawal",
                    {"channel": "email"}, auth)
                new = "withdrawn"
            else:
                status, _, _ = server.request(
                    "POST", f"/api/v1/participants/{pid}/consents",
                    {"scope": scope, "form_version": "1.0", "method": "online"}, auth)
                new = "given"
            if status == 201:
                states[(pid, scope)] = new
                writes[k] += 1
            else:
                failures.append(status)
            n += 1

    threads = [threading.Thread(target=writer, args=(k,)) for k in range(2)]
    for t in threads:
        t.start()
    time.sleep(0.5)
    assert c.follower is not None
    c.follower.send_signal(signal.SIGKILL)  # the one process that writes the views
    c.follower.wait(timeout=30)
    written_while_down = sum(writes)
    deadline = time.monotonic() + 30
    while sum(writes) <= written_while_down + 4 and time.monotonic() < deadline and not failures:
        time.sleep(0.05)
    assert sum(writes) > written_while_down + 4  # the servers kept taking writes meanwhile
    c.start_follower()
    time.sleep(0.5)
    stop.set()
    for t in threads:
        t.join(timeout=120)

    assert failures == [] and all(writes)
    lg = Ledger(c.env)
    try:
        last = lg.recorder.max_notification_id()
        deadline = time.monotonic() + 60
        while lg.projector.views.position() < (last or 0) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert lg.projector.views.position() == last  # caught up after the kill
        listed = {str(item["id"]): item
                  for item in lg.participants_page(limit=200, after=None)["items"]}
        for (pid, scope), state in states.items():  # every acknowledged change is in the views
            assert listed[str(pid)]["consents"][scope]["state"] == state, (pid, scope)
        live = _views(lg)
        lg.projector.rebuild()
        assert _views(lg) == live
        verdict = verify(lg.merkle)
        assert verdict.ok, verdict.problems[:5]
    finally:
        lg.close()
