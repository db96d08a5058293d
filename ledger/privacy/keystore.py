"""Per-participant data keys, wrapped by the master key, in their own table beside the events.

Destroying a participant's row is erasure: their sealed fields can never be read again, while the
events, their order and their hashes stay exactly as they were (crypto-shredding).
"""

from __future__ import annotations

import secrets
from uuid import UUID

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from ..store import Sql

TABLE = "ledger_data_keys"


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

    def destroy(self, participant_id: UUID) -> None:
        """Delete the key and scrub the freed bytes from the database files where the engine allows."""
        self.sql.execute(
            f"DELETE FROM {{t}}{TABLE} WHERE participant_id = %s", (participant_id.hex,)
        )
        if self.sql.is_postgres:
            # Rewrite the (small) table so the deleted tuple is not left in a dead heap page.
            self.sql.maintenance(f"VACUUM FULL {{t}}{TABLE}")
        else:
            # secure_delete zeroed the row; truncating the WAL drops the old page images.
            self.sql.maintenance("PRAGMA wal_checkpoint(TRUNCATE)")
