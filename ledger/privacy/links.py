"""Personal withdrawal links: 256 random bits in the URL, stored only as a keyed hash with expiry.

Whether a link still works is decided by the participant's record (``Participant.check_link``):
a newer link or a revocation stops it. This table only maps a token's digest to whose link it is.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from datetime import datetime
from uuid import UUID

from ..store import Sql

TOKEN = re.compile(r"^[A-Za-z0-9_-]{43}$")  # secrets.token_urlsafe(32)


@dataclass(frozen=True)
class LinkRef:
    """Whose link a token is, and which one."""

    participant_id: UUID
    link_id: UUID


class LinkStore:
    """Create tokens and find whose they are."""

    def __init__(self, sql: Sql, hmac_key: bytes) -> None:
        self.sql = sql
        self._key = hmac_key
        sql.execute(
            "CREATE TABLE IF NOT EXISTS {t}ledger_links (digest TEXT PRIMARY KEY, "
            "participant_id TEXT NOT NULL, link_id TEXT NOT NULL, expires_at TEXT NOT NULL)"
        )

    def digest(self, token: str) -> str:
        """The keyed hash a token is stored (and, abbreviated, logged) as."""
        return hmac.new(self._key, token.encode(), hashlib.sha256).hexdigest()

    def create(self, participant_id: UUID, link_id: UUID, expires_at: datetime) -> str:
        """A new token for a link; the plaintext leaves here once, inside the URL."""
        token = secrets.token_urlsafe(32)
        self.sql.execute(
            "INSERT INTO {t}ledger_links (digest, participant_id, link_id, expires_at) "
            "VALUES (%s, %s, %s, %s)",
            (self.digest(token), participant_id.hex, link_id.hex, expires_at.isoformat()))
        return token

    def find(self, token: str) -> LinkRef | None:
        """Whose link this is, or None for anything that is not a token we issued."""
        if not TOKEN.match(token):
            return None
        rows = self.sql.query(
            "SELECT participant_id, link_id FROM {t}ledger_links WHERE digest = %s",
            (self.digest(token),))
        if not rows:
            return None
        return LinkRef(UUID(rows[0]["participant_id"]), UUID(rows[0]["link_id"]))

    def csrf_token(self, ref: LinkRef) -> str:
        """The form token for a link's pages (no session needed: it is bound to the link)."""
        return hmac.new(self._key, b"csrf|" + ref.link_id.bytes, hashlib.sha256).hexdigest()

    def check_csrf(self, ref: LinkRef, given: str) -> bool:
        """Constant-time check of a submitted form token (as bytes: compare_digest refuses text
        with non-ASCII characters, which a hostile form may send)."""
        return hmac.compare_digest(self.csrf_token(ref).encode(),
                                   (given or "").encode("utf-8", "surrogatepass"))
