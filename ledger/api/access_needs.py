"""Access needs: requested in the person's words, then met, partly met or not met."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from flask.views import MethodView
from marshmallow import fields, validate

from ..domain.vocab import NEED_OUTCOMES
from ..idempotency import IdempotentRequest
from .auth import SECURITY, actor, require
from .common import ledger
from .fastdump import Schema
from .idempotent import idempotent, key_header
from .parsing import Blueprint
from .participants import NeedOut
from .schemas import document_errors

blp = Blueprint("access_needs", __name__, url_prefix="/api/v1", description="Access needs")


class NeedIn(Schema):
    category = fields.String(required=True, validate=validate.Length(1, 80))
    detail = fields.String(load_default="", validate=validate.Length(max=2000))


class NeedCreated(Schema):
    need_id = fields.UUID(required=True, dump_only=True)


class OutcomeIn(Schema):
    outcome = fields.String(required=True, validate=validate.OneOf(NEED_OUTCOMES))
    note = fields.String(validate=validate.Length(max=2000), allow_none=True)


@blp.route("/participants/<uuid:participant_id>/access-needs")
class Needs(MethodView):
    @require("staff")
    @blp.doc(security=SECURITY, parameters=[key_header(required=False)])
    @blp.arguments(NeedIn())
    @blp.response(201, NeedCreated)
    @document_errors(blp, 404, 409)
    @idempotent(NeedCreated(), 201, shape=lambda need_id: {"need_id": need_id})
    def post(self, body: dict[str, Any], participant_id: UUID,
             once: IdempotentRequest | None) -> dict[str, Any]:
        """Record an access need (category: a short label in the person's words)."""
        need_id = ledger().request_access_need(participant_id, body["category"], body["detail"],
                                               by=actor(), idempotent=once)
        return {"need_id": need_id}


@blp.route("/participants/<uuid:participant_id>/access-needs/<uuid:need_id>/outcome")
class Outcome(MethodView):
    @require("staff")
    @blp.doc(security=SECURITY, parameters=[key_header(required=False)])
    @blp.arguments(OutcomeIn())
    @blp.response(201, NeedOut)
    @document_errors(blp, 404, 409)
    @idempotent(NeedOut(), 201)
    def post(self, body: dict[str, Any], participant_id: UUID, need_id: UUID,
             once: IdempotentRequest | None) -> dict[str, Any]:
        """Record whether the need was met, partly met or not met, with a note."""
        return ledger().record_access_outcome(participant_id, need_id, body["outcome"],
                                              body.get("note"), by=actor(), idempotent=once)
