"""Consents: grant a scope, withdraw it on the person's request, mark follow-up work done."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from flask.views import MethodView
from marshmallow import fields, validate

from ..domain.vocab import ATTRIBUTIONS, CONSENT_METHODS, STAFF_WITHDRAWAL_CHANNELS
from ..idempotency import IdempotentRequest
from .auth import SECURITY, actor, require
from .common import ledger
from .fastdump import Schema
from .idempotent import idempotent, key_header
from .parsing import Blueprint
from .participants import ConsentOut, ObligationOut
from .schemas import document_errors

blp = Blueprint("consents", __name__, url_prefix="/api/v1", description="Consent per scope")


class GrantIn(Schema):
    scope = fields.String(required=True, validate=validate.Length(1, 40))
    form_version = fields.String(required=True, validate=validate.Length(1, 40))
    method = fields.String(required=True, validate=validate.OneOf(CONSENT_METHODS))
    attribution = fields.String(validate=validate.OneOf(ATTRIBUTIONS), allow_none=True)


class WithdrawIn(Schema):
    channel = fields.String(required=True, validate=validate.OneOf(STAFF_WITHDRAWAL_CHANNELS))
    reason = fields.String(validate=validate.Length(max=2000), allow_none=True)


class OpenedObligation(Schema):
    id = fields.UUID(required=True)
    kind = fields.String(required=True)


class WithdrawalOut(Schema):
    scope = fields.String(required=True)
    past_deadline = fields.Boolean(required=True)
    obligations = fields.List(fields.Nested(OpenedObligation), required=True)


class DoneIn(Schema):
    note = fields.String(validate=validate.Length(max=2000), allow_none=True)


@blp.route("/participants/<uuid:participant_id>/consents")
class Consents(MethodView):
    @require("staff")
    @blp.doc(security=SECURITY, parameters=[key_header(required=False)])
    @blp.arguments(GrantIn())
    @blp.response(201, ConsentOut)
    @document_errors(blp, 404, 409)
    @idempotent(ConsentOut(), 201)
    def post(self, body: dict[str, Any], participant_id: UUID,
             once: IdempotentRequest | None) -> dict[str, Any]:
        """Record consent given for one scope, on a registered form version."""
        return ledger().grant_consent(participant_id, body["scope"], body["form_version"],
                                      body["method"], body.get("attribution"), by=actor(),
                                      idempotent=once)


@blp.route("/participants/<uuid:participant_id>/consents/<string:scope>/withdrawal")
class Withdrawal(MethodView):
    @require("staff")
    @blp.doc(security=SECURITY, parameters=[key_header(required=False)])
    @blp.arguments(WithdrawIn())
    @blp.response(201, WithdrawalOut)
    @document_errors(blp, 404, 409)
    @idempotent(WithdrawalOut(), 201)
    def post(self, body: dict[str, Any], participant_id: UUID, scope: str,
             once: IdempotentRequest | None) -> dict[str, Any]:
        """Withdraw consent for a scope on the person's request; opens the follow-up work."""
        return ledger().withdraw_consent(participant_id, scope, body["channel"],
                                         body.get("reason"), by=actor(), idempotent=once)


@blp.route("/participants/<uuid:participant_id>/obligations/<uuid:obligation_id>/done")
class ObligationDone(MethodView):
    @require("staff")
    @blp.doc(security=SECURITY, parameters=[key_header(required=False)])
    @blp.arguments(DoneIn())
    @blp.response(200, ObligationOut)
    @document_errors(blp, 404, 409)
    @idempotent(ObligationOut(), 200)
    def post(self, body: dict[str, Any], participant_id: UUID, obligation_id: UUID,
             once: IdempotentRequest | None) -> dict[str, Any]:
        """Mark a withdrawal's follow-up obligation done (e.g. the recording was deleted)."""
        return ledger().discharge_obligation(participant_id, obligation_id, body.get("note"),
                                             by=actor(), idempotent=once)
