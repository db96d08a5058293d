"""The views' rows in a form that compares (each table's rows sorted), read from the database or
from a replay of the log up to a position: the invariant the views keep is that the two agree."""

from __future__ import annotations

from typing import Any

from ledger.application import Ledger
from ledger.projections.projector import Replay
from ledger.projections.rows import rows_key

Rows = dict[str, list[tuple[str, ...]]]


def comparable(rows: dict[str, list[dict[str, Any]]]) -> Rows:
    return {k: sorted(map(rows_key, v)) for k, v in rows.items()}


def view_rows(ledger: Ledger) -> Rows:
    """The rows in the view tables now."""
    return comparable(ledger.projector.views.all_rows())


def replayed_rows(ledger: Ledger, position: int) -> Rows:
    """The rows a replay of the log up to ``position`` gives (notification ids may have gaps)."""
    replay = Replay(ledger.mapper, ledger.events, keep=None)
    for n in ledger.recorder.select_notifications(start=1, limit=max(position, 1), stop=position):
        replay.apply(n)
    return comparable(replay.all_rows())
