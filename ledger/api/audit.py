"""Auditors: the ordered event feed, personal data redacted."""

from __future__ import annotations

from typing import Any

from flask.views import MethodView
from marshmallow import fields, validate

from .auth import SECURITY, require
from .common import ledger
from .fastdump import Schema
from .parsing import MAX_POSITION, Blueprint, QueryInt
from .schemas import Checkpoint, document_errors

blp = Blueprint("audit", __name__, url_prefix="/api/v1", description="For auditors")


class FeedQuery(Schema):
    after = QueryInt(load_default=0, validate=validate.Range(0, MAX_POSITION - 1),
                           metadata={"description": "the last id of the previous page (0: start)"})
    limit = QueryInt(load_default=100, validate=validate.Range(1, 1000))


class FeedItem(Schema):
    id = fields.Integer(required=True,
                        metadata={"description": "position in the log (notification id)"})
    topic = fields.String(required=True, metadata={"example": "ledger:Participant.ConsentWithdrawn"})
    aggregate_id = fields.UUID(required=True)
    version = fields.Integer(required=True)
    recorded_at = fields.DateTime(required=True)
    actor = fields.String(required=True, allow_none=True,
                          metadata={"example": "staff:3f2a9c1d0b7e4a55"})
    data = fields.Dict(required=True, metadata={
        "description": "the event's fields; personal ones read [personal data]"})


class FeedPage(Schema):
    items = fields.List(fields.Nested(FeedItem), required=True)
    next_after = fields.Integer(required=True, allow_none=True)


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


@blp.route("/audit/checkpoint")
class CheckpointView(MethodView):
    @require("auditor")
    @blp.doc(security=SECURITY)
    @blp.response(200, Checkpoint)
    @document_errors(blp)
    def get(self) -> dict[str, Any]:
        """A signed checkpoint of the whole log as it is now (signed on request)."""
        return ledger().merkle.checkpoint()


class InclusionQuery(Schema):
    position = QueryInt(required=True, validate=validate.Range(1, MAX_POSITION), metadata={
        "description": "the event's position in the log, 1-based (the leaf index plus one)"})
    size = QueryInt(load_default=None, validate=validate.Range(1, MAX_POSITION), metadata={
        "description": "the tree to prove it in, by its size (a checkpoint's size); "
                       "default: a checkpoint signed now"})


class StoredEvent(Schema):
    notification_id = fields.Integer(required=True)
    aggregate_id = fields.UUID(required=True)
    version = fields.Integer(required=True)
    topic = fields.String(required=True)
    stored_state = fields.String(required=True, metadata={
        "description": "the state as stored (encrypted), base64: the leaf is SHA-256(0x00 || "
                       "id (16 bytes) || version (8, big-endian) || topic length (4) || topic "
                       "|| stored state)"})


class InclusionProof(Schema):
    position = fields.Integer(required=True)
    size = fields.Integer(required=True)
    leaf_hash = fields.String(required=True)
    audit_path = fields.List(fields.String(), required=True, metadata={
        "description": "RFC 6962 audit path, hex, leaf to root (verify as RFC 9162 2.1.3.2)"})
    root = fields.String(required=True, metadata={
        "description": "the root these leaves give, hex; hold the path against a signed "
                       "checkpoint's root"})
    checkpoint = fields.Nested(Checkpoint, required=True, allow_none=True,
                               metadata={"description": "the signed checkpoint of this size"})
    event = fields.Nested(StoredEvent, required=True)


class ConsistencyQuery(Schema):
    first = QueryInt(required=True, validate=validate.Range(1, MAX_POSITION), metadata={
        "description": "the size of the earlier tree (e.g. a checkpoint you kept)"})
    second = QueryInt(load_default=None, validate=validate.Range(1, MAX_POSITION), metadata={
        "description": "the size of the later tree; default: a checkpoint signed now"})


class ConsistencyProof(Schema):
    first = fields.Integer(required=True)
    second = fields.Integer(required=True)
    first_root = fields.String(required=True)
    second_root = fields.String(required=True)
    proof = fields.List(fields.String(), required=True, metadata={
        "description": "RFC 6962 consistency proof, hex (verify as RFC 9162 2.1.4.2; when "
                       "first equals second it is empty, and holds if the two roots are equal)"})
    first_checkpoint = fields.Nested(Checkpoint, required=True, allow_none=True)
    second_checkpoint = fields.Nested(Checkpoint, required=True, allow_none=True)


@blp.route("/audit/proofs/inclusion")
class InclusionView(MethodView):
    @require("auditor")
    @blp.doc(security=SECURITY)
    @blp.arguments(InclusionQuery(), location="query")
    @blp.response(200, InclusionProof)
    @document_errors(blp, 422)
    def get(self, query: dict[str, Any]) -> dict[str, Any]:
        """Proof that one event is in the signed tree: its audit path, and the event as stored."""
        return ledger().merkle.inclusion(query["position"], query["size"])


@blp.route("/audit/proofs/consistency")
class ConsistencyView(MethodView):
    @require("auditor")
    @blp.doc(security=SECURITY)
    @blp.arguments(ConsistencyQuery(), location="query")
    @blp.response(200, ConsistencyProof)
    @document_errors(blp, 422)
    def get(self, query: dict[str, Any]) -> dict[str, Any]:
        """Proof that an earlier tree is a prefix of a later one: nothing was changed or removed
        between two checkpoints, only added."""
        return ledger().merkle.consistency(query["first"], query["second"])
