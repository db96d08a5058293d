"""JSON responses through orjson are the JSON Flask's own provider made (ledger/api/fastjson.py)."""

from __future__ import annotations

import datetime as dt
import json
import uuid
from dataclasses import dataclass
from decimal import Decimal

import pytest
from flask import Flask
from flask.json.provider import DefaultJSONProvider

from ledger.api.fastjson import OrjsonProvider


@dataclass
class Point:
    x: int
    label: str


def _bodies(obj: object) -> tuple[bytes, bytes]:
    app = Flask(__name__)
    ours, flasks = OrjsonProvider(app), DefaultJSONProvider(app)
    with app.app_context():
        return ours.response(obj).get_data(), flasks.response(obj).get_data()


@pytest.mark.parametrize("obj", [
    {"zeta": 1, "alpha": {"b": [1, 2.5, None, True], "a": "text"}, "mid": []},
    {"when": dt.datetime(2026, 11, 25, 9, 30, tzinfo=dt.UTC), "day": dt.date(2026, 11, 25)},
    {"id": uuid.UUID("12345678-1234-5678-1234-567812345678"), "amount": Decimal("25.00")},
    {"point": Point(3, "p"), "points": [Point(1, "a")]},
    {2: "non-string keys: orjson refuses them, Flask's provider encodes them", 1: "b"},
    {"huge": 2**70},
    [3, 1, 2],
], ids=["sorted-nested", "dates", "uuid-decimal", "dataclass", "int-key", "bigint", "list"])
def test_the_same_bytes_as_flask(obj: object) -> None:
    ours, flasks = _bodies(obj)
    assert ours == flasks


def test_beyond_ascii_the_same_json_sent_as_utf8() -> None:
    ours, flasks = _bodies({"name": "Zoë Ɓello", "b": "✓"})
    assert json.loads(ours) == json.loads(flasks) == {"name": "Zoë Ɓello", "b": "✓"}
    assert "Zoë".encode() in ours and b"\\u00eb" in flasks


def test_the_app_uses_it(ledger) -> None:
    from ledger.api import create_app

    app = create_app({"LEDGER": ledger})
    assert isinstance(app.json, OrjsonProvider)
    with app.app_context():
        assert app.json.response({"b": "é", "a": 2}).get_data() == '{"a":2,"b":"é"}\n'.encode()
