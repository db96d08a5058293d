"""One event as the audit feed shows it: position, type, aggregate, time, actor and its data, with
personal fields left sealed and shown only as a marker."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any
from uuid import UUID

from ..domain import is_redacted
from ..privacy.mapper import Sealed

PERSONAL = "[personal data]"
ENVELOPE = {"originator_id", "originator_version", "timestamp", "originator_topic"}


def audit_item(notification_id: int, topic: str, event: Any) -> dict[str, Any]:
    """A JSON-ready description of one stored event."""
    data = {k: _plain(v) for k, v in vars(event).items() if k not in ENVELOPE and k != "by"}
    return {
        "id": notification_id,
        "topic": topic,
        "aggregate_id": event.originator_id,
        "version": event.originator_version,
        "recorded_at": event.timestamp,
        "actor": getattr(event, "by", None),
        "data": data,
    }


def _plain(value: Any) -> Any:
    if isinstance(value, Sealed) or is_redacted(value):
        return PERSONAL
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, UUID | Decimal):
        return str(value)
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value
