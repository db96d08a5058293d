"""The idempotency row is written in the same transaction as the payment, on both stores."""

from __future__ import annotations

import pytest

from ledger.domain.errors import IdempotencyKeyUsed, PaymentAlreadyRecorded
from ledger.idempotency import IdempotentRequest


def _request(key: str) -> IdempotentRequest:
    return IdempotentRequest(token_id="tok", key=key, request_hash="h", status=201,
                             render=lambda result: f"paid {result['amount']}".encode())


def test_a_payment_and_its_key_are_written_together(ledger):
    pid = ledger.register_participant("Idem Store", by="t")["id"]
    once = _request("k1")

    ledger.record_payment(pid, "conversation", "25.00", "cash", by="t", idempotent=once)

    kept = ledger.idempotency.lookup("tok", "k1")
    assert kept is not None and (kept.status, kept.body) == (201, b"paid 25.00") == (
        201, once.body)


def test_when_the_payment_is_refused_its_key_is_not_written(ledger):
    pid = ledger.register_participant("Idem Refused", by="t")["id"]
    ledger.record_payment(pid, "conversation", "25.00", "cash", by="t")

    with pytest.raises(PaymentAlreadyRecorded):
        ledger.record_payment(pid, "conversation", "25.00", "cash", by="t",
                              idempotent=_request("k2"))

    assert ledger.idempotency.lookup("tok", "k2") is None


def test_a_key_already_kept_makes_the_whole_save_fail_and_write_nothing(ledger):
    pid = ledger.register_participant("Idem Clash", by="t")["id"]
    other = ledger.register_participant("Idem Clash 2", by="t")["id"]
    ledger.record_payment(pid, "conversation", "25.00", "cash", by="t",
                          idempotent=_request("same"))
    before = ledger.recorder.max_notification_id()

    with pytest.raises(IdempotencyKeyUsed):
        # The same key reused for another payment: the events' transaction must roll back.
        ledger.record_payment(other, "conversation", "25.00", "cash", by="t",
                              idempotent=_request("same"))

    assert ledger.recorder.max_notification_id() == before
    assert ledger.participant(other)["payments"] == []
