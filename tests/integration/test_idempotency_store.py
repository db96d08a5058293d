"""The idempotency row is written in the same transaction as the payment, on both stores."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from ledger.domain.errors import IdempotencyKeyUsed, PaymentAlreadyRecorded
from ledger.idempotency import KEEP, PURGE, IdempotentRequest


def _request(key: str) -> IdempotentRequest:
    return IdempotentRequest(token_id="tok", key=key, request_hash="h", status=201,
                             render=lambda result: f"paid {result['amount']}".encode())


def test_a_payment_and_its_key_are_written_together(ledger):
    pid = ledger.register_participant("Idem Store", by="t")["id"]
    once = _request("k1")

    ledger.record_payment(pid, "conversation", "25.00", "cash", by="t", idempotent=once)

    kept = ledger.idempotency.lookup("tok", "k1")
    assert kept is not None and kept.status == 201 and once.body == b"paid 25.00"
    assert b"paid" not in kept.body  # sealed with the person's data key
    assert ledger.idempotency.opened(kept, "tok", "k1") == b"paid 25.00"


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


def test_keys_kept_longer_than_48_hours_are_forgotten_and_newer_ones_kept(ledger):
    # Literal ages, not the module's KEEP: the issue asks for at least 24 hours, the README
    # promises 48, and a shorter KEEP must fail here.
    ages = {"old": timedelta(hours=48, minutes=1), "almost": timedelta(hours=47, minutes=59),
            "day": timedelta(hours=25), "new": timedelta(0)}
    for key, age in ages.items():
        pid = ledger.register_participant(f"Idem {key}", by="t")["id"]
        ledger.record_payment(pid, "conversation", "25.00", "cash", by="t",
                              idempotent=_request(key))
        ledger.sql.execute("UPDATE {t}ledger_idempotency SET created_at = %s "
                           "WHERE idem_key = %s", ((datetime.now(UTC) - age).isoformat(), key))

    ledger.idempotency.purge()

    assert ledger.idempotency.lookup("tok", "old") is None
    for key in ("almost", "day", "new"):
        assert ledger.idempotency.lookup("tok", key) is not None, key


def test_the_purge_finds_old_keys_by_index_not_by_reading_every_key(ledger):
    cutoff = ((datetime.now(UTC) - KEEP).isoformat(),)
    with ledger.sql.transaction() as c:
        if ledger.sql.is_postgres:  # a small table: ask for the plan a large one would get
            c.execute("SET LOCAL enable_seqscan = off")
            c.execute("EXPLAIN " + PURGE, cutoff)
        else:
            c.execute("EXPLAIN QUERY PLAN " + PURGE, cutoff)
        plan = " ".join(str(value) for row in c.fetchall() for value in dict(row).values())

    assert "ledger_idempotency_created" in plan, plan


def test_a_retry_s_clash_on_its_kept_key_is_reported_as_a_clash_at_once(ledger, monkeypatch):
    """A keyed write sent again (an expense: nothing in the domain refuses a second one) makes
    the save clash only on the kept key. On PostgreSQL that clash surfaced mostly as the
    library's "pipeline aborted", taken for a lost connection: each replay slept and tried
    again, up to ten times, then a 500. Each try must see the clash itself, at once."""
    from ledger import store

    pid = ledger.register_participant("Idem Replay", by="t")["id"]

    def expense() -> object:
        return ledger.record_expense(pid, "workshop", "7.40", "cash", "bus", by="t",
                                     idempotent=IdempotentRequest(
                                         token_id="tok", key="again", request_hash="h",
                                         status=201, render=lambda result: str(result).encode()))

    expense()
    failures: list[str] = []
    if ledger.sql.is_postgres:
        real = store.PG_INSERT

        def watched(recorder: object, events: object, **kwargs: object) -> object:
            try:
                return real(recorder, events, **kwargs)
            except Exception as error:
                failures.append(type(error.__cause__).__name__)
                raise

        monkeypatch.setattr(store, "PG_INSERT", watched)
    before = ledger.recorder.max_notification_id()

    for _ in range(20):
        with pytest.raises(IdempotencyKeyUsed):
            expense()

    assert ledger.recorder.max_notification_id() == before
    if ledger.sql.is_postgres:
        assert failures == ["UniqueViolation"] * 20
