"""Payments: recorded against the rate, one per slot, reversed once."""

from uuid import UUID, uuid4

import pytest

from ledger.domain import Payment
from ledger.domain.errors import (
    InvalidAmount,
    InvalidChoice,
    InvalidText,
    ParticipantErased,
    PaymentAlreadyRecorded,
    PaymentAlreadyReversed,
    PaymentDeclinedByParticipant,
    ReasonRequired,
    UnsupportedCurrency,
)

from .conftest import at


def _pay(person, study, **kw):
    """Pay through the participant, as the application does."""
    args = dict(amount_pence=2500, currency="GBP", method="cash", reference=None, reason=None)
    args.update(kw)
    return person.pay(study.activity("conversation"), args["amount_pence"], args["currency"],
                      args["method"], args["reference"], args["reason"], at=at(1), by="t")


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

    assert _pay(person, study, amount_pence=1000).expected_pence == 1000


def test_a_second_payment_waits_for_the_first_to_be_reversed(person, study):
    first = _pay(person, study)

    with pytest.raises(PaymentAlreadyRecorded):
        _pay(person, study)
    person.reverse_payment(first, "bounced", at=at(2), by="t")
    second = _pay(person, study)

    assert second.slot == 1 and second.id == Payment.create_id(person.id, "conversation", 1)
    assert second.id != first.id  # a new slot is a new id: the store's key admits it
    assert person.arrangement("conversation").payments == [first.id, second.id]


def test_a_payment_without_an_arrangement_implies_one(person, study):
    _pay(person, study, method="charity_donation")

    a = person.arrangement("conversation")
    assert (a.method, a.payee) == ("charity_donation", "charity")


def test_only_the_persons_own_payments_can_be_reversed(person, study):
    from uuid import uuid4

    from ledger.domain import Participant, PersonalDetails
    from ledger.domain.errors import PaymentNotFound

    other = Participant.register(id=uuid4(), study_id=study.id, reference="ST-OTHER",
                                 details=PersonalDetails.check("O", None, None, [], None),
                                 at=at(0), by="t")
    theirs = other.pay(study.activity("conversation"), 2500, "GBP", "cash", at=at(1), by="t")

    with pytest.raises(PaymentNotFound):
        person.reverse_payment(theirs, "mistake", at=at(2), by="t")


def test_a_payment_is_reversed_once_with_a_reason(person, study):
    payment = _pay(person, study)

    with pytest.raises(InvalidText) as no_reason:
        person.reverse_payment(payment, "", at=at(2), by="t")
    person.reverse_payment(payment, "bounced", at=at(2), by="t")
    with pytest.raises(PaymentAlreadyReversed):
        person.reverse_payment(payment, "again", at=at(3), by="t")

    assert no_reason.value.field == "reason" and payment.is_reversed


def test_a_declined_activity_is_not_paid(person, study):
    person.decline_payment(study.activity("conversation"), at=at(0), by="t")

    with pytest.raises(PaymentDeclinedByParticipant):
        _pay(person, study)


def test_an_erased_person_is_not_paid(person, study):
    person.erase("asked", at=at(0), by="admin")

    with pytest.raises(ParticipantErased):
        _pay(person, study)


@pytest.mark.parametrize("kw, error", [
    ({"amount_pence": 0}, InvalidAmount), ({"amount_pence": -1}, InvalidAmount),
    ({"currency": "EUR"}, UnsupportedCurrency), ({"method": "bitcoin"}, InvalidChoice),
])
def test_bad_payments_are_refused(person, study, kw, error):
    with pytest.raises(error):
        _pay(person, study, **kw)


def test_payment_ids_depend_only_on_participant_activity_and_slot():
    pid = uuid4()

    ids = {(who, activity, slot): Payment.create_id(who, activity, slot)
           for who in (pid, uuid4()) for activity in ("conversation", "workshop")
           for slot in (0, 1, 2)}

    assert len(set(ids.values())) == len(ids) == 12  # each part of the triple counts
    assert ids[(pid, "conversation", 0)] == Payment.create_id(UUID(str(pid)), "conversation", 0)
