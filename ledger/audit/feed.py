"""One event as the audit feed shows it: position, type, aggregate, time, actor and its data, with
personal fields left sealed and shown only as a marker."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any
from uuid import UUID

from ..domain import is_redacted
from ..domain.money import format_pence
from ..privacy.mapper import Sealed

PERSONAL = "[personal data]"
ENVELOPE = {"originator_id", "originator_version", "timestamp", "originator_topic"}


def audit_item(notification_id: int, topic: str, event: Any) -> dict[str, Any]:
    """A JSON-ready description of one stored event."""
    data = _plain({k: v for k, v in vars(event).items() if k not in ENVELOPE and k != "by"})
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
        return _with_pounds({str(k): _plain(v) for k, v in value.items()})
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def _with_pounds(fields: dict[str, Any]) -> dict[str, Any]:
    """Beside each amount stored in integer pence (``amount_pence: 2500``), the amount as the
    rest of the API gives it, a string in pounds (``amount: "25.00"``): the contract's form,
    so an auditor can match the feed against the staff API's answers."""
    pounds = {k.removesuffix("_pence"): format_pence(v) for k, v in fields.items()
              if k.endswith("_pence") and type(v) is int and k.removesuffix("_pence")
              and k.removesuffix("_pence") not in fields}
    return {**fields, **pounds} if pounds else fields
