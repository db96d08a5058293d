"""Idempotency keys: the first response to (token, key) is kept and replayed byte for byte.

A key is claimed by inserting its row (the primary key makes the claim atomic across workers and
hosts); the claimant runs the command and stores the response; anyone else with the same key waits
for that response. Rows are kept for at least 24 hours.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from eventsourcing.persistence import IntegrityError

from .store import Sql

KEEP = timedelta(hours=48)
ABANDONED = timedelta(seconds=120)  # a claim never completed (its process died) may be retaken


@dataclass(frozen=True)
class Stored:
    """A completed request's fingerprint and response."""

    request_hash: str
    status: int | None
    body: bytes | None


class IdempotencyStore:
    """Claim, complete, release and look up idempotency keys."""

    def __init__(self, sql: Sql) -> None:
        self.sql = sql
        blob = "BYTEA" if sql.is_postgres else "BLOB"
        sql.execute(
            "CREATE TABLE IF NOT EXISTS {t}ledger_idempotency (token_id TEXT NOT NULL, "
            "idem_key TEXT NOT NULL, request_hash TEXT NOT NULL, status INTEGER, "
            f"body {blob}, created_at TEXT NOT NULL, PRIMARY KEY (token_id, idem_key))"
        )
        self._claims = 0

    def claim(self, token_id: str, key: str, request_hash: str) -> Stored | None:
        """None if this caller now owns the key; otherwise what the first request left."""
        now = datetime.now(UTC)
        self._claims += 1
        if self._claims % 200 == 1:
            self.sql.execute("DELETE FROM {t}ledger_idempotency WHERE created_at < %s",
                             ((now - KEEP).isoformat(),))
        for _ in range(2):
            try:
                self.sql.execute(
                    "INSERT INTO {t}ledger_idempotency (token_id, idem_key, request_hash, "
                    "created_at) VALUES (%s, %s, %s, %s)",
                    (token_id, key, request_hash, now.isoformat()))
                return None
            except IntegrityError:
                # Retake a claim whose owner died before answering; otherwise report it.
                self.sql.execute(
                    "DELETE FROM {t}ledger_idempotency WHERE token_id = %s AND idem_key = %s "
                    "AND status IS NULL AND created_at < %s",
                    (token_id, key, (now - ABANDONED).isoformat()))
                existing = self.get(token_id, key)
                if existing is not None:
                    return existing
        return self.get(token_id, key)

    def get(self, token_id: str, key: str) -> Stored | None:
        """The row for a key, if any."""
        rows = self.sql.query(
            "SELECT request_hash, status, body FROM {t}ledger_idempotency "
            "WHERE token_id = %s AND idem_key = %s", (token_id, key))
        if not rows:
            return None
        r = rows[0]
        return Stored(r["request_hash"], r["status"],
                      None if r["body"] is None else bytes(r["body"]))

    def wait(self, token_id: str, key: str, seconds: float = 10.0) -> Stored | None:
        """Wait for the owner of a key to store its response."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            stored = self.get(token_id, key)
            if stored is None or stored.status is not None:
                return stored
            time.sleep(0.02)
        return self.get(token_id, key)

    def complete(self, token_id: str, key: str, status: int, body: bytes) -> None:
        """Keep the response to replay."""
        self.sql.execute(
            "UPDATE {t}ledger_idempotency SET status = %s, body = %s "
            "WHERE token_id = %s AND idem_key = %s", (status, body, token_id, key))

    def release(self, token_id: str, key: str) -> None:
        """Give the key up (the request failed unexpectedly, so a retry may run it)."""
        self.sql.execute(
            "DELETE FROM {t}ledger_idempotency WHERE token_id = %s AND idem_key = %s "
            "AND status IS NULL", (token_id, key))
