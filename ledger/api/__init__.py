"""The HTTP API: ``create_app`` builds one Flask app around one Ledger."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping
from typing import Any

import swagger_ui_bundle
from flask import Flask, Response, g, request, send_from_directory
from flask_smorest import Api

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
from .openapi_links import LinksPlugin
from .ratelimit import FailureLimiter
from .schemas import ProblemSchema

log = logging.getLogger("ledger.access")
MAX_BODY = 64 * 1024
API_CSP = "default-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
PAGES_CSP = ("default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; "
             "frame-ancestors 'none'; base-uri 'none'")
DOCS_CSP = ("default-src 'none'; script-src 'self' 'unsafe-inline'; style-src 'self'; "
            "img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'")


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
            self.spec.components.response(status.name, response, lazy=True)


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
    app = LedgerFlask(__name__)
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
                                      "extra_plugins": [LinksPlugin()]})
    api.spec.components.security_scheme("bearerAuth", {"type": "http", "scheme": "bearer"})
    for module in (study, participants, consents, uses, access_needs, payments, links, audit,
                   reports, export):
        api.register_blueprint(module.blp)
    app.register_blueprint(health.blp)
    app.register_blueprint(pages.blp)
    errors.register(app)

    @app.get("/api/v1/docs/static/<path:filename>")
    def swagger_static(filename: str) -> Response:
        """Swagger UI's own files, served locally (no CDN)."""
        return send_from_directory(swagger_ui_bundle.swagger_ui_path, filename)

    @app.before_request
    def start_timer() -> None:
        g.started = time.perf_counter()
        ledger.forget_saved_position()

    @app.after_request
    def secure_and_log(response: Response) -> Response:
        is_docs = request.path.startswith("/api/v1/docs")
        is_page = errors.is_participant_page()
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Referrer-Policy"] = "no-referrer"
        response.headers["X-Frame-Options"] = "DENY"
        response.headers["Content-Security-Policy"] = (
            DOCS_CSP if is_docs else PAGES_CSP if is_page else API_CSP)
        response.headers["Cache-Control"] = "no-store"
        position = ledger.last_saved_position()
        if position is not None:  # read-your-writes: GET /participants?min_position=
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
