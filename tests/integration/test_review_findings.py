"""Races and interruptions across processes: each test stands for a way the ledger could go wrong
with several workers, found in review. Separate Ledger instances stand for separate workers."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pytest

from ledger.application import Ledger
from ledger.domain import Payment
from ledger.domain.base import topic
from ledger.domain.errors import (
    ParticipantErased,
    PaymentAlreadyRecorded,
    PaymentDeclinedByParticipant,
)
from tests.concurrency import race


@contextmanager
def reading_meanwhile(read: Callable[[], object], threads: int) -> Iterator[list[Exception]]:
    """Threads calling ``read`` over and over while the block runs; yields what they raised."""
    errors: list[Exception] = []
    stop = threading.Event()

    def loop() -> None:
        while not stop.is_set():
            try:
                read()
            except Exception as e:  # noqa: BLE001 - every failure is the finding
                errors.append(e)

    readers = [threading.Thread(target=loop) for _ in range(threads)]
    for t in readers:
        t.start()
    try:
        yield errors
    finally:  # a failing write must not leave the readers spinning and pytest unable to exit
        stop.set()
        for t in readers:
            t.join(timeout=60)


@pytest.fixture
def two_workers(ledger, store_env):
    other = Ledger(store_env)
    yield ledger, other
    other.close()


def test_a_stale_cached_copy_never_refuses_a_valid_withdrawal(two_workers):
    a, b = two_workers
    pid = a.register_participant("Stale Cache", by="t")["id"]
    a.grant_consent(pid, "publish", "1.0", "online", by="t")
    a.withdraw_consent(pid, "publish", "phone", by="t")  # a now caches "withdrawn"

    b.grant_consent(pid, "publish", "1.0", "online", by="t")  # the person consents again
    result = a.withdraw_consent(pid, "publish", "email", by="t")

    assert result["scope"] == "publish"
    assert a.participant(pid)["consents"]["publish"]["state"] == "withdrawn"


@pytest.mark.parametrize("before", ["never given", "given, stopped and given again"])
def test_a_stale_cached_copy_never_turns_a_link_withdrawal_into_nothing(two_workers, before):
    """Through the personal link, a choice already stopped (or never given) is an answer, not
    an error: decided on a worker's stale copy it told the person "Nothing has changed" (or
    "already stopped") and wrote nothing, while the choice stood given."""
    a, b = two_workers
    pid = a.register_participant("Stale Link", by="t")["id"]
    a.grant_consent(pid, "take_part", "1.0", "online", by="t")
    if before != "never given":
        a.grant_consent(pid, "publish", "1.0", "online", by="t")
        a.withdraw_consent(pid, "publish", "phone", by="t")
    token = a.issue_withdrawal_link(pid, by="t")["url"].rsplit("/", 1)[1]  # a caches them
    b.grant_consent(pid, "publish", "1.0", "online", by="t")

    done = a.withdraw_by_link(token, ["publish"])

    assert done == {"withdrawn": ["publish"], "already": [], "not_given": []}
    for worker in (a, b):
        assert worker.participant(pid)["consents"]["publish"]["state"] == "withdrawn"


def test_a_need_recorded_by_one_worker_can_be_met_through_another(two_workers):
    a, b = two_workers
    pid = a.register_participant("Two Workers", by="t")["id"]
    a.grant_consent(pid, "record", "1.0", "online", by="t")  # a caches the participant

    need = b.request_access_need(pid, "captions", "", by="t")
    met = a.record_access_outcome(pid, need, "met", by="t")

    assert met["outcome"] == "met"


def _race(*commands):
    return race(list(commands), timeout=60)


def test_decline_and_payment_racing_never_leave_a_person_both_declined_and_paid(two_workers):
    a, b = two_workers
    for trial in range(8):
        pid = a.register_participant(f"Decline Race {trial}", by="t")["id"]
        a.participant(pid), b.participant(pid)  # both workers have it cached

        decline, payment = _race(
            lambda pid=pid: a.decline_payment(pid, "conversation", by="t"),
            lambda pid=pid: b.record_payment(pid, "conversation", "25.00", "cash", by="t"))

        # Exactly one wins; the other is refused for the winner's reason, and nothing else.
        if isinstance(decline, Exception):
            assert isinstance(decline, PaymentAlreadyRecorded), repr(decline)
            assert not isinstance(payment, Exception), repr(payment)
        else:
            assert isinstance(payment, PaymentDeclinedByParticipant), repr(payment)
        view = a.participant(pid)
        declined = view["arrangements"]["conversation"]["declined"]
        paid = [p for p in view["payments"] if p["status"] == "paid"]
        assert declined != bool(paid), view["arrangements"]
        assert declined == (not isinstance(decline, Exception))


def test_no_payment_is_recorded_after_an_erasure_even_when_they_race(two_workers, ledger):
    a, b = two_workers
    for trial in range(6):
        pid = a.register_participant(f"Erase Race {trial}", by="t")["id"]
        a.participant(pid), b.participant(pid)

        erasure, payment = _race(
            lambda pid=pid: a.erase(pid, "asked", by="admin"),
            lambda pid=pid: b.record_payment(pid, "conversation", "25.00", "cash", by="t"))

        # The erasure always goes through; the payment either came first or is refused.
        assert not isinstance(erasure, Exception), repr(erasure)
        assert not isinstance(payment, Exception) or isinstance(payment, ParticipantErased), \
            repr(payment)
        log = ledger.recorder.select_notifications(start=1, limit=100_000)
        erased = next(n.id for n in log
                      if n.originator_id == pid and n.topic == topic("Participant.Erased"))
        payments = {Payment.create_id(pid, "conversation", slot) for slot in range(3)}
        assert [n for n in log if n.originator_id in payments and n.id > erased] == []
        recorded = [n for n in log if n.originator_id in payments]
        assert len(recorded) == (0 if isinstance(payment, Exception) else 1)
        assert not ledger.keys.exists(pid)


def test_reading_the_study_while_forms_are_registered_never_fails(two_workers):
    a, b = two_workers

    with reading_meanwhile(a.study, threads=3) as errors:
        for i in range(30):
            b.register_form(f"2.{i}", f"text {i}", by="t")
            a.register_form(f"3.{i}", f"text {i}", by="t")

    assert errors == []
    assert len(a.study()["consent_forms"]) == 61


def test_an_interrupted_erasure_is_finished_when_a_worker_starts(ledger, store_env):
    pid = ledger.register_participant("Half Erased", by="t")["id"]
    p = ledger._participant(pid, fresh=True)
    p.erase("asked", at=ledger.clock(), by="admin")
    ledger.save(p)  # the process "dies" here, before the key is destroyed
    assert ledger.keys.exists(pid)

    restarted = Ledger(store_env)
    view = restarted.participant(pid)
    restarted.close()

    assert not ledger.keys.exists(pid)
    assert view["erased"] and view["name"] == "[erased]"


def test_workers_starting_together_on_a_fresh_store_all_start(store_env):
    def start():
        lg = Ledger(store_env)
        lg.init_study(by="t")
        lg.close()
        return "started"

    outcomes = race([start for _ in range(8)])

    assert outcomes == ["started"] * 8, [repr(o) for o in outcomes if o != "started"]


def test_a_read_copy_is_never_taken_while_the_same_aggregate_is_fast_forwarded(
        ledger, store_env, monkeypatch):
    """The library copies a cached aggregate after releasing its fast-forward lock: another
    thread's fast-forward could change it mid-copy (seen once in CI). A slow copy makes the
    overlap certain if the reader allows it."""
    import ledger.application as application
    from ledger.domain.base import FastCopy

    pid = ledger.register_participant("Copy Race", by="t")["id"]
    ledger._participant(pid, fresh=True)  # now cached by the reader
    copying: list[int] = []  # ids of the objects being copied right now
    overlaps: list[int] = []
    copy, apply = FastCopy.__deepcopy__, application.apply_events

    def slow_copy(self, memo):
        copying.append(id(self))
        try:
            time.sleep(0.01)
            return copy(self, memo)
        finally:
            copying.remove(id(self))

    def watched_apply(aggregate, events):
        events = list(events)
        if events and id(aggregate) in copying:  # changing the very object being copied
            overlaps.append(id(aggregate))
        return apply(aggregate, events)

    monkeypatch.setattr(FastCopy, "__deepcopy__", slow_copy)
    monkeypatch.setattr(application, "apply_events", watched_apply)
    writer = Ledger(store_env)
    try:
        with reading_meanwhile(lambda: ledger._participant(pid, fresh=True), threads=4) as errors:
            for i in range(40):
                scope = ("take_part", "record", "analyse", "store")[i % 4]
                if i < 4:
                    writer.grant_consent(pid, scope, "1.0", "online", by="t")
                else:
                    writer.record_use(pid, scope, f"use {i}", by="t")
                time.sleep(0.005)
    finally:
        writer.close()

    assert errors == []
    assert overlaps == []
