"""SIGTERM: `ledger serve` finishes the requests in flight, then exits cleanly; every write it
acknowledged is in the store."""

from __future__ import annotations

import signal
import threading
import time
import uuid

from ledger.application import Ledger

from .conftest import start_server


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

    def report() -> None:
        status, _, body = server.request("GET", "/api/v1/reports/compliance?format=pdf",
                                         headers=auditor)
        slow.append(status if body.startswith(b"%PDF") else -status)

    writers = [threading.Thread(target=pay, args=(pids[i::4],)) for i in range(4)]
    for t in writers:
        t.start()
    while len(answers) < 40:
        time.sleep(0.01)
    in_flight = threading.Thread(target=report)
    in_flight.start()
    time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    code = proc.wait(timeout=60)
    for t in [*writers, in_flight]:
        t.join(timeout=60)

    assert code == 0
    assert slow == [200]  # the report in flight when SIGTERM came was finished
    assert {status for status, _ in answers} <= {201}  # no 5xx, no half answers
    assert len(answers) >= 40 and refused  # it stopped taking new requests
    check = Ledger(store_env)
    try:  # read from the event store itself, the record of truth
        unpaid = [pid for _, pid in answers if not check._participant(pid).payment_ids()]
    finally:
        check.close()
    assert unpaid == []  # every acknowledged payment is stored
