"""At most one payment per participant and activity, with real threads racing on each store."""

from __future__ import annotations

from ledger.application import Ledger
from ledger.domain import Payment
from ledger.domain.errors import PaymentAlreadyRecorded
from tests.concurrency import race

WORKERS = 4  # separate Ledger instances, like separate server processes
THREADS_PER_WORKER = 6


def _race(store_env, pid, activity):
    ledgers = [Ledger(store_env) for _ in range(WORKERS)]
    results = race([
        lambda i=i: ledgers[i % WORKERS].record_payment(
            pid, activity, "25.00", "bank_transfer", reference=f"R{i}", by=f"t{i}")["id"]
        for i in range(WORKERS * THREADS_PER_WORKER)])
    for lg in ledgers:
        lg.close()
    return results


def test_racing_payments_for_one_activity_let_exactly_one_through(ledger, store_env):
    pid = ledger.register_participant("Race Person", by="t")["id"]
    before = ledger.recorder.max_notification_id()

    results = _race(store_env, pid, "conversation")

    wins = [r for r in results if not isinstance(r, Exception)]
    losses = [r for r in results if isinstance(r, Exception)]
    assert len(results) == WORKERS * THREADS_PER_WORKER >= 20
    assert len(wins) == 1
    assert all(isinstance(e, PaymentAlreadyRecorded) for e in losses), {type(e) for e in losses}
    new = ledger.recorder.select_notifications(start=before + 1, limit=100)
    assert sorted(n.topic for n in new) == ["ledger:Participant.PaymentNoted",
                                            "ledger:Payment.Recorded"]  # one atomic save
    [recorded] = [n for n in new if n.topic == "ledger:Payment.Recorded"]
    assert recorded.originator_id == wins[0] == Payment.create_id(pid, "conversation", 0)


def test_after_a_reversal_racing_payments_again_let_exactly_one_through(ledger, store_env):
    pid = ledger.register_participant("Race Again", by="t")["id"]
    first = ledger.record_payment(pid, "conversation", "25.00", "cash", by="t")["id"]
    ledger.reverse_payment(pid, first, "bounced", by="t")
    before = ledger.recorder.max_notification_id()

    results = _race(store_env, pid, "conversation")

    assert sum(not isinstance(r, Exception) for r in results) == 1
    new = ledger.recorder.select_notifications(start=before + 1, limit=100)
    assert [n.originator_id for n in new if n.topic == "ledger:Payment.Recorded"] == [
        Payment.create_id(pid, "conversation", 1)]
    statuses = [p["status"] for p in ledger.participant(pid)["payments"]]
    assert statuses == ["reversed", "paid"]


def test_racing_withdrawals_of_one_scope_record_one_withdrawal(ledger, store_env):
    pid = ledger.register_participant("Withdraw Race", by="t")["id"]
    ledger.grant_consent(pid, "publish", "1.0", "online", by="t")
    ledgers = [Ledger(store_env) for _ in range(4)]

    results = race([lambda i=i: ledgers[i % 4].withdraw_consent(pid, "publish", "phone", by="t")
                    for i in range(20)])
    for lg in ledgers:
        lg.close()

    outcomes = ["ok" if isinstance(r, dict) else type(r).__name__ for r in results]
    assert sorted(set(outcomes)) == ["ConsentAlreadyWithdrawn", "ok"]
    assert outcomes.count("ok") == 1
    history = ledger.participant(pid)["consents"]["publish"]["history"]
    assert [h["state"] for h in history] == ["given", "withdrawn"]
