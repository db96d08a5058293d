"""Every consent transition, allowed and refused."""

import pytest

from ledger.domain.errors import (
    AttributionNotApplicable,
    AttributionRequired,
    ConsentAlreadyGiven,
    ConsentAlreadyRequested,
    ConsentAlreadyWithdrawn,
    ConsentNotGiven,
    ConsentNotRequested,
    InvalidChoice,
    ObligationAlreadyDischarged,
    ObligationNotFound,
)

from .conftest import at

SCOPE = "record"


def _do(person, study, command, minute=1):
    scope, form = study.scope(SCOPE), study.form("1.0")
    actions = {
        "request": lambda: person.request_consent(scope, form, at=at(minute), by="t"),
        "grant": lambda: person.grant_consent(scope, form, "online", at=at(minute), by="t"),
        "refuse": lambda: person.refuse_consent(scope, at=at(minute), by="t"),
        "expire": lambda: person.expire_consent(scope, at=at(minute), by="t"),
        "withdraw": lambda: person.withdraw_consent(scope, "phone", at=at(minute), by="t"),
    }
    return actions[command]()


REACH = {
    None: [],
    "requested": ["request"],
    "given": ["grant"],
    "withdrawn": ["grant", "withdraw"],
    "refused": ["request", "refuse"],
    "expired": ["request", "expire"],
}
# (from state, command) -> resulting state, or the error raised
TRANSITIONS = {
    (None, "request"): "requested", (None, "grant"): "given",
    (None, "refuse"): ConsentNotRequested, (None, "expire"): ConsentNotRequested,
    (None, "withdraw"): ConsentNotGiven,
    ("requested", "request"): ConsentAlreadyRequested, ("requested", "grant"): "given",
    ("requested", "refuse"): "refused", ("requested", "expire"): "expired",
    ("requested", "withdraw"): ConsentNotGiven,
    ("given", "request"): ConsentAlreadyGiven, ("given", "grant"): ConsentAlreadyGiven,
    ("given", "refuse"): ConsentNotRequested, ("given", "expire"): "expired",
    ("given", "withdraw"): "withdrawn",
    ("withdrawn", "request"): "requested", ("withdrawn", "grant"): "given",
    ("withdrawn", "refuse"): ConsentNotRequested, ("withdrawn", "expire"): ConsentNotRequested,
    ("withdrawn", "withdraw"): ConsentAlreadyWithdrawn,
    ("refused", "request"): "requested", ("refused", "grant"): "given",
    ("refused", "refuse"): ConsentNotRequested, ("refused", "expire"): ConsentNotRequested,
    ("refused", "withdraw"): ConsentNotGiven,
    ("expired", "request"): "requested", ("expired", "grant"): "given",
    ("expired", "refuse"): ConsentNotRequested, ("expired", "expire"): ConsentNotRequested,
    ("expired", "withdraw"): ConsentNotGiven,
}


@pytest.mark.parametrize("start, command", sorted(TRANSITIONS, key=str))
def test_consent_state_machine(person, study, start, command):
    for i, step in enumerate(REACH[start]):
        _do(person, study, step, minute=i + 1)
    version = person.version
    expected = TRANSITIONS[(start, command)]

    if isinstance(expected, str):
        _do(person, study, command, minute=10)
        assert person.consent(SCOPE).state == expected
        assert person.version == version + 1
    else:
        with pytest.raises(expected) as e:
            _do(person, study, command, minute=10)
        assert e.value.field == "scope"
        assert person.version == version  # refused: nothing recorded


def test_every_state_and_command_is_covered():
    commands = {"request", "grant", "refuse", "expire", "withdraw"}
    assert set(TRANSITIONS) == {(s, c) for s in REACH for c in commands}


def test_a_grant_records_who_when_how_and_which_form(person, study):
    person.grant_consent(study.scope("record"), study.form("1.0"), "bsl", at=at(5), by="staff:a")

    c = person.consent("record")
    assert (c.state, c.method, c.form_version, c.form_sha256, c.changed_at) == (
        "given", "bsl", "1.0", study.form("1.0").sha256, at(5))
    assert c.history[-1]["by"] == "staff:a"


def test_consent_is_given_again_on_a_new_form_version(person, study):
    person.grant_consent(study.scope("record"), study.form("1.0"), "online", at=at(1), by="t")
    study.register_form("2.0", "Second version", at=at(2), by="t")

    person.grant_consent(study.scope("record"), study.form("2.0"), "online", at=at(3), by="t")

    assert person.consent("record").form_version == "2.0"


@pytest.mark.parametrize("method", ["email", "", None, "ONLINE"])
def test_consent_methods_come_from_the_vocabulary(person, study, method):
    with pytest.raises(InvalidChoice) as e:
        person.grant_consent(study.scope("record"), study.form("1.0"), method, at=at(1), by="t")

    assert e.value.field == "method"


def test_consent_to_be_quoted_records_the_persons_choice_of_attribution(person, study):
    with pytest.raises(AttributionRequired) as missing:
        person.grant_consent(study.scope("quote"), study.form("1.0"), "online", at=at(1), by="t")
    person.grant_consent(study.scope("quote"), study.form("1.0"), "online", "anonymous",
                         at=at(1), by="t")
    person.withdraw_consent(study.scope("quote"), "email", at=at(2), by="t")
    person.grant_consent(study.scope("quote"), study.form("1.0"), "online", "named",
                         at=at(3), by="t")

    assert missing.value.field == "attribution"
    assert [h.get("attribution") for h in person.consent("quote").history
            if h["state"] == "given"] == ["anonymous", "named"]


def test_attribution_is_refused_where_nobody_is_quoted(person, study):
    with pytest.raises(AttributionNotApplicable):
        person.grant_consent(study.scope("record"), study.form("1.0"), "online", "named",
                             at=at(1), by="t")
    with pytest.raises(InvalidChoice):
        person.grant_consent(study.scope("quote"), study.form("1.0"), "online", "famous",
                             at=at(1), by="t")


def test_withdrawal_opens_the_scopes_obligations(person, study):
    person.grant_consent(study.scope("record"), study.form("1.0"), "online", at=at(1), by="t")

    opened = person.withdraw_consent(study.scope("record"), "phone", "changed my mind",
                                     at=at(2), by="t")

    assert [o.kind for o in opened] == ["delete_recording"]
    assert person.obligations[opened[0].id].done_at is None
    assert person.consent("record").history[-1]["reason"] == "changed my mind"


def test_a_withdrawal_after_the_deadline_is_recorded_and_flagged(person, study):
    study.set_withdrawal_deadline("analyse", at(5), at=at(0), by="t")
    person.grant_consent(study.scope("analyse"), study.form("1.0"), "online", at=at(1), by="t")

    person.withdraw_consent(study.scope("analyse"), "email", at=at(6), by="t")

    assert person.consent("analyse").state == "withdrawn"
    assert person.consent("analyse").history[-1]["past_deadline"] is True


@pytest.mark.parametrize("channel", ["carrier pigeon", "", None, "participant_link"])
def test_withdrawal_channels_come_from_the_vocabulary(person, study, channel):
    person.grant_consent(study.scope("record"), study.form("1.0"), "online", at=at(1), by="t")

    with pytest.raises(InvalidChoice) as e:
        person.withdraw_consent(study.scope("record"), channel, at=at(2), by="t")

    assert e.value.field == "channel"


def test_an_obligation_is_marked_done_once(person, study):
    person.grant_consent(study.scope("record"), study.form("1.0"), "online", at=at(1), by="t")
    [o] = person.withdraw_consent(study.scope("record"), "phone", at=at(2), by="t")

    person.discharge_obligation(o.id, "deleted from the drive", at=at(30), by="t")

    assert person.obligations[o.id].done_at == at(30)
    with pytest.raises(ObligationAlreadyDischarged):
        person.discharge_obligation(o.id, at=at(31), by="t")


def test_after_erasure_follow_up_is_still_marked_done_but_takes_no_note(person, study):
    """Deleting a recording must still be recordable once the person is erased; a note is
    free text about them, which nothing may write any more."""
    from ledger.domain.errors import ParticipantErased

    person.grant_consent(study.scope("record"), study.form("1.0"), "online", at=at(1), by="t")
    [o] = person.withdraw_consent(study.scope("record"), "phone", at=at(2), by="t")
    person.erase("asked", at=at(3), by="admin")

    with pytest.raises(ParticipantErased):
        person.discharge_obligation(o.id, "deleted the file", at=at(4), by="t")
    person.discharge_obligation(o.id, at=at(5), by="t")

    assert person.obligations[o.id].done_at == at(5)


def test_an_unknown_obligation_is_not_found(person):
    from uuid import uuid4

    with pytest.raises(ObligationNotFound):
        person.discharge_obligation(uuid4(), at=at(1), by="t")


def test_a_second_withdrawal_after_reconsenting_opens_new_obligations(person, study):
    scope, form = study.scope("record"), study.form("1.0")
    person.grant_consent(scope, form, "online", at=at(1), by="t")
    [first] = person.withdraw_consent(scope, "phone", at=at(2), by="t")
    person.grant_consent(scope, form, "online", at=at(3), by="t")

    [second] = person.withdraw_consent(scope, "phone", at=at(4), by="t")

    assert first.id != second.id and len(person.obligations) == 2


def test_withdrawing_through_the_link_reports_what_was_already_done(person, study):
    from uuid import uuid4

    link = uuid4()
    person.issue_withdrawal_link(link, at(1000), at=at(0), by="t")
    for scope in ("record", "publish"):
        person.grant_consent(study.scope(scope), study.form("1.0"), "online", at=at(1), by="t")
    person.withdraw_consent(study.scope("publish"), "phone", at=at(2), by="t")
    version = person.version

    done = person.withdraw_through_link(
        link, [study.scope(s) for s in ("record", "publish", "archive", "record")],
        at=at(3), by="participant")

    assert done == {"withdrawn": ["record"], "already": ["publish"], "not_given": ["archive"]}
    assert person.version == version + 1
    assert person.consent("record").history[-1]["channel"] == "participant_link"


def test_a_stale_or_expired_link_cannot_withdraw(person, study):
    from uuid import uuid4

    from ledger.domain.errors import LinkNoLongerWorks

    old, new = uuid4(), uuid4()
    person.issue_withdrawal_link(old, at(100), at=at(0), by="t")
    person.issue_withdrawal_link(new, at(100), at=at(1), by="t")
    person.grant_consent(study.scope("record"), study.form("1.0"), "online", at=at(1), by="t")

    with pytest.raises(LinkNoLongerWorks):
        person.withdraw_through_link(old, [study.scope("record")], at=at(2), by="p")
    with pytest.raises(LinkNoLongerWorks):
        person.withdraw_through_link(new, [study.scope("record")], at=at(100), by="p")
    person.revoke_withdrawal_link(at=at(3), by="t")
    with pytest.raises(LinkNoLongerWorks):
        person.withdraw_through_link(new, [study.scope("record")], at=at(4), by="p")
    assert person.consent("record").state == "given"
