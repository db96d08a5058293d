"""Remuneration: what was agreed with a person for an activity, and the payments made.

The arrangement (method, payee, declined, reduced) lives on the participant. Each payment is its
own aggregate whose id is derived from (participant, activity, slot): the store's primary key then
guarantees at most one payment per slot, and a new slot opens only after the previous payment in
it was reversed. That is how "at most one payment per participant per activity unless reversed"
holds across threads, workers and hosts without a check-then-write.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from uuid import UUID

from eventsourcing.domain import Aggregate, event

from .base import FastCopy, derived_id, personal, topic
from .errors import (
    InvalidAmount,
    InvalidChoice,
    PaymentAlreadyDeclined,
    PaymentAlreadyRecorded,
    PaymentAlreadyReversed,
    PaymentDeclinedByParticipant,
    ReasonRequired,
)
from .money import CURRENCY, check_currency, check_pence
from .study import Activity
from .vocab import PAYEES, PAYMENT_METHODS, check_choice, check_text

REFERENCE_MAX = 200
REASON_MAX = 2000


@dataclass
class Arrangement:
    """How a person will be paid for one activity, as worked out with them."""

    activity: str
    method: str | None = None
    payee: str | None = None
    benefits_advice_offered: bool | None = None
    declined: bool = False
    reduced_to_pence: int | None = None
    reason: str | None = None
    payments: list[UUID] = field(default_factory=list)  # every slot used, in order
    paid: UUID | None = None  # the payment not reversed, if any
    history: list[dict[str, object]] = field(default_factory=list)

    def expected_pence(self, activity: Activity) -> int:
        """The amount due: the activity's rate, or the reduced amount the person asked for if that
        is less (a rate lowered below it since is what is due: they asked for no more than it)."""
        if self.reduced_to_pence is None:
            return activity.rate_pence
        return min(self.reduced_to_pence, activity.rate_pence)

    def owed_since(self) -> object:
        """When the person became owed this payment (the ``at`` of a step): the first step after
        their last decline (an arrangement, a reduction, or a payment since reversed), not a
        decline they later changed their mind about. None while a decline stands."""
        declines = [i for i, step in enumerate(self.history) if step.get("event") == "declined"]
        since = self.history[declines[-1] + 1:] if declines else self.history
        return since[0]["at"] if since else None

    def check_can_arrange(self, method: object, payee: object, advice: object) -> None:
        """Method and payee come from the vocabularies; advice offered is yes or no."""
        check_choice("method", method, PAYMENT_METHODS)
        check_choice("payee", payee, PAYEES)
        if not isinstance(advice, bool):
            raise InvalidChoice("benefits_advice_offered must be true or false",
                                field="benefits_advice_offered")

    def check_not_paid(self) -> None:
        """Refuse while a payment for this activity stands (it must be reversed first)."""
        if self.paid is not None:
            raise PaymentAlreadyRecorded(
                "this participant has already been paid for this activity", field="activity"
            )

    def check_can_decline(self) -> None:
        """A person can decline until they have been paid."""
        if self.declined:
            raise PaymentAlreadyDeclined("payment for this activity is already declined")
        self.check_not_paid()

    def check_can_reduce(self, activity: Activity, pence: int, reason: object) -> str:
        """A reduction, at the person's request, is below the rate, has a reason, and comes
        before payment (and not after the person declined)."""
        self.check_not_paid()
        if self.declined:
            raise PaymentDeclinedByParticipant(
                "the participant declined payment for this activity", field="activity"
            )
        check_pence(pence)
        if pence >= activity.rate_pence:
            raise InvalidAmount("a reduced amount must be less than the rate", field="amount")
        return check_text("reason", reason, max_length=REASON_MAX) or ""

    def check_can_pay(self) -> None:
        """Not twice, and not after the person declined (unless they arranged payment again)."""
        self.check_not_paid()
        if self.declined:
            raise PaymentDeclinedByParticipant(
                "the participant declined payment for this activity", field="activity"
            )


class Payment(FastCopy, Aggregate):
    """One payment to one participant for one activity, in its slot."""

    TOPIC = topic("Payment")

    class Created(Aggregate.Created):  # unused default; the library wants every topic explicit
        TOPIC = topic("Payment.Created")

    @staticmethod
    def create_id(participant_id: UUID, activity: str, slot: int) -> UUID:
        """The store allows one payment per (participant, activity, slot)."""
        return derived_id("payment", participant_id, activity, slot)

    @classmethod
    def record(
        cls,
        *,
        participant_id: UUID,
        activity: Activity,
        arrangement: Arrangement,
        amount_pence: int,
        currency: object,
        method: object,
        reference: object,
        reason: object,
        at: datetime,
        by: str,
    ) -> Payment:
        """Check and record a payment in the arrangement's next slot.

        The amount differs from what is due (the rate, or the agreed reduction) only with a reason.
        Call through ``Participant.pay``, which notes the payment on the participant in the same
        save, so that declining, reducing and erasing are decided against it.
        """
        arrangement.check_can_pay()
        slot = len(arrangement.payments)
        check_pence(amount_pence)
        check_currency(currency)
        check_choice("method", method, PAYMENT_METHODS)
        ref = check_text("reference", reference, max_length=REFERENCE_MAX, required=False)
        why = check_text("reason", reason, max_length=REASON_MAX, required=False)
        expected = arrangement.expected_pence(activity)
        if amount_pence != expected and why is None:
            raise ReasonRequired(
                "reason is required when the amount differs from the amount due", field="reason"
            )
        return cls(
            participant_id=participant_id, activity=activity.name, slot=slot,
            amount_pence=amount_pence, currency=CURRENCY, method=str(method), reference=ref,
            reason=why, expected_pence=expected, at=at, by=by,
        )

    @event("Recorded", topic=topic("Payment.Recorded"))
    def __init__(
        self,
        participant_id: UUID,
        activity: str,
        slot: int,
        amount_pence: int,
        currency: object,
        method: str,
        reference: str | None,
        reason: str | None,
        expected_pence: int,
        at: datetime,
        by: str,
    ) -> None:
        self.participant_id = participant_id
        self.activity = activity
        self.slot = slot
        self.amount_pence = amount_pence
        self.currency = currency
        self.method = method
        self.reference = reference
        self.reason = reason
        self.expected_pence = expected_pence
        self.paid_at = at
        self.reversed_at: datetime | None = None
        self.reversal_reason: str | None = None

    @property
    def is_reversed(self) -> bool:
        """True once the payment has been reversed."""
        return self.reversed_at is not None

    def check_can_reverse(self) -> None:
        """A payment is reversed once."""
        if self.is_reversed:
            raise PaymentAlreadyReversed("this payment is already reversed")

    def reverse(self, reason: object, *, at: datetime, by: str) -> None:
        """Reverse the payment (e.g. it bounced); the activity can then be paid again."""
        self.check_can_reverse()
        why = check_text("reason", reason, max_length=REASON_MAX) or ""
        self._reversed(participant_id=self.participant_id, reason=why, at=at, by=by)

    @event("Reversed", topic=topic("Payment.Reversed"))
    def _reversed(self, participant_id: UUID, reason: str, at: datetime, by: str) -> None:
        self.reversed_at = at
        self.reversal_reason = reason


personal("Recorded", "reference", "reason", aggregate=Payment)
personal("Reversed", "reason", aggregate=Payment)
