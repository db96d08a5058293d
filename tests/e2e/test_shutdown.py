"""SIGTERM: `ledger serve` finishes the requests in flight, then exits cleanly; every write it
acknowledged is in the store."""

from __future__ import annotations

import http.client
import signal
import threading
import time
import uuid
from pathlib import Path
from urllib.parse import urlsplit

from ledger.application import Ledger

from .conftest import start_server


def accept_queue(port: int) -> int:
    """Connections waiting in the kernel for a worker to accept them on the listening socket
    at ``port`` (for a socket in LISTEN, /proc/net/tcp's rx_queue is that backlog's length)."""
    waiting = 0
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local, state, queues = fields[1], fields[3], fields[4]
        if state == "0A" and int(local.rsplit(":", 1)[1], 16) == port:
            waiting += int(queues.split(":")[1], 16)
    return waiting


def test_sigterm_finishes_in_flight_requests_and_loses_no_acknowledged_write(store_env,
                                                                             tmp_path):
    setup = Ledger(store_env)
    setup.init_study(by="test")
    from ledger.demo import load_demo

    load_demo(setup)  # a report worth rendering: the in-flight request takes a while
    staff = {"Authorization": f"Bearer {setup.tokens.create('staff', 's')[1]}"}
    auditor = {"Authorization": f"Bearer {setup.tokens.create('auditor', 'a')[1]}"}
    pids = [setup.register_participant(f"Shutdown Person {n}", by="t")["id"] for n in range(400)]
    setup.close()
    proc, server = start_server(store_env, tmp_path / "server.log", workers=2)
    answers: list[tuple[int, object]] = []  # (status, participant) of every answered payment
    refused: list[object] = []  # connection refused or reset: never acknowledged
    slow: list[int] = []

    def pay(chunk: list[object]) -> None:
        for pid in chunk:
            try:
                status, _, _ = server.request(
                    "POST", f"/api/v1/participants/{pid}/payments",
                    {"activity": "conversation", "amount": "25.00", "method": "cash"},
                    {**staff, "Idempotency-Key": str(uuid.uuid4())})
                answers.append((status, pid))
            except OSError:
                refused.append(pid)

    address = urlsplit(server.url)
    sent = threading.Event()
    report_error: list[str] = []

    def report() -> None:
        conn = http.client.HTTPConnection(address.hostname, address.port, timeout=60)
        try:
            conn.request("GET", "/api/v1/reports/compliance?format=pdf", headers=auditor)
            sent.set()
            response = conn.getresponse()
            body = response.read()
            slow.append(response.status if body.startswith(b"%PDF") else -response.status)
        except OSError as e:  # the assertion on ``slow`` says what happened
            slow.append(-1)
            report_error.append(type(e).__name__)
        finally:
            sent.set()
            conn.close()

    writers = [threading.Thread(target=pay, args=(pids[i::4],)) for i in range(4)]
    for t in writers:
        t.start()
    deadline = time.monotonic() + 120
    while len(answers) < 40 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert len(answers) >= 40, f"only {len(answers)} payments answered in 120 s"
    in_flight = threading.Thread(target=report)
    in_flight.start()
    # SIGTERM only once the report is in a worker's hands: a connection still waiting in the
    # kernel's accept queue when the workers close the listening socket is reset, and was never
    # in flight. (A fixed 50 ms sleep here could miss that on a loaded machine.)
    assert sent.wait(timeout=60)
    deadline = time.monotonic() + 30
    while accept_queue(address.port) and time.monotonic() < deadline:
        time.sleep(0.005)
    proc.send_signal(signal.SIGTERM)
    code = proc.wait(timeout=60)
    for t in [*writers, in_flight]:
        t.join(timeout=60)

    assert code == 0
    assert slow == [200], report_error  # the report in flight when SIGTERM came was finished
    assert {status for status, _ in answers} <= {201}  # no 5xx, no half answers
    assert len(answers) >= 40 and refused  # it stopped taking new requests
    check = Ledger(store_env)
    try:  # read from the event store itself, the record of truth
        unpaid = [pid for _, pid in answers if not check._participant(pid).payment_ids()]
    finally:
        check.close()
    assert unpaid == []  # every acknowledged payment is stored


def test_a_worker_stopping_signs_what_it_saved(store_env, tmp_path):
    """A worker's follower signs a checkpoint at most every 2 s; a server stopped sooner after
    a write used to leave that write unsigned. Each worker now finishes on its way out."""
    setup = Ledger(store_env)
    setup.init_study(by="test")
    staff = {"Authorization": f"Bearer {setup.tokens.create('staff', 's')[1]}"}
    setup.close()
    proc, server = start_server(store_env, tmp_path / "server.log", workers=1)
    try:
        fresh = Ledger({**store_env, "LEDGER_PROJECTIONS": "external"})
        fresh.merkle.checkpoint()  # signed just now: the worker's next one is 2 s away
        fresh.close()
        status, _, _ = server.request("POST", "/api/v1/participants",
                                      {"name": "Stopping Person"}, staff)
        assert status == 201
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=60)

    check = Ledger({**store_env, "LEDGER_PROJECTIONS": "external"})
    size, latest = check.recorder.max_notification_id(), check.merkle.latest()
    check.close()
    assert code == 0
    assert latest is not None and latest["size"] == size
