"""Fifty concurrent payment requests against four worker processes: exactly one is paid."""

from __future__ import annotations

import json
import threading
import uuid

from ledger.application import Ledger
from ledger.domain import Payment
from ledger.domain.base import topic
from tests.concurrency import race

NAME = "Quentin Racecondition-Example"


def test_fifty_concurrent_payments_across_four_workers_pay_once(server, store_env):
    setup = Ledger(store_env)
    info, token = setup.tokens.create("staff", "e2e")
    token_id = info.id
    setup.close()
    auth = {"Authorization": f"Bearer {token}"}
    status, _, body = server.request("POST", "/api/v1/participants", {"name": NAME}, auth)
    assert status == 201
    pid = uuid.UUID(json.loads(body)["id"])
    barrier = threading.Barrier(50)
    statuses: list[int] = []
    refusals: list[bytes] = []
    lock = threading.Lock()

    def pay(i: int) -> None:
        barrier.wait()
        code, _, answer = server.request(
            "POST", f"/api/v1/participants/{pid}/payments",
            {"activity": "conversation", "amount": "25.00", "method": "bank_transfer",
             "reference": f"E2E-{i}"},
            {**auth, "Idempotency-Key": f"race-{i}"})
        with lock:
            statuses.append(code)
            if code != 201:
                refusals.append(answer)

    threads = [threading.Thread(target=pay, args=(i,)) for i in range(50)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)

    assert len(statuses) == 50
    assert statuses.count(201) == 1 and statuses.count(409) == 49, sorted(set(statuses))
    assert len(refusals) == 49 and all(b"PaymentAlreadyRecorded" in r for r in refusals)
    assert not [r for r in refusals if b"E2E-" in r or NAME.encode() in r]  # nothing echoed
    check = Ledger(store_env)
    recorded = [n for n in check.recorder.select_notifications(
        start=1, limit=10_000, topics=[topic("Payment.Recorded")])]
    check.close()
    assert [n.originator_id for n in recorded] == [Payment.create_id(pid, "conversation", 0)]
    log = server.log.read_text()
    access = [json.loads(line.split("ledger.access ", 1)[1]) for line in log.splitlines()
              if "ledger.access " in line]
    payments = [a for a in access
                if a["route"] == "/api/v1/participants/<uuid:participant_id>/payments"]
    assert sorted(a["status"] for a in payments) == [201] + [409] * 49
    assert {a["token"] for a in payments} == {token_id}
    assert NAME not in log and token not in log and "E2E-" not in log


def test_twenty_concurrent_requests_with_one_key_across_workers_pay_once_and_agree(server,
                                                                                  store_env):
    setup = Ledger(store_env)
    _, token = setup.tokens.create("staff", "e2e same key")
    setup.close()
    auth = {"Authorization": f"Bearer {token}"}
    _, _, body = server.request("POST", "/api/v1/participants", {"name": "Same Key"}, auth)
    pid = uuid.UUID(json.loads(body)["id"])
    payment = {"activity": "conversation", "amount": "25.00", "method": "cash"}

    results = race([
        lambda: server.request("POST", f"/api/v1/participants/{pid}/payments", payment,
                               {**auth, "Idempotency-Key": "one-key"})
        for _ in range(20)])

    assert {r[0] for r in results} == {201}, sorted(r[0] for r in results)
    assert len({r[2] for r in results}) == 1  # byte for byte
    check = Ledger(store_env)
    recorded = check.recorder.select_notifications(start=1, limit=10_000,
                                                   topics=[topic("Payment.Recorded")])
    check.close()
    assert [n.originator_id for n in recorded] == [Payment.create_id(pid, "conversation", 0)]


def test_the_server_log_keeps_no_link_token_or_client_address(server):
    import socket
    import time

    token = "Q" * 43
    host, port = server.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port))) as s:  # a malformed request line
        s.sendall(f"GET /my/{token} HTTP/1.1 junk\r\nHost: x\r\n\r\n".encode())
        s.recv(1000)
    server.request("GET", f"/my/{token}")
    time.sleep(0.5)

    log = server.log.read_text()
    assert "refused a malformed request (InvalidHTTPVersion): 400" in log  # what, not who
    assert token not in log
