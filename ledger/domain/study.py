"""The study: consent scopes with deadlines, activities with rates, versioned consent forms."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

from eventsourcing.domain import Aggregate, event

from .base import derived_id, topic
from .errors import (
    ErasureRefused,
    FormVersionAlreadyRegistered,
    InvalidText,
    UnknownActivity,
    UnknownScope,
    UnregisteredFormVersion,
)
from .money import check_pence
from .vocab import check_text

MAX_RETENTION = 7_300  # days: twenty years


@dataclass(frozen=True)
class Scope:
    """One thing a person may consent to, e.g. ``record``; withdrawal after the deadline is flagged."""

    name: str
    label: str
    description: str
    obligations: tuple[str, ...] = ()
    takes_attribution: bool = False
    withdrawal_deadline: datetime | None = None
    if_withdrawn: str = ""  # what withdrawing means for the person, in plain words

    def is_past_deadline(self, at: datetime) -> bool:
        """True when a withdrawal at ``at`` comes after this scope's deadline."""
        return self.withdrawal_deadline is not None and at > self.withdrawal_deadline


@dataclass(frozen=True)
class Activity:
    """Something people are paid for, with its standard rate in pence."""

    name: str
    label: str
    rate_pence: int


@dataclass(frozen=True)
class ConsentForm:
    """A registered consent form version, known by its text's SHA-256."""

    version: str
    sha256: str
    registered_at: datetime
    text: str = field(repr=False, default="")


def _scope(d: dict[str, Any]) -> Scope:
    return Scope(**{**d, "obligations": tuple(d.get("obligations", ()))})


class Study(Aggregate):
    """The study the ledger serves; one per ledger, found by its slug."""

    TOPIC = topic("Study")
    # Days after a payment during which finance needs its record to name the payee; erasure is
    # refused until then. 0 (the default): payments stay as anonymous facts (amount, date).
    finance_retention_days = 0

    @staticmethod
    def create_id(slug: str) -> UUID:
        """One study per slug: the store refuses a second."""
        return derived_id("study", slug)

    @event("Created", topic=topic("Study.Created"))
    def __init__(
        self,
        slug: str,
        name: str,
        controller: dict[str, str],
        lawful_bases: dict[str, str],
        scopes: list[dict[str, Any]],
        activities: list[dict[str, Any]],
        retention_days: int,
        at: datetime,
        by: str,
    ) -> None:
        self.slug = slug
        self.name = name
        self.controller = dict(controller)
        self.lawful_bases = dict(lawful_bases)
        self.scopes = {s["name"]: _scope(s) for s in scopes}
        self.activities = {a["name"]: Activity(**a) for a in activities}
        self.retention_days = retention_days
        self.created_at = at
        self.forms: dict[str, ConsentForm] = {}
        self.current_form_version: str | None = None

    @classmethod
    def define(
        cls,
        *,
        slug: str,
        name: str,
        controller: dict[str, str],
        lawful_bases: dict[str, str],
        scopes: list[Scope],
        activities: list[Activity],
        retention_days: int,
        at: datetime,
        by: str,
    ) -> Study:
        """Create a study after checking its definition is coherent."""
        check_text("name", name, max_length=200)
        if not scopes:
            raise InvalidText("a study needs at least one consent scope", field="scopes")
        if len({s.name for s in scopes}) != len(scopes):
            raise InvalidText("scope names must be unique", field="scopes")
        if len({a.name for a in activities}) != len(activities):
            raise InvalidText("activity names must be unique", field="activities")
        for a in activities:
            check_pence(a.rate_pence, field="rate")
        return cls(
            slug=slug, name=name, controller=controller, lawful_bases=lawful_bases,
            scopes=[asdict(s) for s in scopes], activities=[asdict(a) for a in activities],
            retention_days=retention_days, at=at, by=by,
        )

    # -- queries used by other aggregates' commands ------------------------------------------

    def scope(self, name: str) -> Scope:
        """The named scope, or ``UnknownScope``."""
        try:
            return self.scopes[name]
        except (KeyError, TypeError):
            raise UnknownScope(
                f"scope must be one of: {', '.join(self.scopes)}", field="scope"
            ) from None

    def activity(self, name: str) -> Activity:
        """The named activity, or ``UnknownActivity``."""
        try:
            return self.activities[name]
        except (KeyError, TypeError):
            raise UnknownActivity(
                f"activity must be one of: {', '.join(self.activities)}", field="activity"
            ) from None

    def form(self, version: str) -> ConsentForm:
        """The registered form version, or ``UnregisteredFormVersion``."""
        try:
            return self.forms[version]
        except (KeyError, TypeError):
            raise UnregisteredFormVersion(
                "form_version is not a registered consent form version", field="form_version"
            ) from None

    # -- commands ----------------------------------------------------------------------------

    def register_form(self, version: str, text: str, *, at: datetime, by: str) -> ConsentForm:
        """Register a consent form version's full text once; it becomes the current version."""
        version = check_text("version", version, max_length=40, one_line=True) or ""
        check_text("text", text, max_length=100_000)  # validates; the hash is of the exact text
        if version in self.forms:
            raise FormVersionAlreadyRegistered(
                "this form version is already registered", field="version"
            )
        self._form_registered(version, text, hashlib.sha256(text.encode()).hexdigest(), at, by)
        return self.forms[version]

    @event("FormVersionRegistered", topic=topic("Study.FormVersionRegistered"))
    def _form_registered(self, version: str, text: str, sha256: str, at: datetime, by: str) -> None:
        self.forms[version] = ConsentForm(version, sha256, at, text)
        self.current_form_version = version

    def set_withdrawal_deadline(
        self, scope: str, deadline: datetime | None, *, at: datetime, by: str
    ) -> None:
        """Set or clear the date after which withdrawing a scope is flagged as past the deadline."""
        self.scope(scope)
        if deadline is not None and deadline.tzinfo is None:
            raise InvalidText("deadline must include a UTC offset", field="deadline")
        self._deadline_set(scope, deadline, at, by)

    @event("WithdrawalDeadlineSet", topic=topic("Study.WithdrawalDeadlineSet"))
    def _deadline_set(self, scope: str, deadline: datetime | None, at: datetime, by: str) -> None:
        old = self.scopes[scope]
        self.scopes[scope] = Scope(**{**asdict(old), "obligations": old.obligations,
                                      "withdrawal_deadline": deadline})

    def set_finance_retention(self, days: int, *, at: datetime, by: str) -> None:
        """Keep the payee's identity with payment records for ``days`` after each payment (0 to
        7,300; UK finance rules commonly ask for six years): erasing is refused until then."""
        if isinstance(days, bool) or not isinstance(days, int) or not 0 <= days <= MAX_RETENTION:
            raise InvalidText(f"days must be a whole number from 0 to {MAX_RETENTION}",
                              field="days")
        self._finance_retention_set(days, at, by)

    @event("FinanceRetentionSet", topic=topic("Study.FinanceRetentionSet"))
    def _finance_retention_set(self, days: int, at: datetime, by: str) -> None:
        self.finance_retention_days = days

    def check_erasure(self, payments: list[Any], now: datetime,
                      expenses: Sequence[dict[str, Any]] = ()) -> None:
        """Refuse to erase a person whose payment records (reversed ones too: they are finance
        records as well) or expenses paid back to them finance must still keep with their
        identity, saying from when erasure will be possible."""
        times = [p.paid_at for p in payments] + [e["at"] for e in expenses]
        if not self.finance_retention_days or not times:
            return
        until = max(times) + timedelta(days=self.finance_retention_days)
        if now < until:
            raise ErasureRefused(
                f"the study keeps payment and expense records with the payee's identity for "
                f"{self.finance_retention_days} days after the last of them (finance "
                f"retention); this person's data can be erased from {until.date().isoformat()}")

    def set_rate(self, activity: str, rate_pence: int, *, at: datetime, by: str) -> None:
        """Change an activity's standard rate."""
        self.activity(activity)
        self._rate_set(activity, check_pence(rate_pence, field="rate"), at, by)

    @event("RateSet", topic=topic("Study.RateSet"))
    def _rate_set(self, activity: str, rate_pence: int, at: datetime, by: str) -> None:
        old = self.activities[activity]
        self.activities[activity] = Activity(old.name, old.label, rate_pence)
