"""Remuneration: arrangements agreed with the person, reductions, payments, reversals, expenses.

``POST .../payments`` needs an ``Idempotency-Key``: the first response to a (token, key) pair is
kept and replayed byte for byte; the same key with a different request is 422.
"""

from __future__ import annotations

import re
from functools import wraps
from typing import Any
from uuid import UUID

from flask import Response, g, json, request
from flask.views import MethodView
from marshmallow import ValidationError, fields, validate, validates_schema

from ..domain.errors import LedgerError
from ..domain.vocab import PAYEES, PAYMENT_METHODS
from ..idempotency import IdempotentRequest, Stored
from . import errors
from .auth import SECURITY, actor, require
from .common import ledger
from .fastdump import Schema
from .parsing import Blueprint, StrictBoolean
from .participants import ArrangementOut, PaymentOut
from .schemas import document_errors

blp = Blueprint("payments", __name__, url_prefix="/api/v1", description="Remuneration")

KEY_HEADER = {"in": "header", "name": "Idempotency-Key", "required": True,
              "schema": {"type": "string", "minLength": 1, "maxLength": 200,
                         "pattern": "^[\\x20-\\x2b\\x2d-\\x7e]{1,200}$"},
              "description": "a unique value per intended payment (e.g. a UUID)"}


def amount_field() -> fields.String:
    """An amount in pounds as a string ("25.00"); the domain checks its spelling and value."""
    return fields.String(required=True, validate=validate.Length(1, 20),
                         metadata={"example": "25.00", "pattern": r"^[0-9]{1,9}(\.[0-9]{1,2})?$"})


class ArrangementIn(Schema):
    activity = fields.String(required=True, validate=validate.Length(1, 40))
    method = fields.String(validate=validate.OneOf(PAYMENT_METHODS))
    payee = fields.String(validate=validate.OneOf(PAYEES))
    benefits_advice_offered = StrictBoolean()
    declined = StrictBoolean(load_default=False)
    reason = fields.String(validate=validate.Length(max=2000), allow_none=True)

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
    expense_id = fields.UUID(dump_only=True)


PAYMENT_OUT = PaymentOut()  # schemas are stateless once built; building one per request is slow
# Printable ASCII but the comma: a header sent twice reaches the app as one, joined by commas,
# and two keys must not become a third.
KEY = re.compile(r"^[\x20-\x2b\x2d-\x7e]{1,200}$")


def require_idempotency_key(view: Any) -> Any:
    """400 before anything else is read when the Idempotency-Key header is missing or unusable."""
    @wraps(view)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if not KEY.match(request.headers.get("Idempotency-Key", "")):
            return errors.problem(
                400, "One Idempotency-Key header is required (1 to 200 printable ASCII "
                     "characters, no commas).",
                {"Idempotency-Key": ["required once: 1 to 200 printable ASCII characters, no "
                                     "commas"]},
                code="IdempotencyKeyRequired")
        return view(*args, **kwargs)
    return wrapper


def idempotent_payment(participant_id: UUID, body: dict[str, Any]) -> Response:
    """Record a payment once per (token, Idempotency-Key); replay its first response after.

    Only a recorded payment keeps its response (in the payment's own transaction). A refusal
    is not kept: it wrote nothing, and the same request may succeed once the world has changed
    (a reversal, a new arrangement), or when a transient conflict has passed.
    """
    store = ledger().idempotency
    store.maybe_purge()
    once = IdempotentRequest(
        token_id=str(g.token_id), key=store.stored_key(request.headers["Idempotency-Key"]),
        status=201,
        # The validated request, so equivalent requests match (defaults filled in, ids normalised).
        request_hash=store.fingerprint(json.dumps(
            {"participant": str(participant_id), "body": body}, sort_keys=True, default=str
        ).encode()),
        render=lambda result: json.dumps(PAYMENT_OUT.dump(result), separators=(",", ":")).encode(),
    )
    try:
        ledger().record_payment(
            participant_id, body["activity"], body["amount"], body["method"],
            currency=body["currency"], reference=body.get("reference"),
            reason=body.get("reason"), by=actor(), idempotent=once)
    except LedgerError as e:
        kept = store.lookup(once.token_id, once.key)  # a request with this key may have won
        if kept is not None:
            return _replay_or_refuse(kept, once)
        return errors.ledger_error(e)
    assert once.body is not None
    return _replay(once.status, once.body)


def _replay_or_refuse(kept: Stored, once: IdempotentRequest) -> Response:
    if kept.request_hash != once.request_hash:
        return errors.problem(
            422, "This Idempotency-Key was already used for a different request.",
            {"Idempotency-Key": ["already used with a different body"]},
            code="IdempotencyKeyReused")
    response = _replay(kept.status, kept.body)
    # Read-your-writes for a client whose first answer was lost: the log's position now, which
    # is at or after the payment's own (the views at this position include the payment).
    response.headers["Ledger-Position"] = str(ledger().recorder.max_notification_id())
    return response


def _replay(status: int, body: bytes) -> Response:
    return Response(body, status=status, mimetype="application/json")  # only successes are kept


@blp.route("/participants/<uuid:participant_id>/payment-arrangements")
class Arrangements(MethodView):
    @require("staff")
    @blp.doc(security=SECURITY)
    @blp.arguments(ArrangementIn())
    @blp.response(201, ArrangementOut)
    @document_errors(blp, 404, 409)
    def post(self, body: dict[str, Any], participant_id: UUID) -> dict[str, Any]:
        """Record how the person wants to be paid for an activity, or that they declined."""
        if body["declined"]:
            return ledger().decline_payment(participant_id, body["activity"], body.get("reason"),
                                            by=actor())
        return ledger().arrange_payment(participant_id, body["activity"], body["method"],
                                        body["payee"], body["benefits_advice_offered"],
                                        by=actor())


@blp.route("/participants/<uuid:participant_id>/payment-reductions")
class Reductions(MethodView):
    @require("staff")
    @blp.doc(security=SECURITY)
    @blp.arguments(ReductionIn())
    @blp.response(201, ArrangementOut)
    @document_errors(blp, 404, 409)
    def post(self, body: dict[str, Any], participant_id: UUID) -> dict[str, Any]:
        """Record that the person asked to be paid less than the rate, and why."""
        return ledger().reduce_payment(participant_id, body["activity"], body["amount"],
                                       body["reason"], by=actor())


@blp.route("/participants/<uuid:participant_id>/payments")
class Payments(MethodView):
    @require("staff")
    @require_idempotency_key
    @blp.doc(security=SECURITY, parameters=[KEY_HEADER])
    @blp.arguments(PaymentIn())
    @blp.response(201, PaymentOut)
    @document_errors(blp, 400, 404, 409)
    def post(self, body: dict[str, Any], participant_id: UUID) -> Response:
        """Record a payment (needs Idempotency-Key); one per participant and activity."""
        return idempotent_payment(participant_id, body)


@blp.route("/participants/<uuid:participant_id>/payments/<uuid:payment_id>/reversal")
class Reversal(MethodView):
    @require("staff")
    @blp.doc(security=SECURITY)
    @blp.arguments(ReversalIn())
    @blp.response(201, PaymentOut)
    @document_errors(blp, 404, 409)
    def post(self, body: dict[str, Any], participant_id: UUID, payment_id: UUID) -> dict[str, Any]:
        """Reverse a payment (e.g. the transfer bounced); the activity can then be paid again."""
        return ledger().reverse_payment(participant_id, payment_id, body["reason"], by=actor())


@blp.route("/participants/<uuid:participant_id>/expenses")
class Expenses(MethodView):
    @require("staff")
    @blp.doc(security=SECURITY)
    @blp.arguments(ExpenseIn())
    @blp.response(201, ExpenseCreated)
    @document_errors(blp, 404, 409)
    def post(self, body: dict[str, Any], participant_id: UUID) -> dict[str, Any]:
        """Record an expense (travel, care, data) as its own line, separate from the fee."""
        expense_id = ledger().record_expense(participant_id, body["activity"], body["amount"],
                                             body["method"], body["description"], by=actor())
        return {"expense_id": expense_id}
