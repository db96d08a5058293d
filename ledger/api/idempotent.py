"""Idempotency-Key on the staff writes: a retried request is answered, not recorded again.

Required on ``POST .../payments`` (the contract); accepted on every other staff write that
records something, so a client whose answer was lost (a timeout, a dropped connection, a 500
that could not tell whether the write was kept) can send the same request again safely:

- same key, same request: the first response again, byte for byte, and nothing written;
- same key, a different request to the same operation (another body, another person): 422,
  nothing written (each operation's keys are its own);
- concurrent requests with one key: one is recorded, the others get its response (or a 422).

The key and the response are written in the command's own transaction (``Ledger._change``), so
the store's primary key decides every race, and a first request is not slowed by a look-up:
a replay is found when its save clashes with the kept key, or the domain refuses it. The kept
response is sealed with the person's data key (see ``ledger.idempotency``); once they are
erased, a retry is answered 409 ``ParticipantErased``, as any write for them.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from functools import wraps
from typing import Any

from flask import Response, g, json, request
from marshmallow import Schema

from ..domain.errors import LedgerError, ParticipantErased
from ..idempotency import ERASED, IdempotentRequest, Stored
from . import errors
from .common import ledger

# Printable ASCII but the comma: a header sent twice reaches the app as one, joined by commas,
# and two keys must not become a third.
KEY = re.compile(r"^[\x20-\x2b\x2d-\x7e]{1,200}$")


def key_header(required: bool) -> dict[str, Any]:
    """The header's OpenAPI parameter."""
    return {
        "in": "header", "name": "Idempotency-Key", "required": required,
        "schema": {"type": "string", "minLength": 1, "maxLength": 200,
                   "pattern": "^[\\x20-\\x2b\\x2d-\\x7e]{1,200}$"},
        "description": ("a unique value per intended payment (e.g. a UUID)" if required else
                        "optional: a unique value per intended change (e.g. a UUID); a retry "
                        "with the same key and request gets the first response again, and "
                        "records nothing"),
    }


def _bad_key(required: bool) -> Response:
    if required:
        return errors.problem(
            400, "One Idempotency-Key header is required (1 to 200 printable ASCII characters, "
                 "no commas).",
            {"Idempotency-Key": ["required once: 1 to 200 printable ASCII characters, no "
                                 "commas"]},
            code="IdempotencyKeyRequired")
    return errors.problem(
        400, "The Idempotency-Key header, when given, must be given once: 1 to 200 printable "
             "ASCII characters, no commas.",
        {"Idempotency-Key": ["when given, once: 1 to 200 printable ASCII characters, no "
                             "commas"]},
        code="IdempotencyKeyInvalid")


def require_idempotency_key(view: Any) -> Any:
    """400 before anything else is read when the Idempotency-Key header is missing or unusable."""
    @wraps(view)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if not KEY.match(request.headers.get("Idempotency-Key", "")):
            return _bad_key(required=True)
        return view(*args, **kwargs)
    return wrapper


def idempotent(out: Schema, status: int, *, shape: Callable[[Any], Any] = lambda r: r,
               named: bool = True) -> Callable[[Any], Any]:
    """Run a staff write once per (token, Idempotency-Key) when the header is given.

    Goes under ``@blp.response``: the view gets the validated body and its path's ids, plus
    ``once`` (None without a key), which it hands to its one ``Ledger`` call. ``shape`` turns
    that call's result into what ``out`` dumps. ``named``: the key is the
    operation's own, and the fingerprint names every id in the path (``False`` only for
    payments, whose key digest and fingerprint, made before keys were taken elsewhere, are kept
    as they were, so that keys kept across an upgrade still match)."""
    def decorate(view: Any) -> Any:
        @wraps(view)
        def wrapper(self: Any, body: dict[str, Any], **path: Any) -> Any:
            given = request.headers.get("Idempotency-Key")
            if given is None:
                return view(self, body, once=None, **path)
            if not KEY.match(given):
                return _bad_key(required=False)  # (a required key was checked before)
            store = ledger().idempotency
            store.maybe_purge()
            token_id = str(g.token_id)
            key = store.stored_key(given, request.endpoint if named else None)
            person = path.get("participant_id")
            what: dict[str, Any] = {"participant": str(person), "body": body}
            if named:
                what["path"] = {k: str(v) for k, v in sorted(path.items())}
            once = IdempotentRequest(
                token_id=token_id, key=key, status=status,
                # The validated request, so equivalent requests match (defaults filled in,
                # ids normalised).
                request_hash=store.fingerprint(
                    json.dumps(what, sort_keys=True, default=str).encode()),
                render=lambda result: json.dumps(out.dump(shape(result)),
                                                 separators=(",", ":")).encode(),
            )
            try:
                view(self, body, once=once, **path)
            except ParticipantErased:
                raise  # (not a replay of what they said, even before their key is destroyed)
            except LedgerError:
                kept = store.lookup(token_id, key)  # a request with this key may have won
                if kept is None:
                    raise
                return _replay_or_refuse(kept, once)
            assert once.body is not None, "the view did not hand its key to the ledger"
            return _response(once.status, once.body)
        return wrapper
    return decorate


def _replay_or_refuse(kept: Stored, once: IdempotentRequest) -> Response:
    if kept.request_hash == ERASED:
        return errors.ledger_error(ParticipantErased("this participant's data has been erased"))
    if kept.request_hash != once.request_hash:
        return errors.problem(
            422, "This Idempotency-Key was already used for a different request.",
            {"Idempotency-Key": ["already used with a different request"]},
            code="IdempotencyKeyReused")
    body = ledger().idempotency.opened(kept, once.token_id, once.key)
    if body is None:  # (sealed for a person erased since)
        return errors.ledger_error(ParticipantErased("this participant's data has been erased"))
    response = _response(kept.status, body)
    # Read-your-writes for a client whose first answer was lost: the log's position now, which
    # is at or after the write's own (the views at this position include it).
    response.headers["Ledger-Position"] = str(ledger().recorder.max_notification_id())
    return response


def _response(status: int, body: bytes) -> Response:
    return Response(body, status=status, mimetype="application/json")  # only successes are kept
