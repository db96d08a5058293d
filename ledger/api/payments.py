"""Remuneration: arrangements agreed with the person, reductions, payments, reversals, expenses.

``POST .../payments`` needs an ``Idempotency-Key``, and the other writes here take one: the
first response to a (token, key) pair is kept and replayed byte for byte; the same key with a
different request is 422 (see ``idempotent``).
"""

from __future__ import annotations

from typing import Any
from uuid import UUID

from flask.views import MethodView
from marshmallow import ValidationError, fields, validate, validates_schema

from ..domain.vocab import PAYEES, PAYMENT_METHODS
from ..idempotency import IdempotentRequest
from .auth import SECURITY, actor, require
from .common import ledger
from .fastdump import Schema
from .idempotent import idempotent, key_header, require_idempotency_key
from .parsing import Blueprint, StrictBoolean
from .participants import ArrangementOut, PaymentOut
from .schemas import document_errors

blp = Blueprint("payments", __name__, url_prefix="/api/v1", description="Remuneration")

def amount_field() -> fields.String:
    """An amount in pounds as a string ("25.00"); the domain checks its spelling and value."""
    return fields.String(required=True, validate=validate.Length(1, 20),
                         metadata={"example": "25.00", "pattern": r"^[0-9]{1,9}(\.[0-9]{1,2})?$"})


# What ``arranged_or_declined`` checks, said in the document (OpenAPI's ``required`` cannot say
# "required unless declined is true").
ARRANGED_OR_DECLINED = (
    "Either what was agreed with the person, or that they declined. `method`, `payee` and "
    "`benefits_advice_offered` are required unless `declined` is true (422 naming each one "
    "missing), and refused (422 naming each one given) when it is. `reason` (why they "
    "declined, optional) is used only when `declined` is true; otherwise it is refused unless "
    "null.")
UNLESS_DECLINED = "required unless declined is true; refused when declined is true"


class ArrangementIn(Schema):
    class Meta:
        description = ARRANGED_OR_DECLINED

    activity = fields.String(required=True, validate=validate.Length(1, 40))
    method = fields.String(validate=validate.OneOf(PAYMENT_METHODS),
                           metadata={"description": f"how the person will be paid: {UNLESS_DECLINED}"})
    payee = fields.String(validate=validate.OneOf(PAYEES),
                          metadata={"description": f"who receives the payment: {UNLESS_DECLINED}"})
    benefits_advice_offered = StrictBoolean(metadata={
        "description": f"whether advice on benefits was offered: {UNLESS_DECLINED}"})
    declined = StrictBoolean(load_default=False, metadata={
        "description": "true: the person declined payment for this activity (then method, payee "
                       "and benefits_advice_offered must be left out); default false"})
    reason = fields.String(validate=validate.Length(max=2000), allow_none=True, metadata={
        "description": "why they declined (optional): only with declined true, else refused "
                       "unless null"})

    @validates_schema
    def arranged_or_declined(self, data: dict[str, Any], **_: Any) -> None:
        """Either the person declined, or method, payee and advice were agreed."""
        if data.get("declined"):
            extra = [f for f in ("method", "payee", "benefits_advice_offered") if f in data]
            if extra:
                raise ValidationError({f: ["not used when declined is true"] for f in extra})
            return
        missing = [f for f in ("method", "payee", "benefits_advice_offered") if f not in data]
        if missing:
            raise ValidationError({f: ["Missing data for required field."] for f in missing})
        if data.get("reason") is not None:  # kept only with a decline: never accept and drop it
            raise ValidationError({"reason": ["only used when declined is true"]})


class ReductionIn(Schema):
    activity = fields.String(required=True, validate=validate.Length(1, 40))
    amount = amount_field()
    reason = fields.String(required=True, validate=validate.Length(1, 2000))


class PaymentIn(Schema):
    activity = fields.String(required=True, validate=validate.Length(1, 40))
    amount = amount_field()
    currency = fields.String(load_default="GBP", validate=validate.OneOf(["GBP"]))
    method = fields.String(required=True, validate=validate.OneOf(PAYMENT_METHODS))
    reference = fields.String(validate=validate.Length(max=200), allow_none=True)
    reason = fields.String(validate=validate.Length(max=2000), allow_none=True)


class ReversalIn(Schema):
    reason = fields.String(required=True, validate=validate.Length(1, 2000))


class ExpenseIn(Schema):
    activity = fields.String(required=True, validate=validate.Length(1, 40))
    amount = amount_field()
    method = fields.String(required=True, validate=validate.OneOf(PAYMENT_METHODS))
    description = fields.String(required=True, validate=validate.Length(1, 2000))


class ExpenseCreated(Schema):
    expense_id = fields.UUID(required=True, dump_only=True)


PAYMENT_OUT = PaymentOut()  # schemas are stateless once built; building one per request is slow
ARRANGEMENT_OUT = ArrangementOut()


@blp.route("/participants/<uuid:participant_id>/payment-arrangements")
class Arrangements(MethodView):
    @require("staff")
    @blp.doc(security=SECURITY, parameters=[key_header(required=False)])
    @blp.arguments(ArrangementIn())
    @blp.response(201, ArrangementOut)
    @document_errors(blp, 404, 409)
    @idempotent(ARRANGEMENT_OUT, 201)
    def post(self, body: dict[str, Any], participant_id: UUID,
             once: IdempotentRequest | None) -> dict[str, Any]:
        """Record how the person wants to be paid for an activity, or that they declined.

        Either `declined: true` (with an optional `reason`), or all of `method`, `payee` and
        `benefits_advice_offered`: those three are required unless `declined` is true, and
        refused (422) when it is; a `reason` other than null is refused unless `declined` is
        true."""
        if body["declined"]:
            return ledger().decline_payment(participant_id, body["activity"], body.get("reason"),
                                            by=actor(), idempotent=once)
        return ledger().arrange_payment(participant_id, body["activity"], body["method"],
                                        body["payee"], body["benefits_advice_offered"],
                                        by=actor(), idempotent=once)


@blp.route("/participants/<uuid:participant_id>/payment-reductions")
class Reductions(MethodView):
    @require("staff")
    @blp.doc(security=SECURITY, parameters=[key_header(required=False)])
    @blp.arguments(ReductionIn())
    @blp.response(201, ArrangementOut)
    @document_errors(blp, 404, 409)
    @idempotent(ARRANGEMENT_OUT, 201)
    def post(self, body: dict[str, Any], participant_id: UUID,
             once: IdempotentRequest | None) -> dict[str, Any]:
        """Record that the person asked to be paid less than the rate, and why."""
        return ledger().reduce_payment(participant_id, body["activity"], body["amount"],
                                       body["reason"], by=actor(), idempotent=once)


@blp.route("/participants/<uuid:participant_id>/payments")
class Payments(MethodView):
    @require("staff")
    @require_idempotency_key
    @blp.doc(security=SECURITY, parameters=[key_header(required=True)])
    @blp.arguments(PaymentIn())
    @blp.response(201, PaymentOut)
    @document_errors(blp, 400, 404, 409)
    @idempotent(PAYMENT_OUT, 201, named=False)
    def post(self, body: dict[str, Any], participant_id: UUID,
             once: IdempotentRequest | None) -> dict[str, Any]:
        """Record a payment (needs Idempotency-Key); one per participant and activity."""
        return ledger().record_payment(
            participant_id, body["activity"], body["amount"], body["method"],
            currency=body["currency"], reference=body.get("reference"),
            reason=body.get("reason"), by=actor(), idempotent=once)


@blp.route("/participants/<uuid:participant_id>/payments/<uuid:payment_id>/reversal")
class Reversal(MethodView):
    @require("staff")
    @blp.doc(security=SECURITY, parameters=[key_header(required=False)])
    @blp.arguments(ReversalIn())
    @blp.response(201, PaymentOut)
    @document_errors(blp, 404, 409)
    @idempotent(PAYMENT_OUT, 201)
    def post(self, body: dict[str, Any], participant_id: UUID, payment_id: UUID,
             once: IdempotentRequest | None) -> dict[str, Any]:
        """Reverse a payment (e.g. the transfer bounced); the activity can then be paid again."""
        return ledger().reverse_payment(participant_id, payment_id, body["reason"], by=actor(),
                                        idempotent=once)


@blp.route("/participants/<uuid:participant_id>/expenses")
class Expenses(MethodView):
    @require("staff")
    @blp.doc(security=SECURITY, parameters=[key_header(required=False)])
    @blp.arguments(ExpenseIn())
    @blp.response(201, ExpenseCreated)
    @document_errors(blp, 404, 409)
    @idempotent(ExpenseCreated(), 201, shape=lambda expense_id: {"expense_id": expense_id})
    def post(self, body: dict[str, Any], participant_id: UUID,
             once: IdempotentRequest | None) -> dict[str, Any]:
        """Record an expense (travel, care, data) as its own line, separate from the fee."""
        expense_id = ledger().record_expense(participant_id, body["activity"], body["amount"],
                                             body["method"], body["description"], by=actor(),
                                             idempotent=once)
        return {"expense_id": expense_id}
