"""Staff: the subject access export. Everything held about one person, as a JSON document (consents
as ISO/IEC TS 27560 records, see ``ledger.export``) or as a page to give them."""

from __future__ import annotations

import json
from typing import Any
from uuid import UUID

from flask import Response, render_template
from flask.views import MethodView
from marshmallow import fields, validate

from .auth import SECURITY, require
from .common import ledger
from .fastdump import Schema
from .parsing import Blueprint
from .schemas import document_errors

blp = Blueprint("export", __name__, url_prefix="/api/v1", description="Subject access")
FORMATS = {"json": "application/json", "html": "text/html; charset=utf-8"}


class ExportQuery(Schema):
    format = fields.String(load_default="json", validate=validate.OneOf(list(FORMATS)), metadata={
        "description": "json (default): the document; html: the same, as a page for the person"})


EXPORT_DOC = {"responses": {"200": {
    "description": "everything held about the person, as an attachment named after their "
                   "reference (format=json: this document; html: the same as a page)",
    "headers": {"Content-Disposition": {
        "description": 'attachment; filename="subject-access-<reference>.json" (or .html)',
        "schema": {"type": "string"}}},
    "content": {
        "application/json": {"schema": {"type": "object", "required": [
            "export", "generated_at", "controller", "participant", "consent_records",
            "access_needs", "arrangements", "payments", "expenses", "obligations", "uses"]}},
        "text/html": {"schema": {"type": "string"}},
    }}}}


def render(document: dict[str, Any], fmt: str) -> Response:
    """The export as a downloadable JSON file or HTML page."""
    if fmt == "html":
        body = render_template("export/subject_access.html", doc=document)
    else:
        body = json.dumps(document, indent=2, ensure_ascii=False)
    response = Response(body, mimetype=None, content_type=FORMATS[fmt])
    reference = document["participant"]["reference"]  # a pseudonym, never the name
    response.headers["Content-Disposition"] = (
        f'attachment; filename="subject-access-{reference}.{fmt}"')
    return response


@blp.route("/participants/<uuid:participant_id>/export")
class SubjectAccessExport(MethodView):
    @require("staff")
    @blp.doc(security=SECURITY, **EXPORT_DOC)
    @blp.arguments(ExportQuery(), location="query")
    @document_errors(blp, 404, 422)
    def get(self, query: dict[str, Any], participant_id: UUID) -> Response:
        """Everything held about the person (subject access), as JSON or as a page."""
        return render(ledger().subject_access(participant_id), query["format"])
