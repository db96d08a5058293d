"""A participant: who they are (sealed personal data), their consents, access needs and
payment arrangements. One aggregate per person, so every rule about a person is checked against
one consistent version of their record."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

from eventsourcing.domain import Aggregate, event

from .access import AccessNeed, check_need_request
from .base import REDACTED, FastCopy, derived_id, personal, topic
from .consent import ConsentRecord, Obligation
from .errors import (
    AccessNeedNotFound,
    AttributionNotApplicable,
    AttributionRequired,
    DuplicateId,
    InvalidText,
    LinkNoLongerWorks,
    LinkOfErasedPerson,
    NoLiveLink,
    ObligationNotFound,
    ParticipantErased,
    PaymentNotFound,
)
from .money import check_pence
from .remuneration import REASON_MAX, Arrangement, Payment
from .study import Activity, ConsentForm, Scope
from .vocab import (
    ATTRIBUTIONS,
    CONSENT_METHODS,
    PARTICIPANT_LINK,
    PAYMENT_METHODS,
    STAFF_WITHDRAWAL_CHANNELS,
    check_choice,
    check_text,
)

NAME_MAX = 200
IMPLIED_PAYEE = {"charity_donation": "charity", "third_party": "third_party"}
EMAIL_MAX = 254
PHONE_MAX = 40
COMMUNITY_MAX = 80
COMMUNITIES_MAX = 20
USE_PURPOSE_MAX = 500


@dataclass
class WithdrawalLink:
    """The person's current withdrawal link: when it was issued, when it expires."""

    id: UUID
    issued_at: datetime
    expires_at: datetime
    revoked_at: datetime | None = None


@dataclass(frozen=True)
class PersonalDetails:
    """Checked registration details."""

    name: str
    email: str | None
    phone: str | None
    communities: list[str]
    preferred_contact: str | None

    @classmethod
    def check(
        cls, name: object, email: object, phone: object, communities: object,
        preferred_contact: object,
    ) -> PersonalDetails:
        """Validate registration input, naming the offending field."""
        n = check_text("name", name, max_length=NAME_MAX) or ""
        e = check_text("email", email, max_length=EMAIL_MAX, required=False)
        if e is not None and ("@" not in e or " " in e):
            raise InvalidText("email must be an email address", field="email")
        p = check_text("phone", phone, max_length=PHONE_MAX, required=False)
        if communities is None:
            communities = []
        if not isinstance(communities, list | tuple) or len(communities) > COMMUNITIES_MAX:
            raise InvalidText(
                f"communities must be a list of at most {COMMUNITIES_MAX} labels",
                field="communities",
            )
        cs = [check_text("communities", c, max_length=COMMUNITY_MAX) or "" for c in communities]
        pc = check_text("preferred_contact", preferred_contact, max_length=200, required=False)
        return cls(n, e, p, cs, pc)


class Participant(FastCopy, Aggregate):
    """One storyteller's record."""

    TOPIC = topic("Participant")

    class Created(Aggregate.Created):  # unused default; the library wants every topic explicit
        TOPIC = topic("Participant.Created")

    @classmethod
    def register(
        cls, *, id: UUID, study_id: UUID, reference: str, details: PersonalDetails,
        at: datetime, by: str,
    ) -> Participant:
        """Register a person; ``id`` and ``reference`` are random, never derived from their data."""
        return cls(
            id=id, study_id=study_id, reference=reference, name=details.name,
            email=details.email, phone=details.phone, communities=list(details.communities),
            preferred_contact=details.preferred_contact, at=at, by=by,
        )

    @event("Registered", topic=topic("Participant.Registered"))
    def __init__(
        self, id: UUID, study_id: UUID, reference: str, name: str, email: str | None, phone: str | None,
        communities: list[str], preferred_contact: str | None, at: datetime, by: str,
    ) -> None:
        self.study_id = study_id
        self.reference = reference
        self.name = name
        self.email = email
        self.phone = phone
        self.communities: Any = communities
        self.preferred_contact = preferred_contact
        self.registered_at = at
        self.consents: dict[str, ConsentRecord] = {}
        self.obligations: dict[UUID, Obligation] = {}
        self.needs: dict[UUID, AccessNeed] = {}
        self.arrangements: dict[str, Arrangement] = {}
        self.expenses: list[dict[str, Any]] = []
        self.erased_at: datetime | None = None
        self.link: WithdrawalLink | None = None
        self.uses: list[dict[str, Any]] = []

    # -- helpers -----------------------------------------------------------------------------

    def check_not_erased(self) -> None:
        """Nothing more is recorded for an erased person."""
        if self.erased_at is not None:
            raise ParticipantErased("this participant's data has been erased")

    def consent(self, scope: str) -> ConsentRecord:
        """The consent record for a scope (empty if nothing was recorded yet)."""
        return self.consents.get(scope) or ConsentRecord(scope)

    def arrangement(self, activity: str) -> Arrangement:
        """The payment arrangement for an activity (empty if none was made)."""
        return self.arrangements.get(activity) or Arrangement(activity)

    def _consent_for_update(self, scope: str) -> ConsentRecord:
        return self.consents.setdefault(scope, ConsentRecord(scope))

    def _arrangement_for_update(self, activity: str) -> Arrangement:
        return self.arrangements.setdefault(activity, Arrangement(activity))

    # -- consent -----------------------------------------------------------------------------

    def request_consent(self, scope: Scope, form: ConsentForm, *, at: datetime, by: str) -> None:
        """Record that consent was asked for (pending the person's answer)."""
        self.check_not_erased()
        self.consent(scope.name).check_can_request()
        self._consent_requested(scope.name, form.version, form.sha256, at, by)

    @event("ConsentRequested", topic=topic("Participant.ConsentRequested"))
    def _consent_requested(
        self, scope: str, form_version: str, form_sha256: str, at: datetime, by: str
    ) -> None:
        c = self._consent_for_update(scope)
        c.form_version, c.form_sha256 = form_version, form_sha256
        c.record("requested", at, by=by, form_version=form_version)

    def grant_consent(
        self, scope: Scope, form: ConsentForm, method: object, attribution: object = None,
        *, at: datetime, by: str,
    ) -> None:
        """Record consent given: how it was given, on which form version, and attribution."""
        self.check_not_erased()
        check_choice("method", method, CONSENT_METHODS)
        if scope.takes_attribution:
            if attribution is None:  # the person chooses; the ledger does not choose for them
                raise AttributionRequired(
                    f"attribution (named or anonymous) is required for {scope.name}",
                    field="attribution")
            check_choice("attribution", attribution, ATTRIBUTIONS)
        elif attribution is not None:
            raise AttributionNotApplicable(
                f"attribution does not apply to the {scope.name} scope", field="attribution"
            )
        self.consent(scope.name).check_can_grant(form.version)
        self._consent_granted(
            scope.name, form.version, form.sha256, str(method),
            attribution if isinstance(attribution, str) else None, at, by,
        )

    @event("ConsentGranted", topic=topic("Participant.ConsentGranted"))
    def _consent_granted(
        self, scope: str, form_version: str, form_sha256: str, method: str,
        attribution: str | None, at: datetime, by: str,
    ) -> None:
        c = self._consent_for_update(scope)
        c.form_version, c.form_sha256 = form_version, form_sha256
        c.method, c.attribution = method, attribution
        c.record("given", at, by=by, method=method, form_version=form_version,
                 form_sha256=form_sha256, attribution=attribution)

    def refuse_consent(self, scope: Scope, *, at: datetime, by: str) -> None:
        """Record that the person said no to a requested consent."""
        self.check_not_erased()
        self.consent(scope.name).check_can_refuse()
        self._consent_refused(scope.name, at, by)

    @event("ConsentRefused", topic=topic("Participant.ConsentRefused"))
    def _consent_refused(self, scope: str, at: datetime, by: str) -> None:
        self._consent_for_update(scope).record("refused", at, by=by)

    def expire_consent(self, scope: Scope, *, at: datetime, by: str) -> None:
        """Record that a requested or given consent lapsed."""
        self.check_not_erased()
        self.consent(scope.name).check_can_expire()
        self._consent_expired(scope.name, at, by)

    @event("ConsentExpired", topic=topic("Participant.ConsentExpired"))
    def _consent_expired(self, scope: str, at: datetime, by: str) -> None:
        self._consent_for_update(scope).record("expired", at, by=by)

    def withdraw_consent(
        self, scope: Scope, channel: object, reason: object = None, *, at: datetime, by: str
    ) -> list[Obligation]:
        """Withdraw consent for a scope at the person's request, recorded by staff: the channel
        says how the request reached the team (never the person's own link, which only
        ``withdraw_through_link`` records). Opens the follow-up obligations; flags a late
        withdrawal."""
        check_choice("channel", channel, STAFF_WITHDRAWAL_CHANNELS)
        return self._withdraw(scope, str(channel), reason, at=at, by=by)

    def _withdraw(
        self, scope: Scope, channel: str, reason: object, *, at: datetime, by: str
    ) -> list[Obligation]:
        self.check_not_erased()
        why = check_text("reason", reason, max_length=REASON_MAX, required=False)
        record = self.consent(scope.name)
        record.check_can_withdraw()
        n = record.withdrawals + 1
        obligations: list[dict[str, Any]] = [
            {"id": derived_id("obligation", self.id, scope.name, n, kind), "kind": kind}
            for kind in scope.obligations
        ]
        self._consent_withdrawn(
            scope.name, str(channel), why, scope.is_past_deadline(at), obligations, at, by,
            scope.withdrawal_deadline,
        )
        return [self.obligations[o["id"]] for o in obligations]  # type: ignore[index]

    @event("ConsentWithdrawn", topic=topic("Participant.ConsentWithdrawn"))
    def _consent_withdrawn(
        self, scope: str, channel: str, reason: str | None, past_deadline: bool,
        obligations: list[dict[str, Any]], at: datetime, by: str,
        withdrawal_deadline: datetime | None = None,
    ) -> None:
        # ``withdrawal_deadline``: the scope's deadline the withdrawal was held against (its
        # past_deadline), kept because the study's may change later; absent (None) from
        # withdrawals recorded before 6 Dec 2026, which did not keep it.
        c = self._consent_for_update(scope)
        c.withdrawals += 1
        details: dict[str, Any] = {"channel": channel, "reason": reason,
                                   "past_deadline": past_deadline}
        if withdrawal_deadline is not None:
            details["withdrawal_deadline"] = withdrawal_deadline
        c.record("withdrawn", at, by=by, **details)
        for o in obligations:
            self.obligations[o["id"]] = Obligation(o["id"], scope, o["kind"], at)

    def discharge_obligation(
        self, obligation_id: UUID, note: object = None, *, at: datetime, by: str
    ) -> None:
        """Mark a follow-up obligation done."""
        try:
            obligation = self.obligations[obligation_id]
        except KeyError:
            raise ObligationNotFound("no such obligation for this participant") from None
        obligation.check_can_discharge()
        n = check_text("note", note, max_length=REASON_MAX, required=False)
        if n is not None:
            # Follow-up work (deleting a recording) is still marked done after an erasure, but
            # nothing personal can be written for the person any more: a note could be.
            self.check_not_erased()
        self._obligation_discharged(obligation_id, n, at, by)

    @event("ObligationDischarged", topic=topic("Participant.ObligationDischarged"))
    def _obligation_discharged(
        self, obligation_id: UUID, note: str | None, at: datetime, by: str
    ) -> None:
        o = self.obligations[obligation_id]
        o.done_at, o.note = at, note

    # -- access needs ------------------------------------------------------------------------

    def request_access_need(
        self, need_id: UUID, category: object, detail: object, *, at: datetime, by: str
    ) -> None:
        """Record an access need in the person's own words."""
        self.check_not_erased()
        c, d = check_need_request(category, detail)
        if need_id in self.needs:
            raise DuplicateId("this access need id is already in use", field="need_id")
        self._need_requested(need_id, c, d, at, by)

    @event("AccessNeedRequested", topic=topic("Participant.AccessNeedRequested"))
    def _need_requested(
        self, need_id: UUID, category: str, detail: str, at: datetime, by: str
    ) -> None:
        self.needs[need_id] = AccessNeed(need_id, category, detail, at)

    def record_access_outcome(
        self, need_id: UUID, outcome: object, note: object = None, *, at: datetime, by: str
    ) -> None:
        """Record whether an access need was met, partly met or not met."""
        self.check_not_erased()
        try:
            need = self.needs[need_id]
        except KeyError:
            raise AccessNeedNotFound("no such access need for this participant") from None
        o, n = need.check_can_record_outcome(outcome, note)
        self._need_outcome(need_id, o, n, at, by)

    @event("AccessNeedOutcomeRecorded", topic=topic("Participant.AccessNeedOutcomeRecorded"))
    def _need_outcome(
        self, need_id: UUID, outcome: str, note: str | None, at: datetime, by: str
    ) -> None:
        need = self.needs[need_id]
        need.outcome, need.note, need.outcome_at = outcome, note, at
        if outcome == "met":
            need.met_at = at
        need.history.append({"outcome": outcome, "at": at, "by": by, "note": note})

    # -- remuneration arrangements -----------------------------------------------------------

    def arrange_payment(
        self, activity: Activity, method: object, payee: object, benefits_advice_offered: object,
        *, at: datetime, by: str,
    ) -> None:
        """Record how the person wants to be paid for an activity (this undoes a decline)."""
        self.check_not_erased()
        self.arrangement(activity.name).check_can_arrange(method, payee, benefits_advice_offered)
        self._payment_arranged(
            activity.name, str(method), str(payee), bool(benefits_advice_offered), at, by
        )

    @event("PaymentArranged", topic=topic("Participant.PaymentArranged"))
    def _payment_arranged(
        self, activity: str, method: str, payee: str, benefits_advice_offered: bool,
        at: datetime, by: str,
    ) -> None:
        a = self._arrangement_for_update(activity)
        a.method, a.payee, a.benefits_advice_offered = method, payee, benefits_advice_offered
        if a.declined:  # the decline's reason no longer stands; a reduction's, if any, does
            reduced = [s for s in a.history if s.get("event") == "reduced"]
            a.reason = reduced[-1]["reason"] if reduced else None  # type: ignore[assignment]
        a.declined = False
        a.history.append({"event": "arranged", "at": at, "by": by, "method": method,
                          "payee": payee, "benefits_advice_offered": benefits_advice_offered})

    def decline_payment(
        self, activity: Activity, reason: object = None, *, at: datetime, by: str,
    ) -> None:
        """Record that the person declined payment for an activity (before being paid)."""
        self.check_not_erased()
        self.arrangement(activity.name).check_can_decline()
        why = check_text("reason", reason, max_length=REASON_MAX, required=False)
        self._payment_declined(activity.name, why, at, by)

    @event("PaymentDeclined", topic=topic("Participant.PaymentDeclined"))
    def _payment_declined(self, activity: str, reason: str | None, at: datetime, by: str) -> None:
        a = self._arrangement_for_update(activity)
        a.declined, a.reason = True, reason
        a.history.append({"event": "declined", "at": at, "by": by, "reason": reason})

    def reduce_payment(
        self, activity: Activity, amount_pence: int, reason: object, *, at: datetime, by: str
    ) -> None:
        """Record that the person asked for less than the rate (e.g. because of benefits)."""
        self.check_not_erased()
        why = self.arrangement(activity.name).check_can_reduce(activity, amount_pence, reason)
        self._payment_reduced(activity.name, amount_pence, why, at, by)

    @event("PaymentReduced", topic=topic("Participant.PaymentReduced"))
    def _payment_reduced(
        self, activity: str, amount_pence: int, reason: str, at: datetime, by: str
    ) -> None:
        a = self._arrangement_for_update(activity)
        a.reduced_to_pence, a.reason = amount_pence, reason
        a.history.append({"event": "reduced", "at": at, "by": by, "amount_pence": amount_pence,
                          "reason": reason})

    def pay(
        self, activity: Activity, amount_pence: int, currency: object, method: object,
        reference: object = None, reason: object = None, *, at: datetime, by: str,
    ) -> Payment:
        """Record a payment: the new Payment, noted here too. Save both together."""
        self.check_not_erased()
        payment = Payment.record(
            participant_id=self.id, activity=activity, arrangement=self.arrangement(activity.name),
            amount_pence=amount_pence, currency=currency, method=method, reference=reference,
            reason=reason, at=at, by=by,
        )
        self._payment_noted(activity.name, payment.id, payment.slot, payment.method, at, by)
        return payment

    @event("PaymentNoted", topic=topic("Participant.PaymentNoted"))
    def _payment_noted(
        self, activity: str, payment_id: UUID, slot: int, method: str, at: datetime, by: str
    ) -> None:
        a = self._arrangement_for_update(activity)
        a.payments.append(payment_id)
        a.paid = payment_id
        if a.method is None:  # a payment without an arrangement implies one
            a.method = method
            a.payee = IMPLIED_PAYEE.get(method, "self")
        a.history.append({"event": "paid", "at": at, "by": by, "payment_id": payment_id})

    def reverse_payment(self, payment: Payment, reason: object, *, at: datetime, by: str) -> None:
        """Reverse one of this person's payments; the activity can then be paid again."""
        self.check_not_erased()
        if payment.participant_id != self.id or payment.id not in self.arrangement(
                payment.activity).payments:
            raise PaymentNotFound("no such payment for this participant")
        payment.reverse(reason, at=at, by=by)
        self._payment_reversal_noted(payment.activity, payment.id, at, by)

    @event("PaymentReversalNoted", topic=topic("Participant.PaymentReversalNoted"))
    def _payment_reversal_noted(
        self, activity: str, payment_id: UUID, at: datetime, by: str
    ) -> None:
        a = self._arrangement_for_update(activity)
        if a.paid == payment_id:
            a.paid = None
        a.history.append({"event": "reversed", "at": at, "by": by, "payment_id": payment_id})

    def payment_ids(self) -> list[UUID]:
        """Every payment recorded for this person, activity by activity."""
        return [pid for a in self.arrangements.values() for pid in a.payments]

    def record_expense(
        self, expense_id: UUID, activity: Activity, amount_pence: int, method: object,
        description: object, *, at: datetime, by: str,
    ) -> None:
        """Record an expense (travel, care, data) as its own line, never mixed with the fee."""
        self.check_not_erased()
        check_pence(amount_pence)
        check_choice("method", method, PAYMENT_METHODS)
        d = check_text("description", description, max_length=REASON_MAX) or ""
        if any(e["id"] == expense_id for e in self.expenses):
            raise DuplicateId("this expense id is already in use", field="expense_id")
        self._expense_recorded(expense_id, activity.name, amount_pence, str(method), d, at, by)

    @event("ExpenseRecorded", topic=topic("Participant.ExpenseRecorded"))
    def _expense_recorded(
        self, expense_id: UUID, activity: str, amount_pence: int, method: str,
        description: str, at: datetime, by: str,
    ) -> None:
        self.expenses.append({"id": expense_id, "activity": activity, "amount_pence": amount_pence,
                              "method": method, "description": description, "at": at})

    # -- the personal withdrawal link ---------------------------------------------------------

    def record_use(self, scope: Scope, purpose: object, attribution: object = None, *,
                   at: datetime, by: str) -> dict[str, Any]:
        """Record that the person's story was used under ``scope`` (e.g. quoted in a report).

        A use is a fact, so it is never refused for want of consent: it is recorded with the
        consent state it met and, for a scope that quotes the person, whether the use named
        them and what they had agreed to (named or anonymous); reports flag any use made
        without the consent it needed. Returns the use as recorded."""
        self.check_not_erased()
        what = check_text("purpose", purpose, max_length=USE_PURPOSE_MAX) or ""
        if attribution is not None:
            if not scope.takes_attribution:
                raise AttributionNotApplicable(
                    f"attribution does not apply to the {scope.name} scope", field="attribution")
            check_choice("attribution", attribution, ATTRIBUTIONS)
        c = self.consent(scope.name)
        self._used(scope.name, what, c.state, at, by,
                   attribution if isinstance(attribution, str) else None,
                   c.attribution if scope.takes_attribution and c.state == "given" else None)
        return self.uses[-1]

    @event("StoryUsed", topic=topic("Participant.StoryUsed"))
    def _used(self, scope: str, purpose: str, consent_state: str | None, at: datetime,
              by: str, attribution: str | None = None,
              consented_attribution: str | None = None) -> None:
        # (the two attribution fields are absent from uses recorded before 6 Dec 2026: None)
        self.uses.append({"scope": scope, "purpose": purpose, "consent_state": consent_state,
                          "at": at, "by": by, "attribution": attribution,
                          "consented_attribution": consented_attribution})

    def issue_withdrawal_link(self, link_id: UUID, expires_at: datetime, *, at: datetime,
                              by: str) -> None:
        """Issue a personal link (its token is never recorded here); any earlier link stops working."""
        self.check_not_erased()
        if expires_at <= at:
            raise InvalidText("a link must expire in the future", field="expires_at")
        self._link_issued(link_id, expires_at, at, by)

    @event("WithdrawalLinkIssued", topic=topic("Participant.WithdrawalLinkIssued"))
    def _link_issued(self, link_id: UUID, expires_at: datetime, at: datetime, by: str) -> None:
        self.link = WithdrawalLink(link_id, at, expires_at)

    def revoke_withdrawal_link(self, *, at: datetime, by: str) -> None:
        """Stop the current link from working."""
        if self.link is None or self.link.revoked_at is not None:
            raise NoLiveLink("this participant has no link to revoke")
        self._link_revoked(self.link.id, at, by)

    @event("WithdrawalLinkRevoked", topic=topic("Participant.WithdrawalLinkRevoked"))
    def _link_revoked(self, link_id: UUID, at: datetime, by: str) -> None:
        if self.link is not None and self.link.id == link_id:
            self.link.revoked_at = at

    def withdraw_through_link(self, link_id: UUID, scopes: list[Scope], *, at: datetime,
                              by: str) -> dict[str, list[str]]:
        """The person stops the given scopes themselves. Withdrawing is never blocked: a scope
        already withdrawn is reported as done (nothing is written again), one never given as such."""
        self.check_link(link_id, at)
        done: dict[str, list[str]] = {"withdrawn": [], "already": [], "not_given": []}
        for scope in {s.name: s for s in scopes}.values():
            state = self.consent(scope.name).state
            if state == "given":
                self._withdraw(scope, PARTICIPANT_LINK, None, at=at, by=by)
                done["withdrawn"].append(scope.name)
            else:
                done["already" if state == "withdrawn" else "not_given"].append(scope.name)
        return done

    def check_link(self, link_id: UUID, now: datetime) -> None:
        """The link opens this person's page only if it is their current, unexpired link."""
        if self.erased_at is not None:
            raise LinkOfErasedPerson("this link has been stopped")
        if self.link is None or self.link.id != link_id or self.link.revoked_at is not None:
            raise LinkNoLongerWorks("this link has been replaced or stopped")
        if now >= self.link.expires_at:
            raise LinkNoLongerWorks("this link has expired")

    # -- erasure -----------------------------------------------------------------------------

    def erase(self, reason: object, *, at: datetime, by: str) -> None:
        """Mark the person erased; the caller destroys their data key in the same breath."""
        self.check_not_erased()
        why = check_text("reason", reason, max_length=500) or ""
        self._erased(why, at, by)

    @event("Erased", topic=topic("Participant.Erased"))
    def _erased(self, reason: str, at: datetime, by: str) -> None:
        self.erased_at = at
        # In memory too, forget what the store can no longer decrypt.
        self.name = REDACTED
        self.email = REDACTED if self.email is not None else None
        self.phone = REDACTED if self.phone is not None else None
        self.communities = REDACTED
        self.preferred_contact = REDACTED if self.preferred_contact is not None else None
        for need in self.needs.values():
            need.category, need.detail = REDACTED, REDACTED
            need.note = REDACTED if need.note is not None else None
            for step in need.history:
                if step.get("note") is not None:
                    step["note"] = REDACTED
        for o in self.obligations.values():
            o.note = REDACTED if o.note is not None else None
        for c in self.consents.values():
            for step in c.history:
                if step.get("reason") is not None:
                    step["reason"] = REDACTED
        for a in self.arrangements.values():
            a.reason = REDACTED if a.reason is not None else None
            for step in a.history:
                if step.get("reason") is not None:
                    step["reason"] = REDACTED
        for e in self.expenses:
            e["description"] = REDACTED
        for u in self.uses:
            u["purpose"] = REDACTED


personal("Registered", "name", "email", "phone", "communities", "preferred_contact",
         subject="originator_id", aggregate=Participant)
personal("ConsentWithdrawn", "reason", subject="originator_id", aggregate=Participant)
personal("ObligationDischarged", "note", subject="originator_id", aggregate=Participant)
personal("AccessNeedRequested", "category", "detail", subject="originator_id", aggregate=Participant)
personal("AccessNeedOutcomeRecorded", "note", subject="originator_id", aggregate=Participant)
personal("PaymentDeclined", "reason", subject="originator_id", aggregate=Participant)
personal("PaymentReduced", "reason", subject="originator_id", aggregate=Participant)
personal("ExpenseRecorded", "description", subject="originator_id", aggregate=Participant)
# The erasure's reason is free text about the person, so it is erased with everything else; the
# event keeps who erased and when.
personal("StoryUsed", "purpose", subject="originator_id", aggregate=Participant)
personal("Erased", "reason", subject="originator_id", aggregate=Participant)
