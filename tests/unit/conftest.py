"""Domain fixtures: the pilot study and a registered participant, built without any I/O."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from uuid import uuid4

import pytest

from ledger import pilot
from ledger.domain import Participant, PersonalDetails, Study

T0 = datetime(2026, 3, 1, 17, 0, tzinfo=UTC)


def at(minutes: int) -> datetime:
    """A moment ``minutes`` after T0."""
    return T0 + timedelta(minutes=minutes)


@pytest.fixture
def study() -> Study:
    s = Study.define(
        slug="pilot", name=pilot.NAME, controller=pilot.CONTROLLER,
        lawful_bases=pilot.LAWFUL_BASES, scopes=pilot.SCOPES, activities=pilot.ACTIVITIES,
        retention_days=pilot.RETENTION_DAYS, at=T0, by="test",
    )
    s.register_form("1.0", pilot.FORM_TEXT, at=T0, by="test")
    return s


@pytest.fixture
def person(study: Study) -> Participant:
    details = PersonalDetails.check("Test Person", "t@example.invalid", None, ["A"], None)
    return Participant.register(
        id=uuid4(), study_id=study.id, reference="ST-TEST", details=details, at=T0, by="test"
    )
