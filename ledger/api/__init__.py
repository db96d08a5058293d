"""The HTTP API: ``create_app`` builds one Flask app around one Ledger."""

from __future__ import annotations

import io
import json
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import swagger_ui_bundle
from flask import Flask, Response, abort, g, request, send_from_directory
from flask_smorest import Api
from werkzeug.wsgi import LimitedStream

from ..application import Ledger
from ..config import load_environment
from . import (
    access_needs,
    audit,
    consents,
    errors,
    export,
    health,
    links,
    pages,
    participants,
    payments,
    reports,
    study,
    uses,
)
from .fastjson import OrjsonProvider
from .openapi_links import LedgerPositionPlugin, LinksPlugin
from .parsing import BodyMediaTypePlugin, query_parameters
from .ratelimit import FailureLimiter
from .schemas import ProblemSchema

log = logging.getLogger("ledger.access")
MAX_BODY = 64 * 1024
# On every response (with a CSP for its kind of page), including gunicorn's own refusals.
SECURITY_HEADERS = {"X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer",
                    "X-Frame-Options": "DENY", "Cache-Control": "no-store"}
HSTS = "max-age=31536000"
API_CSP = "default-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
PAGES_CSP = ("default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; "
             "frame-ancestors 'none'; base-uri 'none'")
DOCS_CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; "
            "img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'")

DOCS_START = """window.addEventListener("load", function () {
  var root = document.getElementById("swagger-ui-container");
  window.ui = SwaggerUIBundle({url: root.dataset.specUrl, dom_id: "#swagger-ui-container"});
});
"""


# The headers the server always sends with a problem of these statuses.
RETRY_AFTER = {"Retry-After": {
    "description": "seconds to wait before asking again (RFC 9110 section 10.2.3)",
    "required": True, "schema": {"type": "integer", "minimum": 1}}}
PROBLEM_HEADERS: dict[int, dict[str, Any]] = {
    401: {"WWW-Authenticate": {"description": 'Bearer realm="ledger"', "required": True,
                               "schema": {"type": "string"}}},
    # too many failed sign-ins from this client (auth.py): until the oldest ages out
    429: RETRY_AFTER,
    # the views are behind a write (errors.ledger_error, for ViewsBehind)
    503: RETRY_AFTER,
}


class LedgerApi(Api):  # type: ignore[misc]
    """flask-smorest's Api with errors documented as problem+json."""

    ERROR_SCHEMA = ProblemSchema
    DEFAULT_ERROR_RESPONSE_NAME = None

    def _register_responses(self) -> None:
        from http import HTTPStatus

        from flask_smorest.utils import prepare_response

        for status in HTTPStatus:
            response: dict[str, Any] = {"description": status.phrase}
            if status >= 400:
                response["schema"] = self.ERROR_SCHEMA
                prepare_response(response, self.spec, "application/problem+json")
            if status in PROBLEM_HEADERS:
                response["headers"] = PROBLEM_HEADERS[status]
            self.spec.components.response(status.name, response, lazy=True)


class LengthChecked(LimitedStream):
    """``wsgi.input`` up to its Content-Length, raising ``IncompleteBody`` if it ends before."""

    def on_disconnect(self, error: Exception | None = None) -> None:
        raise errors.IncompleteBody()


class BoundedBody:
    """WSGI middleware for the bodies a server hands over as ``wsgi.input_terminated``
    (gunicorn), which Werkzeug then trusts as they are.

    A chunked body (no Content-Length) is read here, up to the limit. Werkzeug bounds such a
    body by ``MAX_CONTENT_LENGTH`` but, reading it whole, stops at the limit without an error: a
    body of 200 KiB was cut to its first 64 KiB, and if that much parsed, it was accepted. Here a
    chunked body is read once, to one byte past the limit; beyond it the request is marked and
    answered 413 before the app reads anything.

    A body with a Content-Length is checked as the app reads it: one that ends before that
    length (the client closed its side, or timed out, mid-body) raises ``IncompleteBody``, a
    400 (``errors.incomplete_body``). gunicorn hands over what came and Werkzeug does not check
    it: a registration cut short after a whole JSON object was recorded (201), and a
    participant's withdrawal form cut after its first scope withdrew that one alone. It is
    checked lazily, not read here: a request refused before its body is needed (no token)
    does not wait for a body that may never come."""

    TOO_LARGE = "ledger.body_too_large"

    def __init__(self, app: Callable[..., Iterable[bytes]], limit: int) -> None:
        self.app = app
        self.limit = limit

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        if environ.get("wsgi.input_terminated") and environ.get("CONTENT_LENGTH"):
            length = environ["CONTENT_LENGTH"]
            if length.isascii() and length.isdigit():  # (gunicorn refuses any other form)
                environ["wsgi.input"] = LengthChecked(environ["wsgi.input"], int(length))
        elif environ.get("wsgi.input_terminated") and not environ.get("CONTENT_LENGTH"):
            stream, parts, size = environ["wsgi.input"], [], 0
            while size <= self.limit:
                part = stream.read(self.limit + 1 - size)
                if not part:
                    break
                parts.append(part)
                size += len(part)
            if size > self.limit:
                environ[self.TOO_LARGE] = True
                parts = []
            body = b"".join(parts)
            environ["wsgi.input"] = io.BytesIO(body)
            environ["CONTENT_LENGTH"] = str(len(body))
        return self.app(environ, start_response)


class LedgerFlask(Flask):
    """Flask, except that an exception Flask logs itself (one raised inside an error handler)
    is logged by route pattern and type only: the raw path can carry a participant's link, and a
    traceback can carry anything."""

    def log_exception(self, exc_info: Any) -> None:
        rule = request.url_rule.rule if request.url_rule else "<unmatched>"
        kind = exc_info[0].__name__ if exc_info and exc_info[0] else "unknown"
        self.logger.error("unhandled %s on %s %s", kind, request.method, rule)


def create_app(config: Mapping[str, Any] | None = None) -> Flask:
    """The app. ``config`` may hold ``LEDGER`` (a Ledger to use) or ``ENV`` (its environment)."""
    config = dict(config or {})
    app = LedgerFlask(__name__, static_folder=None)  # the pages serve their one stylesheet
    # Paths are exactly as documented: "//participants" is a 404, not a redirect to the merged
    # path (werkzeug builds that redirect from the request's Host header).
    app.url_map.merge_slashes = False
    app.json = OrjsonProvider(app)
    app.config.update(
        API_TITLE="Consent and remuneration ledger",
        API_VERSION="1.0",
        OPENAPI_VERSION="3.0.3",
        OPENAPI_URL_PREFIX="/api/v1",
        OPENAPI_JSON_PATH="openapi.json",
        OPENAPI_SWAGGER_UI_PATH="docs",
        OPENAPI_SWAGGER_UI_URL="/api/v1/docs/static/",
        MAX_CONTENT_LENGTH=MAX_BODY,
    )
    ledger = config.pop("LEDGER", None) or Ledger(config.pop("ENV", None) or load_environment())
    app.config.update(config)
    app.extensions["ledger"] = ledger
    app.extensions["auth_failures"] = FailureLimiter()
    app.extensions["link_failures"] = FailureLimiter()

    api = LedgerApi(app, spec_kwargs={"info": {"description": "Consents, access needs and payments "
                                                         "for participatory research."},
                                      "extra_plugins": [LinksPlugin(), LedgerPositionPlugin(),
                                                        BodyMediaTypePlugin()]})
    api.spec.components.security_scheme("bearerAuth", {"type": "http", "scheme": "bearer"})
    for module in (study, participants, consents, uses, access_needs, payments, links, audit,
                   reports, export):
        api.register_blueprint(module.blp)
    app.extensions["query_parameters"] = query_parameters(api.spec.to_dict())
    app.register_blueprint(health.blp)
    app.register_blueprint(pages.blp)
    errors.register(app)

    @app.get("/api/v1/docs/static/<path:filename>")
    def swagger_static(filename: str) -> Response:
        """Swagger UI's own files, served locally (no CDN)."""
        return send_from_directory(swagger_ui_bundle.swagger_ui_path, filename)

    @app.get("/api/v1/docs/start.js")
    def docs_start() -> Response:
        """Starts Swagger UI (templates/swagger_ui.html), kept out of the page for the CSP."""
        return Response(DOCS_START, mimetype="text/javascript")

    app.wsgi_app = BoundedBody(app.wsgi_app, MAX_BODY)  # type: ignore[method-assign]
    https = ledger.settings.base_url.startswith("https://")

    @app.before_request
    def start_timer() -> None:
        g.started = time.perf_counter()
        ledger.forget_saved_position()
        if request.environ.get(BoundedBody.TOO_LARGE):
            abort(413)

    @app.after_request
    def secure_and_log(response: Response) -> Response:
        is_docs = request.path.startswith("/api/v1/docs")
        is_page = errors.is_participant_page()
        response.headers.update(SECURITY_HEADERS)
        response.headers["Content-Security-Policy"] = (
            DOCS_CSP if is_docs else PAGES_CSP if is_page else API_CSP)
        if https:  # served behind TLS (the links say so): browsers keep to it for a year
            response.headers["Strict-Transport-Security"] = HSTS
        position = ledger.last_saved_position()
        if position is not None and not is_page:  # read-your-writes: GET /participants?min_position=
            # (not on the participant pages: the log's size says how busy the study is)
            response.headers["Ledger-Position"] = str(position)
        # The route's pattern, never the raw path or query: paths can carry tokens.
        rule = request.url_rule.rule if request.url_rule else "<unmatched>"
        log.info(json.dumps({
            "method": request.method, "route": rule, "status": response.status_code,
            "ms": round((time.perf_counter() - g.get("started", time.perf_counter())) * 1000, 1),
            "token": g.get("token_id"), "bytes": response.calculate_content_length(),
        }))
        return response

    return app
