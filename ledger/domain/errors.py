"""Domain errors. Every error the ledger raises on purpose derives from ``LedgerError``.

::

    LedgerError
    ├── NotFound                       the thing named does not exist (HTTP 404)
    │   ├── StudyNotFound, ParticipantNotFound, AccessNeedNotFound,
    │   ├── PaymentNotFound, ObligationNotFound, LinkNotFound
    │   ├── LinkNoLongerWorks          (410 on the participant pages)
    │   │   └── LinkOfErasedPerson     the person was erased: no new link can come
    │   └── NotErased                  no erasure receipt: the person was not erased
    ├── InvalidInput                   the request itself is wrong (HTTP 422)
    │   ├── UnknownScope, UnknownActivity, UnregisteredFormVersion
    │   ├── InvalidAmount, UnsupportedCurrency, InvalidChoice, InvalidText
    │   └── ReasonRequired, AttributionRequired, AttributionNotApplicable
    ├── InvalidTransition              not allowed in the current state (HTTP 409)
    │   ├── ConsentAlreadyGiven, ConsentAlreadyRequested, ConsentNotGiven,
    │   │   ConsentAlreadyWithdrawn, ConsentNotRequested
    │   ├── NeedAlreadyMet, ObligationAlreadyDischarged
    │   ├── PaymentAlreadyRecorded, PaymentDeclinedByParticipant, PaymentAlreadyReversed,
    │   │   PaymentAlreadyDeclined
    │   ├── ParticipantErased, FormVersionAlreadyRegistered, DuplicateId, IdempotencyKeyUsed,
    │   │   NoLiveLink
    │   ├── ErasureRefused             the study's rules say the data must be kept for now
    ├── ConcurrentUpdate               lost a race with another writer too often (HTTP 409)
    └── ViewsBehind                    the views have not caught up with a write yet (HTTP 503)

Messages name fields and allowed values, never personal data: they reach HTTP error bodies.
"""

from __future__ import annotations


class LedgerError(Exception):
    """Base of every deliberate ledger error; ``field`` names the offending input, if any."""

    field: str | None = None

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if field is not None:
            self.field = field


class NotFound(LedgerError):
    """The thing named does not exist."""


class StudyNotFound(NotFound):
    """No study has been set up (run ``ledger init``)."""


class ParticipantNotFound(NotFound):
    """No participant with that id."""


class AccessNeedNotFound(NotFound):
    """No access need with that id for this participant."""


class PaymentNotFound(NotFound):
    """No payment with that id for this participant."""


class ObligationNotFound(NotFound):
    """No follow-up obligation with that id for this participant."""


class LinkNotFound(NotFound):
    """No withdrawal link with that token (or the token is malformed)."""


class LinkNoLongerWorks(NotFound):
    """The withdrawal link was replaced, revoked or has expired (HTTP 410 on the pages)."""


class LinkOfErasedPerson(LinkNoLongerWorks):
    """The link's person was erased: nothing of theirs is left, and no new link can be sent."""


class NotErased(NotFound):
    """The participant has not been erased, so there is no erasure receipt."""


class InvalidInput(LedgerError):
    """The request is malformed or names something the study does not have."""


class UnknownScope(InvalidInput):
    """The scope is not one of the study's consent scopes."""

    field = "scope"


class UnknownActivity(InvalidInput):
    """The activity is not one of the study's activities."""

    field = "activity"


class UnregisteredFormVersion(InvalidInput):
    """The consent form version has not been registered."""

    field = "form_version"


class InvalidAmount(InvalidInput):
    """An amount is not a positive whole number of pence."""

    field = "amount"


class UnsupportedCurrency(InvalidInput):
    """Only GBP is supported."""

    field = "currency"


class InvalidChoice(InvalidInput):
    """A value is not one of the allowed words for its field."""


class InvalidText(InvalidInput):
    """A text field is empty or too long."""


class ReasonRequired(InvalidInput):
    """A reason must be given (e.g. when a payment differs from the rate)."""

    field = "reason"


class AttributionRequired(InvalidInput):
    """Consent to be quoted says whether the person is named or anonymous."""

    field = "attribution"


class AttributionNotApplicable(InvalidInput):
    """Attribution only applies to scopes that quote the person."""

    field = "attribution"


class InvalidTransition(LedgerError):
    """The command is not allowed in the current state."""


class ConsentAlreadyGiven(InvalidTransition):
    """Consent for this scope is already given on this form version."""

    field = "scope"


class ConsentAlreadyRequested(InvalidTransition):
    """Consent for this scope has already been requested and awaits an answer."""

    field = "scope"


class ConsentNotGiven(InvalidTransition):
    """Consent for this scope was never given, so it cannot be withdrawn."""

    field = "scope"


class ConsentAlreadyWithdrawn(InvalidTransition):
    """Consent for this scope has already been withdrawn."""

    field = "scope"


class ConsentNotRequested(InvalidTransition):
    """Only a requested (pending) consent can be refused or expire unanswered."""

    field = "scope"


class NeedAlreadyMet(InvalidTransition):
    """The access need was met; its outcome is final."""

    field = "outcome"


class ObligationAlreadyDischarged(InvalidTransition):
    """The follow-up obligation was already marked done."""


class PaymentAlreadyRecorded(InvalidTransition):
    """This participant has already been paid for this activity (and it was not reversed)."""

    field = "activity"


class PaymentDeclinedByParticipant(InvalidTransition):
    """The participant declined payment for this activity."""

    field = "activity"


class PaymentAlreadyDeclined(InvalidTransition):
    """The participant has already declined payment for this activity."""

    field = "activity"


class PaymentAlreadyReversed(InvalidTransition):
    """The payment has already been reversed."""


class ParticipantErased(InvalidTransition):
    """The participant's personal data was erased; nothing more can be recorded for them."""


class ErasureRefused(InvalidTransition):
    """The study's rules say this person's data must be kept for now (e.g. finance retention
    of payment records); the message says until when."""


class FormVersionAlreadyRegistered(InvalidTransition):
    """A consent form version is registered once; register a new version instead."""

    field = "version"


class DuplicateId(InvalidTransition):
    """An id given for a new item is already in use."""


class NoLiveLink(InvalidTransition):
    """There is no live withdrawal link to revoke."""


class IdempotencyKeyUsed(InvalidTransition):
    """Another request with the same Idempotency-Key was recorded first."""


class ConcurrentUpdate(LedgerError):
    """Another writer changed the same record at the same moment too many times in a row."""


class ViewsBehind(LedgerError):
    """The views do not include a write the client asked to see yet (try again shortly)."""
