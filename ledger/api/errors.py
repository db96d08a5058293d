"""Errors as RFC 9457 problem+json. The one table from domain errors to HTTP statuses is here.

Bodies carry a status, a title, a detail written by us, and for validation errors the offending
fields; never a stack trace, SQL, or the submitted values.
"""

from __future__ import annotations

import logging
import re
from typing import Any

from flask import Flask, Response, json, request
from werkzeug.exceptions import BadRequest, HTTPException

from ..domain.errors import (
    ConcurrentUpdate,
    InvalidInput,
    InvalidTransition,
    LedgerError,
    NotFound,
    ViewsBehind,
)
from ..store import UnreadableEvent

log = logging.getLogger("ledger.api")

STATUS_FOR = [  # first match wins
    (NotFound, 404),
    (InvalidInput, 422),
    (InvalidTransition, 409),
    (ConcurrentUpdate, 409),
    (ViewsBehind, 503),
]
TITLES = {
    400: "Bad request", 401: "Authentication required", 403: "Not allowed for this role",
    404: "Not found", 405: "Method not allowed", 409: "Conflict with the current state",
    413: "Request too large", 415: "Unsupported media type", 422: "Invalid input",
    429: "Too many requests", 500: "Internal error", 503: "Not ready yet",
}

# The ``code`` of a problem that no domain error names (a domain error's code is its class name).
CODES = {
    400: "BadRequest", 401: "AuthenticationRequired", 403: "RoleNotAllowed", 404: "NotFound",
    405: "MethodNotAllowed", 409: "Conflict", 413: "RequestTooLarge",
    415: "UnsupportedMediaType", 422: "InvalidInput", 429: "TooManyRequests",
    500: "InternalError", 503: "NotReady",
    # (only gunicorn answers these, before the app: see server.LedgerWorker.handle_error)
    414: "RequestLineTooLong", 417: "ExpectationFailed", 431: "HeadersTooLarge",
    501: "TransferCodingNotSupported",
}


class IncompleteBody(BadRequest):
    """The request body ended before its Content-Length (the client dropped or timed out)."""


def problem(status: int, detail: str | None = None, errors: dict[str, Any] | None = None,
            headers: dict[str, str] | None = None, code: str | None = None,
            **extra: Any) -> Response:
    """An application/problem+json response; every one has a ``code`` (by default its
    status's), so a script can tell problems apart without parsing the words."""
    body: dict[str, Any] = {"type": "about:blank", "status": status,
                            "title": TITLES.get(status, "Error"),
                            "code": code or CODES.get(status, "Error")}
    if detail:
        body["detail"] = detail
    if errors:
        body["errors"] = errors
    body.update(extra)
    response = Response(json.dumps(body), status=status, mimetype="application/problem+json")
    for k, v in (headers or {}).items():
        response.headers[k] = v
    return response


def _flatten(messages: Any) -> dict[str, Any]:
    """flask-smorest nests messages by location ({"json": {"field": [...]}}); drop that level."""
    flat: dict[str, Any] = {}
    if isinstance(messages, dict):
        for location, fields in messages.items():
            if isinstance(fields, dict):
                flat.update(fields)
            else:
                flat[location] = fields
    return flat


# A field name we repeat back: what a client could mean as one. Any other key of an unknown field
# is submitted text (a misplaced name, a note), which an error body never repeats.
FIELD_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_-]{0,39}\Z")
UNKNOWN = "Unknown field."
UNNAMED = "_unknown_fields"


def _without_submitted_names(errors: dict[Any, Any]) -> dict[Any, Any]:
    """Errors with each unknown field that does not look like a field name counted under
    ``_unknown_fields`` instead of named (nested errors too)."""
    kept: dict[Any, Any] = {}
    unnamed = 0
    for key, value in errors.items():
        if value == [UNKNOWN] and not (isinstance(key, str) and FIELD_NAME.match(key)):
            unnamed += 1
        elif isinstance(value, dict):
            kept[key] = _without_submitted_names(value)
        else:
            kept[key] = value
    if unnamed:
        kept[UNNAMED] = [f"{unnamed} unknown field(s), whose names are not repeated here"]
    return kept


def is_participant_page() -> bool:
    """Under /my/: the participant pages, which answer every error with a kind HTML page."""
    return request.path == "/my" or request.path.startswith("/my/")


def ledger_error(error: LedgerError) -> Response:
    """A domain error, by the table above."""
    status = next((code for cls, code in STATUS_FOR if isinstance(error, cls)), 400)
    if is_participant_page():
        from .pages import kind_error

        return kind_error(status)
    errors = {error.field: [error.message]} if error.field else None
    # A 503 says when to ask again (RFC 9110 section 10.2.3): the views usually catch up in well
    # under a second.
    headers = {"Retry-After": "1"} if status == 503 else None
    return problem(status, error.message, errors, headers=headers, code=type(error).__name__)


def http_error(error: HTTPException) -> Response:
    """Werkzeug/flask-smorest errors, including schema validation (422 with fields). Under the
    participant pages' /my/ they get the pages' kind HTML instead."""
    status = error.code or 500
    allowed = getattr(error, "valid_methods", None)
    if is_participant_page():
        from .pages import kind_error

        return kind_error(status, allowed)
    data = getattr(error, "data", None) or {}
    errors = (_without_submitted_names(_flatten(data.get("messages")))
              if "messages" in data else None)
    detail = "Check the fields listed in errors." if errors else TITLES.get(status)
    headers = dict(data.get("headers", {}) or {})
    if allowed:
        headers["Allow"] = ", ".join(sorted(allowed))
    return problem(status, detail, errors, headers=headers)


def incomplete_body(error: IncompleteBody) -> Response:
    """A body cut short: nothing was recorded, and the whole request may be sent again."""
    if is_participant_page():
        from .pages import incomplete_form

        return incomplete_form()
    return problem(400, "The request body ended before the length its Content-Length header "
                        "gave. Nothing was recorded: send the whole request again.",
                   {"body": ["ended before its Content-Length"]}, code="IncompleteBody")


def too_deep(error: RecursionError) -> Response:
    """JSON nested beyond what any request needs."""
    return problem(400, "The request body is nested too deeply.",
                   {"json": ["nested too deeply"]}, code="MalformedJSON")


def unreadable_event(error: UnreadableEvent) -> Response:
    """A stored event that cannot be read (a past report over an altered log): a 500 that says
    which position, as the CLI does (the message names only the position)."""
    log.error("%s", error)
    if is_participant_page():
        from .pages import kind_error

        return kind_error(500)
    return problem(500, str(error), code="UnreadableEvent")


def unexpected_error(error: Exception) -> Response:
    """Anything else: logged by type only, answered with a bare 500."""
    log.error("unhandled %s", type(error).__name__)
    if is_participant_page():
        from .pages import kind_error

        return kind_error(500)
    return problem(500, "Something went wrong on our side. Please try again; if it keeps "
                        "happening, tell the people who run this ledger.")


def register(app: Flask) -> None:
    """Install the handlers on an app."""
    app.register_error_handler(LedgerError, ledger_error)
    app.register_error_handler(IncompleteBody, incomplete_body)
    app.register_error_handler(HTTPException, http_error)
    app.register_error_handler(RecursionError, too_deep)
    app.register_error_handler(UnreadableEvent, unreadable_event)
    app.register_error_handler(Exception, unexpected_error)
