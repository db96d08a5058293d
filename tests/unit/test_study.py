import hashlib

import pytest

from ledger import pilot
from ledger.domain import Activity, Scope, Study
from ledger.domain.errors import (
    FormVersionAlreadyRegistered,
    InvalidAmount,
    InvalidText,
    UnknownActivity,
    UnknownScope,
    UnregisteredFormVersion,
)

from .conftest import T0, at


def test_a_registered_form_is_known_by_the_sha256_of_its_text(study):
    form = study.form("1.0")

    assert form.sha256 == hashlib.sha256(pilot.FORM_TEXT.encode()).hexdigest()
    assert study.current_form_version == "1.0"


def test_a_new_form_version_becomes_current(study):
    study.register_form("1.1", "New text", at=at(1), by="t")

    assert study.current_form_version == "1.1"
    assert study.form("1.0").version == "1.0"


def test_a_form_version_is_registered_only_once(study):
    with pytest.raises(FormVersionAlreadyRegistered):
        study.register_form("1.0", "Different text", at=at(1), by="t")


@pytest.mark.parametrize("version, text", [("", "x"), ("2.0", ""), ("v" * 41, "x")])
def test_a_form_needs_a_version_and_text(study, version, text):
    with pytest.raises(InvalidText):
        study.register_form(version, text, at=at(1), by="t")


def test_unknown_names_are_refused_with_the_field_named(study):
    with pytest.raises(UnknownScope) as scope:
        study.scope("tweet")
    with pytest.raises(UnknownActivity) as activity:
        study.activity("lunch")
    with pytest.raises(UnregisteredFormVersion) as form:
        study.form("9.9")

    assert (scope.value.field, activity.value.field, form.value.field) == (
        "scope", "activity", "form_version")
    assert "take_part" in str(scope.value)


def test_the_pilot_pays_25_pounds_for_the_conversation(study):
    assert study.activity("conversation").rate_pence == 2500


def test_a_withdrawal_deadline_marks_later_withdrawals_late(study):
    study.set_withdrawal_deadline("analyse", at(60), at=at(1), by="t")

    assert study.scope("analyse").is_past_deadline(at(61))
    assert not study.scope("analyse").is_past_deadline(at(59))
    assert not study.scope("record").is_past_deadline(at(10**6))


def test_a_deadline_needs_a_timezone(study):
    with pytest.raises(InvalidText):
        study.set_withdrawal_deadline("analyse", at(60).replace(tzinfo=None), at=at(1), by="t")


def test_a_rate_can_change_but_not_to_nothing(study):
    study.set_rate("workshop", 3000, at=at(1), by="t")

    assert study.activity("workshop").rate_pence == 3000
    with pytest.raises(InvalidAmount):
        study.set_rate("workshop", 0, at=at(2), by="t")


def test_a_study_replays_to_the_same_state(study):
    study.set_withdrawal_deadline("analyse", at(60), at=at(1), by="t")
    events = study.collect_events()

    copy = None
    for e in events:
        copy = e.mutate(copy)

    assert copy.scopes == study.scopes and copy.forms.keys() == study.forms.keys()


@pytest.mark.parametrize("scopes, activities", [
    ([], [Activity("a", "A", 100)]),
    ([Scope("x", "X", "x"), Scope("x", "X", "x")], []),
    ([Scope("x", "X", "x")], [Activity("a", "A", 100), Activity("a", "A", 100)]),
    ([Scope("x", "X", "x")], [Activity("a", "A", 0)]),
])
def test_an_incoherent_study_is_refused(scopes, activities):
    with pytest.raises((InvalidText, InvalidAmount)):
        Study.define(slug="s", name="S", controller={}, lawful_bases={}, scopes=scopes,
                     activities=activities, retention_days=1, at=T0, by="t")
