"""Model-based test: random sequences of every command against a plain in-memory model.

Hypothesis drives a real ``Ledger`` on a SQLite file with every command (register, grant,
withdraw, access need and outcome, arrange, pay, decline, reverse, erase, issue a link) and
restarts of the application over the same database. The model predicts each command's outcome
(done, or refused with which error); after every step the test checks:

- the views (the staff list, read from the view tables) equal the model;
- the total paid in the views equals the model's, and the sum of the payment events in the log;
- at most one live payment per participant and activity, in the log;
- a full rebuild gives exactly the live views;
- ``verify`` holds the Merkle tree over the log.

CI runs a fixed seed (derandomised) sized to about two minutes; ``pytest --slow`` runs longer.
"""

from __future__ import annotations

import shutil
import tempfile
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    consumes,
    initialize,
    invariant,
    multiple,
    rule,
)

from ledger.application import Ledger
from ledger.audit.checkpoints import verify
from ledger.domain import errors
from ledger.projections.rows import rows_key

SCOPES = ["take_part", "record", "store", "analyse", "publish", "archive", "contact_again"]
ACTIVITIES = ["conversation", "workshop"]
OUTCOMES = ["met", "partly_met", "not_met"]
BY = "model"


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2027, 1, 1, tzinfo=UTC)

    def __call__(self) -> datetime:
        self.now += timedelta(seconds=1)
        return self.now


@dataclass
class Person:
    erased: bool = False
    consents: dict[str, str] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=dict)
    needs: dict[UUID, str | None] = field(default_factory=dict)
    declined: set[str] = field(default_factory=set)
    paid: dict[str, UUID] = field(default_factory=dict)  # activity -> live payment
    reversed: set[UUID] = field(default_factory=set)


class LedgerModel(RuleBasedStateMachine):
    people = Bundle("people")
    needs = Bundle("needs")
    payments = Bundle("payments")

    def __init__(self) -> None:
        super().__init__()
        self.dir = tempfile.mkdtemp(prefix="ledger-model-")
        self.clock = Clock()
        self.ledger = self._open()
        self.ledger.init_study(by=BY)
        self.model: dict[UUID, Person] = {}
        self.rates = {a["name"]: a["rate"] for a in self.ledger.study()["activities"]}

    def _open(self) -> Ledger:
        return Ledger({"LEDGER_DATA_DIR": self.dir}, clock=self.clock)

    def teardown(self) -> None:
        self.ledger.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    def _expect(self, error: type[Exception] | None, command: Any) -> Any:
        """Run ``command``: it must succeed when ``error`` is None, else raise ``error``."""
        if error is None:
            return command()
        with pytest.raises(error):
            command()
        return None

    # -- commands ------------------------------------------------------------------------

    @initialize(target=people)
    def first_person(self) -> UUID:
        return self.register()

    @rule(target=people)
    def register(self) -> UUID:
        pid = self.ledger.register_participant(f"Model Person {len(self.model)}", by=BY)["id"]
        self.model[pid] = Person()
        return pid

    @rule(pid=people, scope=st.sampled_from(SCOPES), version=st.sampled_from(["1.0", "1.1"]))
    def grant(self, pid: UUID, scope: str, version: str) -> None:
        p = self.model[pid]
        error = (errors.UnregisteredFormVersion if version != "1.0" else
                 errors.ParticipantErased if p.erased else
                 errors.ConsentAlreadyGiven if p.consents.get(scope) == "given"
                 and p.versions.get(scope) == version else None)
        if self._expect(error, lambda: self.ledger.grant_consent(
                pid, scope, version, "online", by=BY)) is not None:
            p.consents[scope], p.versions[scope] = "given", version

    @rule(pid=people, scope=st.sampled_from(SCOPES))
    def withdraw(self, pid: UUID, scope: str) -> None:
        p = self.model[pid]
        state = p.consents.get(scope)
        error = (errors.ParticipantErased if p.erased else
                 errors.ConsentAlreadyWithdrawn if state == "withdrawn" else
                 errors.ConsentNotGiven if state != "given" else None)
        if self._expect(error, lambda: self.ledger.withdraw_consent(
                pid, scope, "email", by=BY)) is not None:
            p.consents[scope] = "withdrawn"

    @rule(target=needs, pid=people)
    def request_need(self, pid: UUID) -> Any:
        p = self.model[pid]
        if p.erased:
            self._expect(errors.ParticipantErased, lambda: self.ledger.request_access_need(
                pid, "captions", "for the workshop", by=BY))
            return multiple()
        need = self.ledger.request_access_need(pid, "captions", "for the workshop", by=BY)
        p.needs[need] = None
        return (pid, need)

    @rule(need=needs, outcome=st.sampled_from(OUTCOMES))
    def need_outcome(self, need: tuple[UUID, UUID], outcome: str) -> None:
        pid, need_id = need
        p = self.model[pid]
        error = (errors.ParticipantErased if p.erased else
                 errors.NeedAlreadyMet if p.needs[need_id] == "met" else None)
        if self._expect(error, lambda: self.ledger.record_access_outcome(
                pid, need_id, outcome, "arranged", by=BY)) is not None:
            p.needs[need_id] = outcome

    @rule(pid=people, activity=st.sampled_from(ACTIVITIES))
    def arrange(self, pid: UUID, activity: str) -> None:
        p = self.model[pid]
        error = errors.ParticipantErased if p.erased else None
        if self._expect(error, lambda: self.ledger.arrange_payment(
                pid, activity, "bank_transfer", "self", True, by=BY)) is not None:
            p.declined.discard(activity)

    @rule(pid=people, activity=st.sampled_from(ACTIVITIES))
    def decline(self, pid: UUID, activity: str) -> None:
        p = self.model[pid]
        error = (errors.ParticipantErased if p.erased else
                 errors.PaymentAlreadyDeclined if activity in p.declined else
                 errors.PaymentAlreadyRecorded if activity in p.paid else None)
        if self._expect(error, lambda: self.ledger.decline_payment(
                pid, activity, by=BY)) is not None:
            p.declined.add(activity)

    @rule(target=payments, pid=people, activity=st.sampled_from(ACTIVITIES))
    def pay(self, pid: UUID, activity: str) -> Any:
        p = self.model[pid]
        error = (errors.ParticipantErased if p.erased else
                 errors.PaymentAlreadyRecorded if activity in p.paid else
                 errors.PaymentDeclinedByParticipant if activity in p.declined else None)
        done = self._expect(error, lambda: self.ledger.record_payment(
            pid, activity, self.rates[activity], "bank_transfer", by=BY))
        if done is None:
            return multiple()
        p.paid[activity] = done["id"]
        return (pid, activity, done["id"])

    @rule(payment=consumes(payments))
    def reverse(self, payment: tuple[UUID, str, UUID]) -> None:
        pid, activity, payment_id = payment
        p = self.model[pid]
        error = errors.ParticipantErased if p.erased else None
        if self._expect(error, lambda: self.ledger.reverse_payment(
                pid, payment_id, "paid in error", by=BY)) is not None:
            del p.paid[activity]
            p.reversed.add(payment_id)

    @rule(pid=people)
    def erase(self, pid: UUID) -> None:
        p = self.model[pid]
        error = errors.ParticipantErased if p.erased else None
        if self._expect(error, lambda: self.ledger.erase(pid, "asked", by=BY)) is not None:
            p.erased = True

    @rule(pid=people)
    def issue_link(self, pid: UUID) -> None:
        error = errors.ParticipantErased if self.model[pid].erased else None
        self._expect(error, lambda: self.ledger.issue_withdrawal_link(pid, by=BY))

    @rule()
    def restart(self) -> None:
        self.ledger.close()
        self.ledger = self._open()

    # -- what must hold after every step -------------------------------------------------

    def _views(self) -> dict[UUID, dict[str, Any]]:
        self.ledger.views_at_least()
        items = self.ledger.participants_page(limit=200, after=None)["items"]
        return {UUID(str(v["id"])): v for v in items}

    @invariant()
    def views_equal_the_model(self) -> None:
        views = self._views()
        assert set(views) == set(self.model)
        for pid, p in self.model.items():
            v = views[pid]
            assert v["erased"] is p.erased
            assert {s: c["state"] for s, c in v["consents"].items() if c["state"]} == p.consents
            assert {UUID(str(n["id"])): n["outcome"] for n in v["access_needs"]} == p.needs
            live = {pay["activity"]: UUID(str(pay["id"])) for pay in v["payments"]
                    if pay["status"] == "paid"}
            assert live == p.paid
            assert {UUID(str(pay["id"])) for pay in v["payments"]
                    if pay["status"] == "reversed"} == p.reversed
            assert {a for a, arr in v["arrangements"].items() if arr["declined"]} == p.declined

    @invariant()
    def totals_agree_and_one_live_payment_per_activity(self) -> None:
        pence = {a: int(r.replace(".", "")) for a, r in self.rates.items()}
        expected = sum(pence[a] for p in self.model.values() for a in p.paid)
        in_views = sum(int(pay["amount"].replace(".", "")) for v in self._views().values()
                       for pay in v["payments"] if pay["status"] == "paid")
        recorded: dict[UUID, tuple[UUID, str, int]] = {}
        reversed_ids: set[UUID] = set()
        start = 1
        while page := self.ledger.recorder.select_notifications(start=start, limit=500):
            for n in page:
                if n.topic == "ledger:Payment.Recorded":
                    e = self.ledger.mapper.to_domain_event(n)
                    recorded[n.originator_id] = (e.participant_id, e.activity, e.amount_pence)
                elif n.topic == "ledger:Payment.Reversed":
                    reversed_ids.add(n.originator_id)
            start = page[-1].id + 1
        in_log = sum(a for pid, (_, _, a) in recorded.items() if pid not in reversed_ids)
        assert expected == in_views == in_log
        live: dict[tuple[UUID, str], int] = defaultdict(int)
        for payment_id, (participant, activity, _) in recorded.items():
            if payment_id not in reversed_ids:
                live[(participant, activity)] += 1
        assert all(count == 1 for count in live.values())

    @invariant()
    def a_rebuild_equals_the_live_views(self) -> None:
        views = self.ledger.projector.views
        self.ledger.views_at_least()

        def state() -> tuple[Any, ...]:
            position, _, rows, people = views.snapshot(self.ledger.recorder.events_table_name)
            return (position, {k: sorted(map(rows_key, v)) for k, v in rows.items()},
                    list(views.page(after_seq=0, limit=10_000)), people)

        live = state()
        self.ledger.projector.rebuild()
        assert state() == live

    @invariant()
    def the_merkle_tree_verifies(self) -> None:
        self.ledger.merkle.checkpoint()
        verdict = verify(self.ledger.merkle)
        assert verdict.ok, verdict.problems
        assert verdict.size == self.ledger.recorder.max_notification_id()


def _settings(slow: bool) -> settings:
    return settings(max_examples=400 if slow else 200, stateful_step_count=80 if slow else 50,
                    derandomize=not slow, deadline=None, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])


def test_the_ledger_behaves_like_its_model(request: pytest.FixtureRequest) -> None:
    case = LedgerModel.TestCase
    case.settings = _settings(bool(request.config.getoption("--slow")))
    case("runTest").runTest()
