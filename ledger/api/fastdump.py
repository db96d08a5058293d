"""Marshmallow's ``Schema.dump``, compiled: the same output, several times faster.

Every response body of the API is dumped through a marshmallow schema (the schemas are also the
OpenAPI document). Marshmallow walks each field through several generic calls per value; on a
page of 50 participant records that was the largest single cost of the whole request, more than
reading the page from the views. No maintained library compiles marshmallow 4 schemas (the old
``toastedmarshmallow`` stopped at marshmallow 2), so this module does, by hand, in the smallest
way that keeps marshmallow's semantics exactly:

- each schema is compiled once, on first use, into a list of (output key, attribute, converter);
- a converter exists only for the field types whose ``_serialize`` is simple and known (String,
  UUID, Integer, DateTime with a named format, Boolean and Raw, List, Dict and Nested of those);
  any other field, a field with a custom accessor or a dotted attribute, and any schema with
  dump hooks fall back to marshmallow's own code for that field or schema;
- a value missing from a dict is looked up the way marshmallow does (``Field.get_value``), and
  ``dump_default`` applies as there.

With ``LEDGER_CHECK_DUMPS=1`` (the test suite sets it, including for the servers its end-to-end
tests start) every dump is also made by marshmallow and compared, strictly (types and key order,
by ``repr``): any difference raises, so the whole suite doubles as the test of this module.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import marshmallow
from marshmallow import fields, missing
from marshmallow.decorators import POST_DUMP, PRE_DUMP
from marshmallow.utils import ensure_text_type

Converter = Callable[[Any], Any]
Dumper = Callable[[Any, bool], Any]
CHECK = os.environ.get("LEDGER_CHECK_DUMPS") == "1"


class DumpMismatch(AssertionError):
    """The compiled dump differs from marshmallow's (only raised with LEDGER_CHECK_DUMPS=1)."""


class Schema(marshmallow.Schema):
    """A marshmallow Schema whose ``dump`` runs compiled (same result)."""

    def dump(self, obj: Any, *, many: bool | None = None) -> Any:
        many = self.many if many is None else bool(many)
        result = compiled(self)(obj, many)
        if CHECK:
            expected = marshmallow.Schema.dump(self, obj, many=many)
            if repr(result) != repr(expected):  # where, never the values (personal data)
                raise DumpMismatch(f"{type(self).__name__}: the compiled dump differs from "
                                   f"marshmallow's at {_where(result, expected)}")
        return result


def _where(a: Any, b: Any, path: str = "$") -> str:
    """The first place two dumps differ, as a path with the types found there."""
    if type(a) is not type(b):
        return f"{path} ({type(a).__name__} != {type(b).__name__})"
    if isinstance(a, dict):
        if list(a) != list(b):
            return f"{path} (keys {sorted(map(str, a))} != {sorted(map(str, b))})"
        return next((_where(a[k], b[k], f"{path}.{k}") for k in a
                     if repr(a[k]) != repr(b[k])), path)
    if isinstance(a, list):
        if len(a) != len(b):
            return f"{path} (length {len(a)} != {len(b)})"
        return next((_where(x, y, f"{path}[{i}]") for i, (x, y) in enumerate(zip(a, b, strict=True))
                     if repr(x) != repr(y)), path)
    return path


def compiled(schema: marshmallow.Schema) -> Dumper:
    """The compiled dumper of a schema instance (built on first use, then kept on it)."""
    dumper: Dumper | None = schema.__dict__.get("_ledger_dumper")
    if dumper is None:
        dumper = _compile(schema)
        schema.__dict__["_ledger_dumper"] = dumper
    return dumper


def _compile(schema: marshmallow.Schema) -> Dumper:
    def exact(obj: Any, many: bool) -> Any:
        return marshmallow.Schema.dump(schema, obj, many=many)

    if (schema._hooks[PRE_DUMP] or schema._hooks[POST_DUMP] or schema.dict_class is not dict
            or type(schema).get_attribute is not marshmallow.Schema.get_attribute):
        return exact
    accessor = schema.get_attribute
    plan: list[tuple[str, str, bool, fields.Field, Converter | None]] = []
    for name, field in schema.dump_fields.items():
        key = field.data_key if field.data_key is not None else name
        attribute = field.attribute if field.attribute is not None else name
        convert = _converter(field)
        if (not field._CHECK_ATTRIBUTE or "." in attribute
                or type(field).get_value is not fields.Field.get_value):
            convert = None
        # A key missing from a dict is then looked up as an attribute (marshmallow's
        # get_value): only dict's own attributes (``items``, ``keys``...) can be found so.
        plan.append((key, name if convert is None else attribute, hasattr(dict, attribute),
                     field, convert))

    def one(obj: Any) -> dict[str, Any]:
        out: dict[str, Any] = {}
        is_dict = type(obj) is dict
        for key, attribute, shadowed, field, convert in plan:
            if convert is None:  # marshmallow's own way, for this field
                value = field.serialize(attribute, obj, accessor=accessor)
                if value is not missing:
                    out[key] = value
                continue
            value = obj.get(attribute, missing) if is_dict else missing
            if value is missing:
                if shadowed or not is_dict:
                    value = field.get_value(obj, attribute, accessor=accessor)
                if value is missing:
                    default = field.dump_default
                    value = default() if callable(default) else default
                    if value is missing:
                        continue
            out[key] = None if value is None else convert(value)
        return out

    def dump(obj: Any, many: bool) -> Any:
        if many and obj is not None:
            return [one(item) for item in obj]
        return one(obj)
    return dump


def _same(value: Any) -> Any:
    return value


def _converter(field: fields.Field) -> Converter | None:
    """A function doing what ``field._serialize`` does to a value that is not None, or None when
    the field is not one whose serialisation is known here."""
    kind = type(field)
    if kind._serialize is fields.Field._serialize:  # Boolean, Raw, Field: the value itself
        return _same
    if kind is fields.String:
        return lambda v: v if type(v) is str else ensure_text_type(v)
    if kind is fields.UUID:
        return str
    if kind is fields.Integer and not getattr(field, "as_string", True):
        return int
    if kind is fields.DateTime:
        assert isinstance(field, fields.DateTime)
        fmt = field.format or field.DEFAULT_FORMAT
        func = field.SERIALIZATION_FUNCS.get(fmt)
        return func if func is not None else (lambda v: v.strftime(fmt))
    if kind is fields.List:
        assert isinstance(field, fields.List)
        inner = _converter(field.inner)
        if inner is None:
            return None
        return lambda v: [None if x is None else inner(x) for x in v]
    if kind is fields.Dict:
        assert isinstance(field, fields.Dict)
        if field.mapping_type is not dict:
            return None
        if field.key_field is None and field.value_field is None:
            return dict
        keys = _same if field.key_field is None else _converter(field.key_field)
        values = _same if field.value_field is None else _converter(field.value_field)
        if keys is None or values is None:
            return None
        return lambda v: {None if k is None else keys(k): None if x is None else values(x)
                          for k, x in v.items()}
    if kind is fields.Nested:
        assert isinstance(field, fields.Nested)
        nested = field.schema
        many = bool(nested.many or field.many)
        # compiled lazily: a schema may nest itself
        return lambda v: compiled(nested)(v, many)
    return None
