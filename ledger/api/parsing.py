"""How request bodies and query strings are read: stricter than webargs' defaults.

- A body that is not declared as JSON is refused (415), rather than ignored: webargs would read
  it as "no body", so a note sent with curl's default form type was silently dropped, and a
  required field reported missing when it had been sent.
- Any JSON the parser cannot take is a 400 "Invalid JSON body", including an integer longer
  than Python converts (``ValueError``, not a ``JSONDecodeError``: it was a 500). So is what
  Python's parser takes but RFC 8259 does not mean: a key given twice in one object (the last
  would win, silently) and NaN or Infinity.
- A query parameter the operation does not document (or gives twice) is a 422 naming it, as an
  unknown field of a body already is: ``refuse_unknown_query_parameters``, which every API view
  runs once its caller is authenticated (webargs ignores unknown query parameters, and sees the
  query string only of the views that declare a query schema).
"""

from __future__ import annotations

import json
import re
from http import HTTPStatus
from typing import Any

import flask_smorest
import marshmallow as ma
from apispec import BasePlugin
from flask import Request, current_app, request
from webargs import core
from webargs.flaskparser import FlaskParser, abort, is_json_request


class StrictJSONError(json.JSONDecodeError):
    """JSON that Python's parser takes but that is ambiguous or not JSON: said as it is."""


def _one_value_per_key(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """An object whose keys are each given once: ``{"amount": "25.00", "amount": "2500"}``
    would otherwise record the last silently. (The key is not repeated: it is submitted text.)"""
    obj = dict(pairs)
    if len(obj) != len(pairs):
        raise StrictJSONError("a key is given more than once in one object", "?", 0)
    return obj


def _no_constant(name: str) -> Any:
    raise StrictJSONError(f"{name} is not JSON", "?", 0)


def parse_strict_json(data: bytes) -> Any:
    """A request body as JSON (RFC 8259): each key once per object, no NaN or Infinity."""
    try:
        text = data.decode()
    except UnicodeDecodeError as error:
        raise json.JSONDecodeError(f"Bytes decoding error : {error.reason}", "?",
                                   error.start) from None
    return json.loads(text, object_pairs_hook=_one_value_per_key, parse_constant=_no_constant)


class LedgerParser(FlaskParser):
    """webargs' Flask parser, for bodies as above."""

    def _raw_load_json(self, req: Request) -> Any:
        if not is_json_request(req):
            if req.content_length or req.get_data(cache=True):
                abort(415, messages={"Content-Type": [
                    "the body must be sent as application/json"]})
            return core.missing
        try:
            return parse_strict_json(req.get_data(cache=True))
        except json.JSONDecodeError:
            raise
        except ValueError as error:  # e.g. an integer of more than 4,300 digits
            raise json.JSONDecodeError(type(error).__name__, "?", 0) from None

    def _handle_invalid_json_error(self, error: Any, req: Request, *args: Any,
                                   **kwargs: Any) -> Any:
        message = error.msg if isinstance(error, StrictJSONError) else "Invalid JSON body."
        abort(400, exc=error, messages={"json": [message]})


class Blueprint(flask_smorest.Blueprint):  # type: ignore[misc]
    """flask-smorest's Blueprint, reading arguments with ``LedgerParser``."""

    ARGUMENTS_PARSER = LedgerParser()


# A position in the log (a notification id) fits SQL's BIGINT; a larger one reached the query
# and overflowed (a 500).
MAX_POSITION = 2**63 - 1


class QueryInt(ma.fields.Integer):
    """An integer in a query string, written in ASCII digits with an optional minus.

    marshmallow converts with ``int()``, which also takes "+5", " 5", "5_0" and other scripts'
    digits ("５"); a query parameter means one plain spelling."""

    DIGITS = re.compile(r"-?[0-9]{1,19}\Z")

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> int:
        if isinstance(value, str) and not self.DIGITS.match(value):
            raise self.make_error("invalid")
        return super()._deserialize(value, attr, data, **kwargs)  # type: ignore[no-any-return]


class StrictBoolean(ma.fields.Boolean):
    """A JSON ``true`` or ``false`` and nothing else.

    marshmallow's Boolean also takes "yes", "on", "1", 1 and 0; these fields record facts
    (whether benefits advice was offered), which a loosely typed value should not decide."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> bool:
        if not isinstance(value, bool):
            raise self.make_error("invalid")
        return value



class BodyMediaTypePlugin(BasePlugin):  # type: ignore[misc]
    """Document the 415 that ``LedgerParser`` gives on every operation that takes a body."""

    def operation_helper(self, path: str | None = None,
                         operations: dict[str, Any] | None = None, **_: Any) -> None:
        for operation in (operations or {}).values():
            if isinstance(operation, dict) and "requestBody" in operation:
                operation.setdefault("responses", {}).setdefault(
                    "415", HTTPStatus.UNSUPPORTED_MEDIA_TYPE.name)


RULE_VARIABLE = re.compile(r"<(?:[^:<>]+:)?([^<>]+)>")


def query_parameters(spec: dict[str, Any]) -> dict[tuple[str, str], frozenset[str]]:
    """(OpenAPI path, METHOD) -> the query parameters the document gives that operation."""
    allowed = {}
    for path, operations in spec.get("paths", {}).items():
        shared = operations.get("parameters", [])
        for method, operation in operations.items():
            if isinstance(operation, dict) and "responses" in operation:
                params = [*shared, *operation.get("parameters", [])]
                allowed[(path, method.upper())] = frozenset(
                    p["name"] for p in params if isinstance(p, dict) and p.get("in") == "query")
    return allowed


def refuse_unknown_query_parameters() -> None:
    """422 naming each query parameter the operation does not document, or that is given more
    than once, on every operation (webargs checks only those that declare a query schema). A
    write sent with a stray ``?name=...`` would otherwise succeed, and its URL, in some proxy's
    log, carry the name."""
    if not request.args or request.url_rule is None:
        return
    method = "GET" if request.method == "HEAD" else request.method
    path = RULE_VARIABLE.sub(r"{\1}", request.url_rule.rule)
    allowed = current_app.extensions["query_parameters"].get((path, method))
    if allowed is None:
        return  # not an operation of the document
    unknown = [name for name in request.args if name not in allowed]
    if unknown:
        abort(422, messages={"query": {name: ["Unknown field."] for name in unknown}})
    repeated = [name for name in request.args if len(request.args.getlist(name)) > 1]
    if repeated:  # no parameter takes a list: which one was meant is not ours to guess
        abort(422, messages={"query": {name: ["given more than once"] for name in repeated}})
