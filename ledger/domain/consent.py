"""Consent for one scope: its state machine and the follow-up work a withdrawal creates."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from uuid import UUID

from .errors import (
    ConsentAlreadyGiven,
    ConsentAlreadyRequested,
    ConsentAlreadyWithdrawn,
    ConsentNotGiven,
    ConsentNotRequested,
    ObligationAlreadyDischarged,
)

# requested -> given -> withdrawn, plus refused and expired. A person may consent again after
# withdrawing, refusing or expiry (people change their minds; the history keeps every step), and
# may re-consent while given when a new form version is registered.

CONSENTED, AFTER_WITHDRAWAL, WITHOUT_CONSENT = "consented", "after_withdrawal", "without_consent"


def use_standing(consent_state: str | None, attribution: str | None = None,
                 consented_attribution: str | None = None) -> str:
    """How a use of someone's story stands against the consent it met: ``consented`` (given),
    ``after_withdrawal``, or ``without_consent`` (never asked, requested, refused, expired).

    A use that names the person (``attribution`` "named") needs their consent to be named: under
    consent given to be quoted anonymously it is ``without_consent``."""
    if consent_state == "given":
        if attribution == "named" and consented_attribution != "named":
            return WITHOUT_CONSENT
        return CONSENTED
    return AFTER_WITHDRAWAL if consent_state == "withdrawn" else WITHOUT_CONSENT


@dataclass
class Obligation:
    """Work a withdrawal creates (delete the recording, stop contacting ...), until marked done."""

    id: UUID
    scope: str
    kind: str
    opened_at: datetime
    done_at: datetime | None = None
    note: str | None = None

    def check_can_discharge(self) -> None:
        """An obligation is marked done once."""
        if self.done_at is not None:
            raise ObligationAlreadyDischarged("this obligation is already marked done")


@dataclass
class ConsentRecord:
    """Where consent for one scope stands, and how it got there."""

    scope: str
    state: str | None = None
    form_version: str | None = None
    form_sha256: str | None = None
    method: str | None = None
    attribution: str | None = None
    changed_at: datetime | None = None
    withdrawals: int = 0
    history: list[dict[str, object]] = field(default_factory=list)

    def check_can_request(self) -> None:
        """A request only makes sense when consent is not already pending or given."""
        if self.state == "given":
            raise ConsentAlreadyGiven("consent for this scope is already given", field="scope")
        if self.state == "requested":
            raise ConsentAlreadyRequested(
                "consent for this scope is already requested", field="scope"
            )

    def check_can_grant(self, form_version: str) -> None:
        """Grant from any state but given; while given, only on a different form version."""
        if self.state == "given" and self.form_version == form_version:
            raise ConsentAlreadyGiven(
                "consent for this scope is already given on this form version", field="scope"
            )

    def check_can_refuse(self) -> None:
        """Only a pending request can be refused."""
        if self.state != "requested":
            raise ConsentNotRequested("only a requested consent can be refused", field="scope")

    def check_can_expire(self) -> None:
        """A pending request or a given consent can lapse."""
        if self.state not in ("requested", "given"):
            raise ConsentNotRequested(
                "only a requested or given consent can expire", field="scope"
            )

    def check_can_withdraw(self) -> None:
        """Only a given consent can be withdrawn (withdrawing is otherwise never blocked)."""
        if self.state == "withdrawn":
            raise ConsentAlreadyWithdrawn(
                "consent for this scope is already withdrawn", field="scope"
            )
        if self.state != "given":
            raise ConsentNotGiven("consent for this scope was never given", field="scope")

    def record(self, state: str, at: datetime, **details: object) -> None:
        """Move to ``state`` and keep the step in the history."""
        self.state = state
        self.changed_at = at
        self.history.append({"state": state, "at": at, **details})
