"""Uses: record that a person's story was used under a scope (the reports check it had consent)."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from flask.views import MethodView
from marshmallow import fields, validate

from ..domain.vocab import ATTRIBUTIONS
from ..idempotency import IdempotentRequest
from .auth import SECURITY, actor, require
from .common import ledger
from .fastdump import Schema
from .idempotent import idempotent, key_header
from .parsing import Blueprint
from .schemas import document_errors

blp = Blueprint("uses", __name__, url_prefix="/api/v1",
                description="Uses of a person's story, checked against their consent")


class UseIn(Schema):
    scope = fields.String(required=True, validate=validate.Length(1, 40))
    purpose = fields.String(required=True, validate=validate.Length(1, 500), metadata={
        "example": "quoted in the workshop summary"})
    attribution = fields.String(load_default=None, validate=validate.OneOf(ATTRIBUTIONS), metadata={
        "description": "for a scope that quotes the person (quote): whether this use names them "
                       "(named) or not (anonymous); a named use needs their consent to be named"})


class UseRecorded(Schema):
    scope = fields.String(required=True)
    consent_state = fields.String(required=True, allow_none=True)
    without_consent = fields.Boolean(required=True, metadata={
        "description": "true when consent for the scope was not given at the time"})
    attribution = fields.String(required=True, allow_none=True, metadata={
        "description": "whether this use named the person, as sent (null if not said)"})
    consented_attribution = fields.String(required=True, allow_none=True, metadata={
        "description": "for a scope that quotes the person, what they had agreed to when it was "
                       "given (named or anonymous); null otherwise"})
    at = fields.DateTime(required=True)


@blp.route("/participants/<uuid:participant_id>/uses")
class Uses(MethodView):
    @require("staff")
    @blp.doc(security=SECURITY, parameters=[key_header(required=False)])
    @blp.arguments(UseIn())
    @blp.response(201, UseRecorded)
    @document_errors(blp, 404, 409)
    @idempotent(UseRecorded(), 201)
    def post(self, body: dict[str, Any], participant_id: UUID,
             once: IdempotentRequest | None) -> dict[str, Any]:
        """Record a use of the story; recorded even without consent, and flagged in reports."""
        return ledger().record_use(participant_id, body["scope"], body["purpose"],
                                   body["attribution"], by=actor(), idempotent=once)
