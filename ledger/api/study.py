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
    name = fields.String()
    label = fields.String()
    description = fields.String()
    withdrawal_deadline = fields.DateTime(allow_none=True)
    obligations = fields.List(fields.String())
    takes_attribution = fields.Boolean()


class ActivitySchema(Schema):
    name = fields.String()
    label = fields.String()
    rate = fields.String(metadata={"example": "25.00"})
    currency = fields.String(metadata={"example": "GBP"})


class FormSchema(Schema):
    version = fields.String()
    sha256 = fields.String()
    registered_at = fields.DateTime()
    current = fields.Boolean()


class StudySchema(Schema):
    id = fields.UUID(dump_only=True)
    name = fields.String()
    controller = fields.Dict(keys=fields.String(), values=fields.String())
    lawful_bases = fields.Dict(keys=fields.String(), values=fields.String())
    retention_days = fields.Integer()
    finance_retention_days = fields.Integer(metadata={
        "description": "days after a payment during which its record must name the payee; "
                       "erasure is refused (409) until then. 0: payments stay as anonymous "
                       "facts (amount, method, date) when a person is erased"})
    scopes = fields.List(fields.Nested(ScopeSchema))
    activities = fields.List(fields.Nested(ActivitySchema))
    consent_forms = fields.List(fields.Nested(FormSchema))


@blp.route("/study")
class StudyView(MethodView):
    @require("staff", "auditor")
    @blp.doc(security=SECURITY)
    @blp.response(200, StudySchema)
    @document_errors(blp)
    def get(self) -> dict[str, Any]:
        """The study: scopes with deadlines, activities with rates, forms, lawful bases."""
        return ledger().study()
