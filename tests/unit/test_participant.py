"""Registration, access needs, payment arrangements, expenses and erasure."""

from uuid import uuid4

import pytest

from ledger.domain import REDACTED, Participant, PersonalDetails, is_redacted
from ledger.domain.errors import (
    AccessNeedNotFound,
    DuplicateId,
    InvalidAmount,
    InvalidChoice,
    InvalidText,
    NeedAlreadyMet,
    ParticipantErased,
    PaymentAlreadyDeclined,
    PaymentAlreadyRecorded,
    PaymentDeclinedByParticipant,
)

from .conftest import at


@pytest.mark.parametrize("field, kwargs", [
    ("name", {"name": ""}), ("name", {"name": "x" * 201}), ("name", {"name": 7}),
    ("email", {"email": "not-an-email"}), ("phone", {"phone": "1" * 41}),
    ("communities", {"communities": "Roma"}), ("communities", {"communities": ["x" * 81]}),
    ("communities", {"communities": ["a"] * 21}),
])
def test_registration_input_is_checked_field_by_field(field, kwargs):
    args = {"name": "A Person", "email": None, "phone": None, "communities": [],
            "preferred_contact": None, **kwargs}

    with pytest.raises(InvalidText) as e:
        PersonalDetails.check(**args)

    assert e.value.field == field
    assert str(args[field]) not in str(e.value) or args[field] in ("", 7)


def test_access_need_goes_from_requested_to_met(person):
    need = uuid4()
    person.request_access_need(need, "BSL interpreter", "Two interpreters", at=at(1), by="t")
    person.record_access_outcome(need, "partly_met", "Only one found", at=at(2), by="t")
    person.record_access_outcome(need, "not_met", "Cancelled", at=at(3), by="t")

    person.record_access_outcome(need, "met", "Two booked", at=at(4), by="t")

    n = person.needs[need]
    assert (n.outcome, n.met_at, n.requested_at) == ("met", at(4), at(1))
    assert [h["outcome"] for h in n.history] == ["partly_met", "not_met", "met"]


def test_a_met_need_is_final(person):
    need = uuid4()
    person.request_access_need(need, "captions", "", at=at(1), by="t")
    person.record_access_outcome(need, "met", at=at(2), by="t")

    with pytest.raises(NeedAlreadyMet):
        person.record_access_outcome(need, "partly_met", at=at(3), by="t")


@pytest.mark.parametrize("category, detail, field", [
    ("", "x", "category"), ("x" * 81, "x", "category"), ("breaks", "x" * 2001, "detail"),
])
def test_access_need_text_limits(person, category, detail, field):
    with pytest.raises(InvalidText) as e:
        person.request_access_need(uuid4(), category, detail, at=at(1), by="t")

    assert e.value.field == field


def test_access_need_outcomes_come_from_the_vocabulary_and_need_a_known_need(person):
    need = uuid4()
    person.request_access_need(need, "breaks", "", at=at(1), by="t")

    with pytest.raises(InvalidChoice):
        person.record_access_outcome(need, "sorted", at=at(2), by="t")
    with pytest.raises(AccessNeedNotFound):
        person.record_access_outcome(uuid4(), "met", at=at(2), by="t")
    with pytest.raises(DuplicateId):
        person.request_access_need(need, "breaks", "", at=at(3), by="t")


def test_payment_is_arranged_with_the_person(person, study):
    person.arrange_payment(study.activity("conversation"), "voucher", "self", True,
                           at=at(1), by="t")

    a = person.arrangement("conversation")
    assert (a.method, a.payee, a.benefits_advice_offered, a.declined) == (
        "voucher", "self", True, False)


@pytest.mark.parametrize("method, payee, advice, field", [
    ("paypal", "self", True, "method"), ("cash", "friend", True, "payee"),
    ("cash", "self", "yes", "benefits_advice_offered"),
])
def test_an_arrangement_uses_the_vocabularies(person, study, method, payee, advice, field):
    with pytest.raises(InvalidChoice) as e:
        person.arrange_payment(study.activity("conversation"), method, payee, advice,
                               at=at(1), by="t")

    assert e.value.field == field


def test_declining_is_recorded_once_and_undone_by_a_new_arrangement(person, study):
    conv = study.activity("conversation")
    person.decline_payment(conv, "does not want paying", at=at(1), by="t")

    with pytest.raises(PaymentAlreadyDeclined):
        person.decline_payment(conv, at=at(2), by="t")
    person.arrange_payment(conv, "cash", "self", False, at=at(3), by="t")
    assert person.arrangement("conversation").declined is False


def test_a_paid_activity_cannot_be_declined_or_reduced_until_reversed(person, study):
    conv = study.activity("conversation")
    payment = person.pay(conv, 2500, "GBP", "cash", at=at(1), by="t")

    with pytest.raises(PaymentAlreadyRecorded):
        person.decline_payment(conv, at=at(2), by="t")
    with pytest.raises(PaymentAlreadyRecorded):
        person.reduce_payment(conv, 1000, "benefits", at=at(2), by="t")
    person.reverse_payment(payment, "bounced", at=at(3), by="t")
    person.decline_payment(conv, at=at(4), by="t")

    assert person.arrangement("conversation").declined


def test_a_declined_activity_cannot_be_reduced(person, study):
    conv = study.activity("conversation")
    person.decline_payment(conv, at=at(1), by="t")

    with pytest.raises(PaymentDeclinedByParticipant):
        person.reduce_payment(conv, 1000, "benefits", at=at(2), by="t")


def test_a_reduction_is_below_the_rate_and_has_a_reason(person, study):
    conv = study.activity("conversation")
    person.reduce_payment(conv, 1000, "benefits", at=at(1), by="t")

    assert person.arrangement("conversation").expected_pence(conv) == 1000
    with pytest.raises(InvalidAmount):
        person.reduce_payment(conv, 2500, "no", at=at(2), by="t")
    with pytest.raises(InvalidText):
        person.reduce_payment(conv, 500, "", at=at(2), by="t")


def test_expenses_are_separate_lines(person, study):
    person.record_expense(uuid4(), study.activity("workshop"), 740, "cash", "bus fare",
                          at=at(1), by="t")

    assert [e["amount_pence"] for e in person.expenses] == [740]
    with pytest.raises(InvalidAmount):
        person.record_expense(uuid4(), study.activity("workshop"), 0, "cash", "x",
                              at=at(2), by="t")


def test_erasure_redacts_everything_personal_in_memory(person, study):
    need = uuid4()
    person.request_access_need(need, "breaks", "every 20 minutes", at=at(1), by="t")
    person.grant_consent(study.scope("record"), study.form("1.0"), "online", at=at(1), by="t")
    person.withdraw_consent(study.scope("record"), "phone", "private reason", at=at(2), by="t")

    person.erase("participant asked", at=at(3), by="admin")

    assert person.name is REDACTED and is_redacted(person.email)
    assert is_redacted(person.communities) and is_redacted(person.needs[need].detail)
    assert is_redacted(person.consent("record").history[-1]["reason"])
    assert person.consent("record").state == "withdrawn"  # the facts remain


def _texts(value, seen=None):
    """Every string held anywhere in ``value`` (dicts, lists, objects' attributes)."""
    seen = set() if seen is None else seen
    if isinstance(value, str):
        yield value
        return
    if id(value) in seen or isinstance(value, int | float | bytes | type(None)):
        return
    seen.add(id(value))
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _texts(k, seen)
            yield from _texts(v, seen)
    elif isinstance(value, list | tuple | set | frozenset):
        for v in value:
            yield from _texts(v, seen)
    else:
        for v in getattr(value, "__dict__", {}).values():
            yield from _texts(v, seen)
        for name in getattr(type(value), "__slots__", ()):
            yield from _texts(getattr(value, name, None), seen)


def test_erasure_leaves_no_personal_text_anywhere_in_memory(study):
    """Every personal field a person's record can hold, each given a marker; after the erasure
    not one marker is left anywhere in the aggregate (the facts, such as states, remain)."""
    details = PersonalDetails.check("SECRET-name", "secret-email@example.invalid",
                                    "SECRET-phone", ["SECRET-community"], "SECRET-contact")
    person = Participant.register(id=uuid4(), study_id=study.id, reference="ST-ERASE",
                                  details=details, at=at(0), by="t")
    need = uuid4()
    person.request_access_need(need, "SECRET-category", "SECRET-detail", at=at(1), by="t")
    person.record_access_outcome(need, "met", "SECRET-outcome-note", at=at(2), by="t")
    record, publish = study.scope("record"), study.scope("publish")
    for scope in (record, publish):
        person.grant_consent(scope, study.form("1.0"), "online", at=at(3), by="t")
    person.record_use(record, "SECRET-purpose", at=at(4), by="t")
    person.withdraw_consent(record, "phone", "SECRET-withdrawal-reason", at=at(5), by="t")
    obligation = next(iter(person.obligations))
    person.discharge_obligation(obligation, "SECRET-obligation-note", at=at(6), by="t")
    person.decline_payment(study.activity("conversation"), "SECRET-decline-reason",
                           at=at(7), by="t")
    person.reduce_payment(study.activity("workshop"), 1000, "SECRET-reduce-reason",
                          at=at(8), by="t")
    person.record_expense(uuid4(), study.activity("workshop"), 740, "cash",
                          "SECRET-expense", at=at(9), by="t")
    seeded = {"name", "phone", "community", "contact", "category", "detail", "outcome-note",
              "purpose", "withdrawal-reason", "obligation-note", "decline-reason",
              "reduce-reason", "expense"}
    person.collect_events()  # saved (sealed at rest): the events no longer hang on the aggregate
    found = {t.removeprefix("SECRET-") for t in _texts(person) if t.startswith("SECRET-")}
    assert found == seeded  # the walk sees every one of them before the erasure
    assert any("secret-email" in t for t in _texts(person))

    person.erase("SECRET-erasure-reason", at=at(10), by="admin")
    person.collect_events()

    left = [t for t in _texts(person) if "secret" in t.lower()]
    assert left == []
    assert person.consent("record").state == "withdrawn"  # the facts remain
    assert person.arrangement("conversation").declined


def test_nothing_more_is_recorded_for_an_erased_person(person, study):
    person.erase("asked", at=at(1), by="admin")
    version = person.version
    commands = [
        lambda: person.grant_consent(study.scope("record"), study.form("1.0"), "online",
                                     at=at(2), by="t"),
        lambda: person.request_access_need(uuid4(), "x", "", at=at(2), by="t"),
        lambda: person.arrange_payment(study.activity("conversation"), "cash", "self", True,
                                       at=at(2), by="t"),
        lambda: person.erase("again", at=at(2), by="t"),
    ]

    for command in commands:
        with pytest.raises(ParticipantErased):
            command()
    assert person.version == version


def test_an_erasure_needs_a_reason(person):
    with pytest.raises(InvalidText) as e:
        person.erase("  ", at=at(1), by="admin")

    assert e.value.field == "reason"


def test_applying_events_without_the_library_check_gives_the_same_participant(study, person):
    """``apply_events`` (used to read aggregates back) is eventsourcing's project_aggregate
    without its per-event Protocol check: the same state, event for event."""
    from eventsourcing.application import project_aggregate

    from ledger.domain import apply_events

    person.grant_consent(study.scope("take_part"), study.form("1.0"), "online", None, at=at(1),
                         by="t")
    person.request_access_need(uuid4(), "captions", "Live captions", at=at(2), by="t")
    events = person.collect_events()

    for n in range(len(events) + 1):
        mine, theirs = apply_events(None, events[:n]), project_aggregate(None, events[:n])
        assert (mine is None and theirs is None) or vars(mine) == vars(theirs)
    assert apply_events(None, events).version == len(events) == 3


def test_a_use_recorded_before_attribution_existed_replays_as_not_said(study):
    """Uses recorded before 6 December 2026 carry neither attribution field: replayed, they
    read as not said (None), and the use stands as it did."""
    person = Participant.register(id=uuid4(), study_id=study.id, reference="ST-OLDUSE",
                                  details=PersonalDetails.check("A", None, None, [], None),
                                  at=at(0), by="t")
    quote = study.scope("quote")
    person.grant_consent(quote, study.form("1.0"), "online", "anonymous", at=at(1), by="t")
    person.record_use(quote, "quoted", "named", at=at(2), by="t")
    events = person.collect_events()
    del events[-1].__dict__["attribution"], events[-1].__dict__["consented_attribution"]

    replayed = None
    for e in events:
        replayed = e.mutate(replayed)

    assert person.uses[-1]["attribution"] == "named"
    assert replayed is not None and [(u["consent_state"], u["attribution"],
                                      u["consented_attribution"]) for u in replayed.uses] == [
        ("given", None, None)]
