"""Liveness and readiness probes (no authentication, no data)."""

from __future__ import annotations

from flask import Blueprint, jsonify
from flask.typing import ResponseReturnValue

from .common import ledger

blp = Blueprint("health", __name__)


@blp.get("/healthz")
def healthz() -> ResponseReturnValue:
    """The process is up."""
    return jsonify(status="ok")


@blp.get("/readyz")
def readyz() -> ResponseReturnValue:
    """The database answers and the study is set up."""
    try:
        ledger().sql.query("SELECT 1 AS one")
        ledger().study()
    except Exception as e:  # noqa: BLE001 - readiness reports, it does not raise
        return jsonify(status="unavailable", reason=type(e).__name__), 503
    return jsonify(status="ready")
