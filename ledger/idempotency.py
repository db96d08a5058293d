"""Idempotency keys: the first response to a (token, key) pair is kept and replayed byte for byte.

A successful request's response is written in the same transaction as its events (see
``store.IDEMPOTENCY_INSERT`` and the recorders there), so a key and its effect can never
disagree, and the race between two requests with one key is decided by the table's primary key.
A refusal writes nothing, not even its key. Rows are kept for at least 24 hours (48).

Every kept response is sealed with the data key of the person the write was for (AES-GCM,
bound to the token and key it answered): a response can hold what they said (an access need's
note, a reason), so it is never in plain text in the store. Their erasure marks their rows
(``forget``: the request's fingerprint, a digest of what they said, is dropped) before it
destroys the key that opens them; a retry after it is answered as any write for them is then.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from .privacy.keystore import DataKeyStore
from .store import Sql

KEEP = timedelta(hours=48)
PURGE = "DELETE FROM {t}ledger_idempotency WHERE created_at < %s"
SEALED = b"\x00s1"  # then the person's id (16 bytes), a nonce (12) and the AES-GCM ciphertext
SEALED_FOR = len(SEALED) + 16  # the prefix that says whose a sealed response is
ERASED = "erased"  # the fingerprint of a row whose person was erased


@dataclass(frozen=True)
class Stored:
    """A kept response and the fingerprint of the request that produced it."""

    request_hash: str
    status: int
    body: bytes


@dataclass
class IdempotentRequest:
    """A request to run once: who sent it, its key and fingerprint, and how to render its result."""

    token_id: str
    key: str
    request_hash: str
    status: int
    render: Callable[[Any], bytes]
    body: bytes | None = field(default=None)


class IdempotencyStore:
    """Look up, keep and expire idempotency keys."""

    def __init__(self, sql: Sql, hmac_key: bytes, keys: DataKeyStore) -> None:
        self.sql = sql
        self._key = hmac_key
        self._data_keys = keys
        self._calls = 0
        if not sql.all_exist("ledger_idempotency", "ledger_idempotency_created"):
            self._create()  # (see Sql.all_exist: no DDL while others may be writing)

    def _create(self) -> None:
        blob = "BYTEA" if self.sql.is_postgres else "BLOB"
        self.sql.execute(
            "CREATE TABLE IF NOT EXISTS {t}ledger_idempotency (token_id TEXT NOT NULL, "
            "idem_key TEXT NOT NULL, request_hash TEXT NOT NULL, status INTEGER NOT NULL, "
            f"body {blob} NOT NULL, created_at TEXT NOT NULL, PRIMARY KEY (token_id, idem_key))"
        )
        # The purge finds old keys by this index, not by reading every key kept for 48 hours
        # (it runs in a write transaction: a scan of the table would hold every writer back).
        self.sql.execute("CREATE INDEX IF NOT EXISTS ledger_idempotency_created "
                         "ON {t}ledger_idempotency (created_at)")

    def stored_key(self, key: str, operation: str | None = None) -> str:
        """What is kept of a client's Idempotency-Key: a keyed digest, never its text (a key is
        whatever the client chose, and could hold a name). Rows kept in plain text by an
        earlier version are purged with the rest after 48 hours; a retry meanwhile of a request
        made before the upgrade is answered as a new request (a second payment is refused).

        ``operation``: each operation's keys are its own (a client that sent one key with every
        request, when only payments took it, is not refused on its next payment); a payment's
        key is digested without it, as before keys were taken on other writes."""
        scope = b"" if operation is None else operation.encode() + b"\x00"
        digest = hmac.new(self._key, b"Idempotency-Key\x00" + scope + key.encode(),
                          hashlib.sha256)
        return "h1:" + digest.hexdigest()

    def fingerprint(self, request: bytes) -> str:
        """A keyed digest of a request: equal requests match, and the stored digest reveals
        nothing about a body (such as a payment reference) to anyone without the master key."""
        return hmac.new(self._key, request, hashlib.sha256).hexdigest()

    def row(self, once: IdempotentRequest, result: Any, person: UUID) -> tuple[Any, ...]:
        """Render ``result`` (``once.body``: the response as sent) and return the row to insert
        with the events, its body sealed with ``person``'s data key. A person already erased
        has no key, and nothing personal left to seal: the domain refuses every write that
        carries personal text for them (only a follow-up marked done, without a note, is still
        recorded), and their views show only REDACTED."""
        once.body = once.render(result)
        kept, data_key = once.body, self._data_keys.get(person)
        if data_key is not None:
            nonce = secrets.token_bytes(12)
            kept = SEALED + person.bytes + nonce + AESGCM(data_key).encrypt(
                nonce, once.body, _aad(once.token_id, once.key))
        return (once.token_id, once.key, once.request_hash, once.status, kept,
                datetime.now(UTC).isoformat())

    def opened(self, kept: Stored, token_id: str, key: str) -> bytes | None:
        """A kept response as it was sent; None if it was sealed for a person since erased."""
        if not kept.body.startswith(SEALED):
            return kept.body  # (kept unsealed: by an earlier version, or after an erasure)
        data_key = self._data_keys.get(UUID(bytes=kept.body[len(SEALED):SEALED_FOR]))
        if data_key is None:
            return None
        nonce, sealed = kept.body[SEALED_FOR:SEALED_FOR + 12], kept.body[SEALED_FOR + 12:]
        return AESGCM(data_key).decrypt(nonce, sealed, _aad(token_id, key))

    def forget(self, person: UUID) -> None:
        """On ``person``'s erasure, before their data key goes: drop the fingerprints of the
        requests kept for them (keyed digests of what they said), so a retry is answered as any
        write for an erased person, and nothing derived from their words outlives the key."""
        prefix = (f"substring(body from 1 for {SEALED_FOR})" if self.sql.is_postgres
                  else f"substr(body, 1, {SEALED_FOR})")
        self.sql.execute(f"UPDATE {{t}}ledger_idempotency SET request_hash = %s "
                         f"WHERE {prefix} = %s", (ERASED, SEALED + person.bytes))

    def maybe_purge(self) -> None:
        """Now and then (every 500th call, and the first), forget keys older than ``KEEP``."""
        self._calls += 1
        if self._calls % 500 == 1:
            self.purge()

    def purge(self) -> None:
        """Forget the keys kept for longer than ``KEEP``."""
        self.sql.execute(PURGE, ((datetime.now(UTC) - KEEP).isoformat(),))

    def lookup(self, token_id: str, key: str) -> Stored | None:
        """The kept response for a key, if any."""
        rows = self.sql.query(
            "SELECT request_hash, status, body FROM {t}ledger_idempotency "
            "WHERE token_id = %s AND idem_key = %s", (token_id, key))
        if not rows:
            return None
        r = rows[0]
        return Stored(r["request_hash"], int(r["status"]), bytes(r["body"]))


def _aad(token_id: str, key: str) -> bytes:
    return f"idempotency|{token_id}|{key}".encode()
