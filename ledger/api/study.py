"""GET /study: the study's scopes, activities and rates, consent forms and lawful bases."""

from __future__ import annotations

from typing import Any

from flask.views import MethodView
from marshmallow import fields

from .auth import SECURITY, require
from .common import ledger
from .fastdump import Schema
from .parsing import Blueprint
from .schemas import document_errors

blp = Blueprint("study", __name__, url_prefix="/api/v1", description="The study")


class ScopeSchema(Schema):
    name = fields.String(required=True)
    label = fields.String(required=True)
    description = fields.String(required=True)
    withdrawal_deadline = fields.DateTime(required=True, allow_none=True)
    obligations = fields.List(fields.String(), required=True)
    takes_attribution = fields.Boolean(required=True)


class ActivitySchema(Schema):
    name = fields.String(required=True)
    label = fields.String(required=True)
    rate = fields.String(required=True, metadata={"example": "25.00"})
    currency = fields.String(required=True, metadata={"example": "GBP"})


class FormSchema(Schema):
    version = fields.String(required=True)
    sha256 = fields.String(required=True)
    registered_at = fields.DateTime(required=True)
    current = fields.Boolean(required=True)


class StudySchema(Schema):
    id = fields.UUID(required=True, dump_only=True)
    name = fields.String(required=True)
    controller = fields.Dict(required=True, keys=fields.String(), values=fields.String())
    lawful_bases = fields.Dict(required=True, keys=fields.String(), values=fields.String())
    retention_days = fields.Integer(required=True)
    finance_retention_days = fields.Integer(required=True, metadata={
        "description": "days after a payment during which its record must name the payee; "
                       "erasure is refused (409) until then. 0: payments stay as anonymous "
                       "facts (amount, method, date) when a person is erased"})
    scopes = fields.List(fields.Nested(ScopeSchema), required=True)
    activities = fields.List(fields.Nested(ActivitySchema), required=True)
    consent_forms = fields.List(fields.Nested(FormSchema), required=True)


@blp.route("/study")
class StudyView(MethodView):
    @require("staff", "auditor")
    @blp.doc(security=SECURITY)
    @blp.response(200, StudySchema)
    @document_errors(blp)
    def get(self) -> dict[str, Any]:
        """The study: scopes with deadlines, activities with rates, forms, lawful bases."""
        return ledger().study()
