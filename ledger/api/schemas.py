"""Schemas shared by several resources: the problem body, and the documented error responses."""

from __future__ import annotations

from collections.abc import Callable
from http import HTTPStatus
from typing import Any

from marshmallow import fields, validate

from .fastdump import Schema
from .parsing import Blueprint, QueryInt


class ProblemSchema(Schema):
    """RFC 9457 problem details. ``required`` (here and in every output schema) documents what
    the server always sends (``errors.problem`` always writes these four); it is not checked on
    the way out."""

    type = fields.String(required=True, metadata={"example": "about:blank"})
    title = fields.String(required=True)
    status = fields.Integer(required=True)
    detail = fields.String()
    errors = fields.Dict(keys=fields.String(), values=fields.Raw(),
                         metadata={"description": "offending fields and what is wrong with each"})
    code = fields.String(required=True, metadata={
        "description": "the ledger's name for the error: a domain error's own (e.g. "
                       "PaymentAlreadyRecorded), else one per status (e.g. InvalidInput, "
                       "AuthenticationRequired, RoleNotAllowed, IdempotencyKeyRequired)"})


# The problems every operation can answer with: 400 (malformed JSON), 401, 403, 413 (body too
# large), 422 (a query parameter the operation does not document, or one given twice: see
# ``parsing.refuse_unknown_query_parameters``) and 429 (too many failed sign-ins).
EVERY_OPERATION = (400, 401, 403, 413, 422, 429)


def document_errors(blp: Blueprint, *codes: int) -> Callable[[Any], Any]:
    """Document the problem responses a view can give, plus those every view can
    (``EVERY_OPERATION``)."""
    def decorate(view: Any) -> Any:
        for code in sorted({*EVERY_OPERATION, *codes}):
            view = blp.alt_response(code, response=HTTPStatus(code).name)(view)
        return view
    return decorate


class PaginationQuery(Schema):
    """?limit=&after= (keyset pagination by registration order)."""

    limit = QueryInt(load_default=50, validate=validate.Range(1, 200))
    after = fields.UUID(load_default=None, metadata={"description": "last id of the previous page"})


class SignedCheckpoint(Schema):
    """A signed tree head: what a receipt or report carries."""

    size = fields.Integer(required=True,
                          metadata={"description": "number of events the tree covers"})
    root = fields.String(required=True, metadata={"description": "RFC 6962 Merkle root, hex"})
    time = fields.String(required=True, metadata={"description": "when it was signed (ISO 8601)"})
    signature = fields.String(required=True, metadata={
        "description": "Ed25519 signature, base64, over the compact JSON {root, size, time} "
                       "with sorted keys"})


class Checkpoint(SignedCheckpoint):
    """A signed tree head with the key that signed it."""

    public_key = fields.String(required=True, metadata={"description": "the signing key, PEM"})
