"""The compiled dumper gives exactly marshmallow's output (ledger/api/fastdump.py).

The whole suite also runs with LEDGER_CHECK_DUMPS=1, so every response the API dumps is compared
with marshmallow's; here the edges are tried on purpose, with generated values.
"""

from __future__ import annotations

import datetime as dt
import uuid
from decimal import Decimal
from types import SimpleNamespace
from typing import Any

import marshmallow
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from marshmallow import fields, post_dump

from ledger.api import fastdump
from ledger.api.fastdump import DumpMismatch, Schema, compiled


class Inner(Schema):
    name = fields.String()
    at = fields.DateTime(allow_none=True)
    n = fields.Integer()


class Outer(Schema):
    id = fields.UUID()
    text = fields.String(allow_none=True)
    flag = fields.Boolean()
    raw = fields.Raw()
    count = fields.Integer(dump_default=7)
    as_text = fields.Integer(as_string=True)  # no converter: marshmallow's own way
    when = fields.DateTime()
    stamp = fields.DateTime(format="timestamp")
    day = fields.DateTime(format="%Y-%m-%d")
    renamed = fields.String(data_key="renamedKey")
    source = fields.String(attribute="elsewhere")
    tags = fields.List(fields.String())
    inner = fields.Nested(Inner, allow_none=True)
    inners = fields.List(fields.Nested(Inner))
    many_inner = fields.Nested(Inner, many=True)
    by_name = fields.Dict(keys=fields.String(), values=fields.Nested(Inner))
    plain = fields.Dict()
    items = fields.List(fields.Integer())  # a dict's own attribute name
    amount = fields.Decimal(as_string=True)  # no converter
    constant = fields.Constant("always")  # no attribute is read
    computed = fields.Method("compute")

    def compute(self, obj: Any) -> str:
        value = obj.get("text") if isinstance(obj, dict) else getattr(obj, "text", None)
        return f"<{value}>"


class Hooked(Schema):
    name = fields.String()

    @post_dump
    def shout(self, data: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        return {**data, "name": str(data.get("name", "")).upper()}


text = st.text(max_size=8)
moment = st.datetimes(timezones=st.sampled_from([dt.UTC, dt.timezone(dt.timedelta(hours=5))]))
inner = st.fixed_dictionaries({}, optional={
    "name": st.one_of(text, st.none(), st.integers(), st.binary(max_size=4).map(
        lambda b: b.hex().encode())),
    "at": st.one_of(moment, st.none()), "n": st.one_of(st.integers(), st.none())})
outer = st.fixed_dictionaries({"items": st.lists(st.integers(), max_size=3)}, optional={
    "id": st.one_of(st.uuids(), st.none()), "text": st.one_of(text, st.none()),
    "flag": st.one_of(st.booleans(), st.none(), st.integers(0, 1)),
    "raw": st.one_of(st.integers(), text, st.lists(st.integers(), max_size=3)),
    "count": st.one_of(st.integers(), st.none()), "as_text": st.integers(),
    "when": moment, "stamp": moment, "day": moment, "renamed": text, "elsewhere": text,
    "tags": st.one_of(st.lists(st.one_of(text, st.none()), max_size=3), st.none()),
    "inner": st.one_of(inner, st.none()),
    "inners": st.lists(st.one_of(inner, st.none()), max_size=3),
    "many_inner": st.lists(inner, max_size=3),
    "by_name": st.dictionaries(text, st.one_of(inner, st.none()), max_size=3),
    "plain": st.dictionaries(text, st.integers(), max_size=3),
    "amount": st.decimals(allow_nan=False, allow_infinity=False, places=2),
})


def same(a: Any, b: Any) -> bool:
    return repr(a) == repr(b)  # types and key order too


def outcome(dump: Any, *args: Any, **kwargs: Any) -> tuple[str, str]:
    """What a dump gives: its result (by repr), or the type of what it raised."""
    try:
        return "result", repr(dump(*args, **kwargs))
    except Exception as e:  # noqa: BLE001 - the same failure is the same behaviour
        return "raised", type(e).__name__


@settings(max_examples=300, deadline=None)
@given(outer)
def test_compiled_dump_equals_marshmallows_for_dicts(obj: dict[str, Any]) -> None:
    schema = Outer()
    assert outcome(compiled(schema), obj, False) == outcome(marshmallow.Schema.dump, schema, obj)


@settings(max_examples=100, deadline=None)
@given(st.lists(outer, max_size=4))
def test_many_and_objects_with_attributes(objs: list[dict[str, Any]]) -> None:
    schema = Outer(many=True)
    assert outcome(compiled(schema), objs, True) == outcome(marshmallow.Schema.dump, schema,
                                                             objs)
    as_objects = [SimpleNamespace(**o) for o in objs]  # read by getattr, not by key
    assert outcome(compiled(Outer()), as_objects, True) == outcome(
        marshmallow.Schema.dump, Outer(), as_objects, many=True)


def test_the_edges_marshmallow_has() -> None:
    schema = Outer()
    full = {"items": []}  # missing, "items" would be dict.items (marshmallow's get_value)
    empty = compiled(schema)(full, False)
    # a missing key is left out, unless the field has a dump_default; a dict's own attribute
    # name missing as a key is read as the attribute, as marshmallow does (and then fails)
    assert empty["count"] == 7 and "text" not in empty and "renamedKey" not in empty
    assert same(empty, marshmallow.Schema.dump(schema, full))
    assert outcome(compiled(schema), {}, False) == ("raised", "TypeError")
    assert outcome(marshmallow.Schema.dump, schema, {}) == ("raised", "TypeError")
    out = compiled(schema)({"renamed": "x", "elsewhere": "y", "amount": Decimal("1.50"),
                            "items": [1]}, False)
    assert out["renamedKey"] == "x" and out["source"] == "y" and out["amount"] == "1.50"
    assert out["constant"] == "always"


def test_a_schema_with_hooks_is_dumped_by_marshmallow() -> None:
    assert Hooked().dump({"name": "ada"}) == {"name": "ADA"}


def test_a_self_nesting_schema_compiles() -> None:
    class Tree(Schema):
        label = fields.String()
        children = fields.List(fields.Nested(lambda: Tree()))

    tree = {"label": "a", "children": [{"label": "b", "children": []}]}
    assert Tree().dump(tree) == tree


def test_the_check_catches_a_difference(monkeypatch: pytest.MonkeyPatch) -> None:
    """With LEDGER_CHECK_DUMPS on (as in this suite) a wrong converter cannot go unnoticed."""
    assert fastdump.CHECK, "the suite must run with LEDGER_CHECK_DUMPS=1"
    real = fastdump._converter

    def wrong(field: fields.Field) -> Any:
        if type(field) is fields.String:
            return lambda v: str(v).upper()
        return real(field)

    monkeypatch.setattr(fastdump, "_converter", wrong)
    with pytest.raises(DumpMismatch) as raised:
        Inner().dump({"name": "Ada Lovelace"})
    assert "$.name" in str(raised.value)
    assert "Ada" not in str(raised.value) and "ADA" not in str(raised.value)  # where, not what


def test_api_ids_and_times_as_marshmallow_writes_them() -> None:
    pid, at = uuid.uuid4(), dt.datetime(2026, 11, 25, 9, 30, tzinfo=dt.UTC)
    assert Inner().dump({"name": pid, "at": at}) == {"name": str(pid), "at": at.isoformat()}
