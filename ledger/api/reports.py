"""Auditors: the compliance report, at any moment, in JSON, CSV (zip), HTML or PDF."""

from __future__ import annotations

from typing import Any

from flask import Response
from flask.views import MethodView
from marshmallow import ValidationError, fields, validate, validates_schema

from ..reports import DEFAULT_OUTSTANDING_DAYS, report_data, sign_report
from ..reports.render import CSV_SECTIONS, EXTENSIONS, FORMATS, SECTION_CONTENT_TYPE, render
from .auth import SECURITY, require
from .common import ledger
from .fastdump import Schema
from .parsing import Blueprint, QueryInt
from .schemas import document_errors

blp = Blueprint("reports", __name__, url_prefix="/api/v1", description="For auditors")


class QueryMoment(fields.AwareDateTime):
    """An ISO 8601 moment with its offset, in a query string, where an unencoded ``+`` arrives
    as a space (``?as_of=2026-12-04T10:00:00+01:00``): that mistake is named, with its fix."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> Any:
        try:
            return super()._deserialize(value, attr, data, **kwargs)
        except ValidationError:
            if isinstance(value, str) and " " in value and self._parses(value.replace(" ", "+")):
                raise ValidationError(
                    "Not a valid datetime: a '+' in a query string arrives as a space; write the "
                    "offset as %2B (2026-12-04T10:00:00%2B01:00), or use Z for UTC") from None
            raise


    def _parses(self, value: str) -> bool:
        try:
            super()._deserialize(value, None, None)
        except ValidationError:
            return False
        return True


class ReportQuery(Schema):
    as_of = QueryMoment(load_default=None, metadata={
        "description": "the moment to report on, ISO 8601 with offset (default: now); "
                       "not in the future, not before the study was set up"})
    format = fields.String(load_default="json", validate=validate.OneOf(list(FORMATS)))
    outstanding_days = QueryInt(
        load_default=DEFAULT_OUTSTANDING_DAYS, validate=validate.Range(0, 3650),
        metadata={"description": "a payment agreed this many days ago and not made is listed "
                                 "as outstanding"})
    section = fields.String(load_default=None, validate=validate.OneOf(CSV_SECTIONS), metadata={
        "description": "extension, with format=csv only: that one section's CSV file (text/csv), "
                       "as it is in the zip, for a script that reads one table"})

    @validates_schema
    def _section_is_csv(self, data: dict[str, Any], **_: Any) -> None:
        if data.get("section") is not None and data.get("format") != "csv":
            raise ValidationError("a section is one CSV file: ask for it with format=csv",
                                  field_name="section")


SIGNATURE_HEADER = "Ledger-Signature"
REPORT_DOC = {"responses": {"200": {
    "description": "the report (format=json: this object; csv: a zip of one CSV per section, "
                   "or with section= that one CSV file; "
                   "html: a page; pdf: the page printed). Every report carries the signed "
                   "checkpoint it was built on; the Ledger-Signature header signs its exact bytes",
    "headers": {SIGNATURE_HEADER: {
        "description": "Ed25519 signature, base64, over the response body's exact bytes, with "
                       "the key of the checkpoints (GET /audit/checkpoint gives the public key)",
        "schema": {"type": "string"}}},
    "content": {
        "application/json": {"schema": {"type": "object", "required": [
            "report", "as_of", "consent", "payments", "access_needs", "log",
            "checkpoint"]}},
        "application/zip": {"schema": {"type": "string", "format": "binary"}},
        "text/csv": {"schema": {"type": "string"}},
        "text/html": {"schema": {"type": "string"}},
        "application/pdf": {"schema": {"type": "string", "format": "binary"}},
    }}}}


@blp.route("/reports/compliance")
class Compliance(MethodView):
    @require("auditor")
    @blp.doc(security=SECURITY, **REPORT_DOC)
    @blp.arguments(ReportQuery(), location="query")
    @document_errors(blp, 422, 503)
    def get(self, query: dict[str, Any]) -> Response:
        """The compliance report at a moment (default now), in the format asked for."""
        report = report_data(ledger(), query["as_of"], query["outstanding_days"])
        fmt, section = query["format"], query["section"]
        body = render(report, fmt, section)
        response = Response(body, mimetype=None,
                            content_type=SECTION_CONTENT_TYPE if section else FORMATS[fmt])
        response.headers[SIGNATURE_HEADER] = sign_report(ledger(), body)
        if fmt in ("csv", "pdf"):
            stem = f"compliance-{report['as_of'][:19].replace(':', '')}"
            name = f"{stem}-{section}.csv" if section else f"{stem}.{EXTENSIONS[fmt]}"
            response.headers["Content-Disposition"] = f'attachment; filename="{name}"'
        return response
