"""Auditors: the ordered event feed, personal data redacted."""

from __future__ import annotations

from typing import Any

from flask.views import MethodView
from flask_smorest import Blueprint
from marshmallow import Schema, fields, validate

from .auth import SECURITY, require
from .common import ledger
from .schemas import document_errors

blp = Blueprint("audit", __name__, url_prefix="/api/v1", description="For auditors")


class FeedQuery(Schema):
    after = fields.Integer(load_default=0, validate=validate.Range(min=0),
                           metadata={"description": "the last id of the previous page (0: start)"})
    limit = fields.Integer(load_default=100, validate=validate.Range(1, 1000))


class FeedItem(Schema):
    id = fields.Integer(metadata={"description": "position in the log (notification id)"})
    topic = fields.String(metadata={"example": "ledger:Participant.ConsentWithdrawn"})
    aggregate_id = fields.UUID()
    version = fields.Integer()
    recorded_at = fields.DateTime()
    actor = fields.String(allow_none=True, metadata={"example": "staff:3f2a9c1d0b7e4a55"})
    data = fields.Dict(metadata={"description": "the event's fields; personal ones read "
                                                "[personal data]"})


class FeedPage(Schema):
    items = fields.List(fields.Nested(FeedItem))
    next_after = fields.Integer(allow_none=True)


@blp.route("/audit/events")
class Events(MethodView):
    @require("auditor")
    @blp.doc(security=SECURITY)
    @blp.arguments(FeedQuery(), location="query")
    @blp.response(200, FeedPage)
    @document_errors(blp)
    def get(self, query: dict[str, Any]) -> dict[str, Any]:
        """The event log in order, a page at a time, with personal data redacted."""
        return ledger().audit_events(after=query["after"], limit=query["limit"])


class Checkpoint(Schema):
    size = fields.Integer(metadata={"description": "number of events the tree covers"})
    root = fields.String(metadata={"description": "RFC 6962 Merkle root, hex"})
    time = fields.String(metadata={"description": "when it was signed (ISO 8601)"})
    signature = fields.String(metadata={
        "description": "Ed25519 signature, base64, over the compact JSON {root, size, time} "
                       "with sorted keys"})
    public_key = fields.String(metadata={"description": "the signing key, PEM"})


@blp.route("/audit/checkpoint")
class CheckpointView(MethodView):
    @require("auditor")
    @blp.doc(security=SECURITY)
    @blp.response(200, Checkpoint)
    @document_errors(blp)
    def get(self) -> dict[str, Any]:
        """A signed checkpoint of the whole log as it is now (signed on request)."""
        return ledger().merkle.checkpoint()
