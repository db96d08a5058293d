"""Small helpers shared by the API modules."""

from __future__ import annotations

from flask import current_app

from ..application import Ledger


def ledger() -> Ledger:
    """The app's one Ledger."""
    return current_app.extensions["ledger"]  # type: ignore[no-any-return]
