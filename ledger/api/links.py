"""Staff: issue (or revoke) a participant's personal withdrawal link."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from flask.views import MethodView
from marshmallow import fields

from .auth import SECURITY, actor, require
from .common import ledger
from .fastdump import Schema
from .parsing import Blueprint
from .schemas import document_errors

blp = Blueprint("links", __name__, url_prefix="/api/v1", description="Personal withdrawal links")


class LinkOut(Schema):
    url = fields.String(required=True,
                        metadata={"description": "send this to the participant; shown once"})
    expires_at = fields.DateTime(required=True)


class RevokedOut(Schema):
    revoked = fields.Boolean(required=True)


class Empty(Schema):
    """No fields."""


@blp.route("/participants/<uuid:participant_id>/withdrawal-link")
class WithdrawalLink(MethodView):
    @require("staff")
    @blp.doc(security=SECURITY)
    @blp.arguments(Empty())
    @blp.response(201, LinkOut)
    @document_errors(blp, 404, 409)
    def post(self, _: dict[str, Any], participant_id: UUID) -> dict[str, Any]:
        """Issue a new personal link for the participant; any earlier link stops working."""
        return ledger().issue_withdrawal_link(participant_id, by=actor())


@blp.route("/participants/<uuid:participant_id>/withdrawal-link/revocation")
class Revocation(MethodView):
    @require("staff")
    @blp.doc(security=SECURITY)
    @blp.arguments(Empty())
    @blp.response(200, RevokedOut)
    @document_errors(blp, 404, 409)
    def post(self, _: dict[str, Any], participant_id: UUID) -> dict[str, Any]:
        """Stop the participant's current link (extension)."""
        return ledger().revoke_withdrawal_link(participant_id, by=actor())
