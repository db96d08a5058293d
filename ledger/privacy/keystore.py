"""Per-participant data keys, wrapped by the master key, in their own table beside the events.

Destroying a participant's row is erasure: their sealed fields can never be read again, while the
events, their order and their hashes stay exactly as they were (crypto-shredding).
"""

from __future__ import annotations

import logging
import secrets
import time
from uuid import UUID

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from eventsourcing.persistence import PersistenceError

from ..store import Sql

TABLE = "ledger_data_keys"
SCRUB_PENDING = "erasure_scrub_pending"
log = logging.getLogger("ledger.privacy")


class KeyStoreError(Exception):
    """The keys table holds something that does not unwrap with this master key."""


class DataKeyStore:
    """Create, fetch and destroy the 256-bit data key of each participant."""

    def __init__(self, sql: Sql, wrapping_key: bytes) -> None:
        self.sql = sql
        self._wrap = AESGCM(wrapping_key)
        sql.execute(
            f"CREATE TABLE IF NOT EXISTS {{t}}{TABLE} ("
            "participant_id TEXT PRIMARY KEY, wrapped BYTEA NOT NULL)"
            if sql.is_postgres else
            f"CREATE TABLE IF NOT EXISTS {TABLE} ("
            "participant_id TEXT PRIMARY KEY, wrapped BLOB NOT NULL) WITHOUT ROWID"
        )

    def create(self, participant_id: UUID) -> bytes:
        """Make and store a new data key for a participant."""
        key = AESGCM.generate_key(bit_length=256)
        nonce = secrets.token_bytes(12)
        wrapped = nonce + self._wrap.encrypt(nonce, key, participant_id.bytes)
        self.sql.execute(
            f"INSERT INTO {{t}}{TABLE} (participant_id, wrapped) VALUES (%s, %s)",
            (participant_id.hex, wrapped),
        )
        return key

    def get(self, participant_id: UUID) -> bytes | None:
        """The participant's data key, or None once it has been destroyed."""
        rows = self.sql.query(
            f"SELECT wrapped FROM {{t}}{TABLE} WHERE participant_id = %s", (participant_id.hex,)
        )
        if not rows:
            return None
        wrapped = bytes(rows[0]["wrapped"])
        try:
            return self._wrap.decrypt(wrapped[:12], wrapped[12:], participant_id.bytes)
        except InvalidTag:
            raise KeyStoreError("a data key does not unwrap with this master key") from None

    def get_many(self, participant_ids: list[UUID]) -> dict[UUID, bytes | None]:
        """The data keys of several participants in one query (None for a destroyed key)."""
        found: dict[UUID, bytes | None] = dict.fromkeys(participant_ids)
        if not participant_ids:
            return found
        by_hex = {pid.hex: pid for pid in participant_ids}
        marks = ", ".join(["%s"] * len(by_hex))
        for row in self.sql.query(f"SELECT participant_id, wrapped FROM {{t}}{TABLE} "
                                  f"WHERE participant_id IN ({marks})", tuple(by_hex)):
            pid = by_hex[row["participant_id"]]
            wrapped = bytes(row["wrapped"])
            try:
                found[pid] = self._wrap.decrypt(wrapped[:12], wrapped[12:], pid.bytes)
            except InvalidTag:
                raise KeyStoreError("a data key does not unwrap with this master key") from None
        return found

    def discard(self, participant_id: UUID) -> None:
        """Remove a key that was created for a registration that was then not saved."""
        self.sql.execute(
            f"DELETE FROM {{t}}{TABLE} WHERE participant_id = %s", (participant_id.hex,))

    def exists(self, participant_id: UUID) -> bool:
        """True while the participant's key has not been destroyed."""
        return bool(self.sql.query(
            f"SELECT 1 AS one FROM {{t}}{TABLE} WHERE participant_id = %s", (participant_id.hex,)))

    def destroy(self, participant_id: UUID) -> bool:
        """Delete the key, then scrub the freed bytes from the database files. Returns whether the
        scrub completed; if not, it is remembered and retried by ``scrub_if_pending``."""
        with self.sql.transaction() as c:
            c.execute(f"DELETE FROM {{t}}{TABLE} WHERE participant_id = %s",
                      (participant_id.hex,))
            xid = "1"
            if self.sql.is_postgres:  # the deleting transaction: see _scrub
                c.execute("SELECT mod(txid_current(), 4294967296) AS xid")
                xid = str(c.fetchone()["xid"])
            c.execute("INSERT INTO {t}ledger_meta (name, value) VALUES (%s, %s) ON CONFLICT "
                      "(name) DO UPDATE SET value = excluded.value", (SCRUB_PENDING, xid))
        return self.scrub_if_pending()

    def scrub_if_pending(self, *, patient: bool = True) -> bool:
        """Finish scrubbing deleted keys from the files: True when nothing is left pending.
        ``patient``: on SQLite, keep trying for up to 2 s (else one short try)."""
        if not self.sql.query("SELECT 1 AS one FROM {t}ledger_meta WHERE name = %s",
                              (SCRUB_PENDING,)):
            return True
        if not self._scrub(patient):
            say = log.warning if patient else log.info  # (a retry: said once already)
            say("erasure: deleted keys not yet scrubbed from the database files; will retry")
            return False
        self.sql.execute("DELETE FROM {t}ledger_meta WHERE name = %s", (SCRUB_PENDING,))
        return True

    def _scrub(self, patient: bool = True) -> bool:
        if self.sql.is_postgres:
            # VACUUM FULL copies a deleted row that a transaction older than the delete could
            # still see: wait (stay pending) until no such transaction is open.
            pending = self.sql.query("SELECT value FROM {t}ledger_meta WHERE name = %s",
                                     (SCRUB_PENDING,))
            xid = int(pending[0]["value"]) if pending else 0
            older = self.sql.query(
                "SELECT count(*) AS n FROM pg_stat_activity WHERE datname = current_database() "
                "AND pid <> pg_backend_pid() AND (backend_xmin::text::bigint <= %s "
                "OR backend_xid::text::bigint < %s)", (xid, xid))
            if older[0]["n"]:
                return False
            # Rewrite the (small) tables so no dead tuple keeps the old bytes in a heap page: the
            # keys, and the kept requests, whose fingerprints of what the person said
            # (``IdempotencyStore.forget``, done before the key's delete) an UPDATE leaves in
            # the old row versions. Bounded wait: a long reader must not stall every other
            # request behind this lock.
            try:
                self.sql.maintenance(f"VACUUM FULL {{t}}{TABLE}, {{t}}ledger_idempotency",
                                     lock_timeout_ms=2000)
            except PersistenceError:
                return False
            return True
        # secure_delete zeroed the row in its page; a completed TRUNCATE checkpoint copies
        # that page into the database file and empties the WAL, which held the old images.
        deadline = time.monotonic() + (2 if patient else 0)  # then leave it pending
        while True:
            busy, _, _ = self.sql.checkpoint(busy_timeout_ms=200 if patient else 20)
            if busy == 0:
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.1)
