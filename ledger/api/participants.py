"""Participants: register, list, view one, and (admin) erase."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from flask.views import MethodView
from marshmallow import fields, validate

from ..idempotency import IdempotentRequest
from .auth import SECURITY, actor, require
from .common import ledger
from .fastdump import Schema
from .idempotent import idempotent, key_header
from .parsing import MAX_POSITION, Blueprint, QueryInt
from .schemas import PaginationQuery, SignedCheckpoint, document_errors

blp = Blueprint("participants", __name__, url_prefix="/api/v1",
                description="Participants and what is held about them")


class RegisterIn(Schema):
    name = fields.String(required=True, validate=validate.Length(1, 200))
    email = fields.String(validate=validate.Length(max=254), allow_none=True)
    phone = fields.String(validate=validate.Length(max=40), allow_none=True)
    communities = fields.List(fields.String(validate=validate.Length(1, 80)),
                              validate=validate.Length(max=20))
    preferred_contact = fields.String(validate=validate.Length(max=200), allow_none=True)


class RegisteredOut(Schema):
    id = fields.UUID(required=True, dump_only=True)
    reference = fields.String(required=True, dump_only=True, metadata={"example": "ST-7K3Q9XW2"})


class HistoryStep(Schema):
    state = fields.String(required=True)
    at = fields.DateTime(required=True)
    by = fields.String(required=True)
    method = fields.String(allow_none=True)
    form_version = fields.String(allow_none=True)
    attribution = fields.String(allow_none=True)
    channel = fields.String(allow_none=True)
    reason = fields.String(allow_none=True)
    past_deadline = fields.Boolean(allow_none=True)
    withdrawal_deadline = fields.DateTime(metadata={
        "description": "on a withdrawal: the scope's deadline then, which past_deadline was "
                       "held against (absent if there was none, or for withdrawals recorded "
                       "before 6 December 2026)"})


class ConsentOut(Schema):
    scope = fields.String(required=True)
    state = fields.String(required=True, allow_none=True)
    form_version = fields.String(required=True, allow_none=True)
    form_sha256 = fields.String(required=True, allow_none=True)
    method = fields.String(required=True, allow_none=True)
    attribution = fields.String(required=True, allow_none=True)
    changed_at = fields.DateTime(required=True, allow_none=True)
    history = fields.List(fields.Nested(HistoryStep), required=True)


class ObligationOut(Schema):
    id = fields.UUID(required=True)
    scope = fields.String(required=True)
    kind = fields.String(required=True)
    opened_at = fields.DateTime(required=True)
    done_at = fields.DateTime(required=True, allow_none=True)
    note = fields.String(allow_none=True)


class NeedStep(Schema):
    outcome = fields.String(required=True)
    at = fields.DateTime(required=True)
    by = fields.String(required=True)
    note = fields.String(required=True, allow_none=True)


class NeedOut(Schema):
    id = fields.UUID(required=True)
    category = fields.String(required=True)
    detail = fields.String(required=True)
    outcome = fields.String(required=True, allow_none=True)
    note = fields.String(required=True, allow_none=True)
    requested_at = fields.DateTime(required=True)
    outcome_at = fields.DateTime(required=True, allow_none=True)
    met_at = fields.DateTime(required=True, allow_none=True)
    history = fields.List(fields.Nested(NeedStep), required=True, metadata={
        "description": "every outcome recorded, with its note, oldest first"})


class ArrangementStep(Schema):
    event = fields.String(required=True, metadata={
        "description": "arranged, declined, reduced, paid or reversed"})
    at = fields.DateTime(required=True)
    by = fields.String(required=True)
    method = fields.String(required=True, allow_none=True)
    payee = fields.String(required=True, allow_none=True)
    benefits_advice_offered = fields.Boolean(required=True, allow_none=True)
    amount = fields.String(required=True, allow_none=True,
                           metadata={"description": "the reduced amount"})
    reason = fields.String(required=True, allow_none=True)
    payment_id = fields.UUID(required=True, allow_none=True)


class ArrangementOut(Schema):
    activity = fields.String(required=True)
    method = fields.String(required=True, allow_none=True)
    payee = fields.String(required=True, allow_none=True)
    benefits_advice_offered = fields.Boolean(required=True, allow_none=True)
    declined = fields.Boolean(required=True)
    reduced_to = fields.String(required=True, allow_none=True)
    reason = fields.String(required=True, allow_none=True)
    history = fields.List(fields.Nested(ArrangementStep), required=True, metadata={
        "description": "every change, with what was said, oldest first"})


class PaymentOut(Schema):
    id = fields.UUID(required=True)
    activity = fields.String(required=True)
    amount = fields.String(required=True, metadata={"example": "25.00"})
    currency = fields.String(required=True)
    method = fields.String(required=True)
    expected = fields.String(required=True)
    status = fields.String(required=True, metadata={"description": "paid or reversed"})
    paid_at = fields.DateTime(required=True)
    reversed_at = fields.DateTime(required=True, allow_none=True)


class PaymentDetailOut(PaymentOut):
    reference = fields.String(required=True, allow_none=True)
    reason = fields.String(required=True, allow_none=True)
    reversal_reason = fields.String(required=True, allow_none=True)


class ExpenseOut(Schema):
    id = fields.UUID(required=True)
    activity = fields.String(required=True)
    amount = fields.String(required=True)
    currency = fields.String(required=True, metadata={
        "description": "always GBP: expenses are paid back in pounds"})
    method = fields.String(required=True)
    description = fields.String(required=True)
    at = fields.DateTime(required=True)


class UseOut(Schema):
    scope = fields.String(required=True)
    purpose = fields.String(required=True)
    consent_state = fields.String(required=True, allow_none=True, metadata={
        "description": "the consent state the use met; anything but given is flagged"})
    attribution = fields.String(required=True, allow_none=True, dump_default=None, metadata={
        "description": "whether the use named the person (named, anonymous; null if not said)"})
    consented_attribution = fields.String(
        required=True, allow_none=True, dump_default=None, metadata={
            "description": "for a scope that quotes the person, what they had agreed to (named "
                           "or anonymous); a named use under anything but named is flagged"})
    at = fields.DateTime(required=True)


class ParticipantOut(Schema):
    id = fields.UUID(required=True, dump_only=True)
    reference = fields.String(required=True)
    name = fields.String(required=True)
    email = fields.String(required=True, allow_none=True)
    phone = fields.String(required=True, allow_none=True)
    communities = fields.List(fields.String(), required=True)
    preferred_contact = fields.String(required=True, allow_none=True)
    registered_at = fields.DateTime(required=True)
    erased = fields.Boolean(required=True)
    erased_at = fields.DateTime(required=True, allow_none=True)
    consents = fields.Dict(required=True, keys=fields.String(), values=fields.Nested(ConsentOut))
    obligations = fields.List(fields.Nested(ObligationOut), required=True)
    access_needs = fields.List(fields.Nested(NeedOut), required=True)
    arrangements = fields.Dict(required=True, keys=fields.String(),
                               values=fields.Nested(ArrangementOut))
    expenses = fields.List(fields.Nested(ExpenseOut), required=True)
    payments = fields.List(fields.Nested(PaymentDetailOut), required=True)
    uses = fields.List(fields.Nested(UseOut), required=True)


class ParticipantListQuery(PaginationQuery):
    min_position = QueryInt(load_default=None, validate=validate.Range(1, MAX_POSITION), metadata={
        "description": "read-your-writes: answer only once the views include this position "
                       "(the Ledger-Position header of a write); 503 with Retry-After if they do "
                       "not soon; 422 if no write has reached it (beyond the end of the log)"})


class ParticipantPage(Schema):
    items = fields.List(fields.Nested(ParticipantOut), required=True)
    next_after = fields.UUID(required=True, allow_none=True)


class ErasureIn(Schema):
    reason = fields.String(required=True, validate=validate.Length(1, 500))


class ReceiptEvent(Schema):
    position = fields.Integer(required=True, metadata={"description": "1-based position in the log"})
    notification_id = fields.Integer(required=True)
    leaf_hash = fields.String(required=True)


class ErasureReceipt(Schema):
    receipt = fields.String(required=True, metadata={"example": "erasure"})
    participant_id = fields.UUID(required=True)
    reference = fields.String(required=True)
    erased_at = fields.String(required=True)
    erased_by = fields.String(required=True, metadata={"example": "admin:3f2a9c1d0b7e4a55"})
    data_key_destroyed = fields.Boolean(required=True)
    erased = fields.String(required=True, metadata={"description": "what can no longer be read"})
    kept = fields.String(required=True,
                         metadata={"description": "what stays, without the person's identity"})
    event = fields.Nested(ReceiptEvent, required=True)
    audit_path = fields.List(fields.String(), required=True, metadata={
        "description": "the erasure event's RFC 6962 audit path to the checkpoint's root"})
    checkpoint = fields.Nested(SignedCheckpoint, required=True)
    issued_at = fields.String(required=True)
    signature = fields.String(required=True, metadata={
        "description": "Ed25519, base64, with the checkpoints' key, over this receipt without "
                       "its signature as compact JSON with sorted keys"})


class ErasureOut(Schema):
    id = fields.UUID(required=True)
    reference = fields.String(required=True)
    erased = fields.Boolean(required=True)
    erased_at = fields.DateTime(required=True)
    receipt = fields.Nested(ErasureReceipt, required=True, allow_none=True, metadata={
        "description": "null only if the store could not issue it just then (the erasure "
                       "stands): GET this path for it"})


@blp.route("/participants")
class Participants(MethodView):
    @require("staff")
    @blp.doc(security=SECURITY)
    @blp.arguments(ParticipantListQuery(), location="query")
    @blp.response(200, ParticipantPage)
    @document_errors(blp, 503)
    def get(self, query: dict[str, Any]) -> dict[str, Any]:
        """List participants, oldest first, a page at a time (read from the views)."""
        return ledger().participants_page(**query)

    @require("staff")
    @blp.doc(security=SECURITY, parameters=[key_header(required=False)])
    @blp.arguments(RegisterIn())
    @blp.response(201, RegisteredOut)
    @document_errors(blp, 404)
    @idempotent(RegisteredOut(), 201)
    def post(self, body: dict[str, Any], once: IdempotentRequest | None) -> dict[str, Any]:
        """Register a participant; returns their id and short reference."""
        return ledger().register_participant(**body, by=actor(), idempotent=once)


@blp.route("/participants/<uuid:participant_id>")
class ParticipantItem(MethodView):
    @require("staff")
    @blp.doc(security=SECURITY)
    @blp.response(200, ParticipantOut)
    @document_errors(blp, 404)
    def get(self, participant_id: UUID) -> dict[str, Any]:
        """Everything about one participant: consents, needs, arrangements, payments, history."""
        return ledger().participant(participant_id)


@blp.route("/participants/<uuid:participant_id>/erasure")
class Erasure(MethodView):
    @require("admin")
    @blp.doc(security=SECURITY)
    @blp.arguments(ErasureIn())
    @blp.response(200, ErasureOut)
    @document_errors(blp, 404, 409, 422)
    def post(self, body: dict[str, Any], participant_id: UUID) -> dict[str, Any]:
        """Erase the person's personal data (crypto-shredding); the facts stay, without their
        identity. Answers with a signed receipt. 409 if already erased, or if the study's
        finance retention still needs their payment records to name them (the problem says
        from when erasure will be possible)."""
        return ledger().erase(participant_id, body["reason"], by=actor())

    @require("admin")
    @blp.doc(security=SECURITY)
    @blp.response(200, ErasureReceipt)
    @document_errors(blp, 404)
    def get(self, participant_id: UUID) -> dict[str, Any]:
        """The signed erasure receipt again (404 if the person was not erased)."""
        return ledger().erasure_receipt(participant_id)
