"""Payments: recorded against the rate, one per slot, reversed once."""

from uuid import uuid4

import pytest

from ledger.domain import Payment
from ledger.domain.errors import (
    InvalidAmount,
    InvalidChoice,
    PaymentAlreadyRecorded,
    PaymentAlreadyReversed,
    PaymentDeclinedByParticipant,
    ReasonRequired,
    UnsupportedCurrency,
)

from .conftest import at


def _pay(person, study, previous=None, **kw):
    args = dict(participant_id=person.id, activity=study.activity("conversation"),
                arrangement=person.arrangement("conversation"), previous=previous,
                amount_pence=2500, currency="GBP", method="cash", reference=None, reason=None,
                at=at(1), by="t")
    args.update(kw)
    return Payment.record(**args)


def test_a_payment_at_the_rate_needs_no_reason(person, study):
    payment = _pay(person, study)

    assert (payment.amount_pence, payment.expected_pence, payment.slot) == (2500, 2500, 0)
    assert payment.id == Payment.create_id(person.id, "conversation", 0)


def test_a_different_amount_needs_a_reason(person, study):
    with pytest.raises(ReasonRequired):
        _pay(person, study, amount_pence=2000)

    assert _pay(person, study, amount_pence=2000, reason="part payment").amount_pence == 2000


def test_an_agreed_reduction_is_what_is_due(person, study):
    person.reduce_payment(study.activity("conversation"), 1000, "benefits", at=at(0), by="t")

    assert _pay(person, study, amount_pence=1000,
                arrangement=person.arrangement("conversation")).expected_pence == 1000


def test_a_second_payment_waits_for_the_first_to_be_reversed(person, study):
    first = _pay(person, study)

    with pytest.raises(PaymentAlreadyRecorded):
        _pay(person, study, previous=first)
    first.reverse("bounced", at=at(2), by="t")
    second = _pay(person, study, previous=first)

    assert second.slot == 1 and second.id != first.id


def test_a_payment_is_reversed_once_with_a_reason(person, study):
    payment = _pay(person, study)

    with pytest.raises(Exception) as no_reason:
        payment.reverse("", at=at(2), by="t")
    payment.reverse("bounced", at=at(2), by="t")
    with pytest.raises(PaymentAlreadyReversed):
        payment.reverse("again", at=at(3), by="t")

    assert no_reason.value.field == "reason" and payment.is_reversed


def test_a_declined_activity_is_not_paid(person, study):
    person.decline_payment(study.activity("conversation"), already_paid=False, at=at(0), by="t")

    with pytest.raises(PaymentDeclinedByParticipant):
        _pay(person, study, arrangement=person.arrangement("conversation"))


@pytest.mark.parametrize("kw, error", [
    ({"amount_pence": 0}, InvalidAmount), ({"amount_pence": -1}, InvalidAmount),
    ({"currency": "EUR"}, UnsupportedCurrency), ({"method": "bitcoin"}, InvalidChoice),
])
def test_bad_payments_are_refused(person, study, kw, error):
    with pytest.raises(error):
        _pay(person, study, **kw)


def test_payment_ids_depend_only_on_participant_activity_and_slot():
    pid = uuid4()

    assert Payment.create_id(pid, "conversation", 0) == Payment.create_id(pid, "conversation", 0)
    assert Payment.create_id(pid, "conversation", 0) != Payment.create_id(pid, "workshop", 0)
