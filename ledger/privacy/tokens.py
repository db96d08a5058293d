"""API tokens: 256 random bits shown once, stored only as a keyed hash (HMAC-SHA256)."""

from __future__ import annotations

import hashlib
import hmac
import secrets
import unicodedata
from dataclasses import dataclass
from datetime import UTC, datetime

from ..domain.vocab import NOT_ON_ONE_LINE
from ..store import Sql

ROLES = ("staff", "auditor", "admin")
BIDI_CONTROLS = frozenset("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")
PREFIX = "lgr_"


@dataclass(frozen=True)
class TokenInfo:
    """Who a token belongs to (never the token itself)."""

    id: str
    role: str
    name: str
    created_at: str
    revoked_at: str | None


class TokenStore:
    """Mint, look up, list and revoke bearer tokens."""

    def __init__(self, sql: Sql, hmac_key: bytes) -> None:
        self.sql = sql
        self._key = hmac_key
        sql.execute(
            "CREATE TABLE IF NOT EXISTS {t}ledger_tokens (id TEXT PRIMARY KEY, "
            "digest TEXT NOT NULL UNIQUE, role TEXT NOT NULL, name TEXT NOT NULL, "
            "created_at TEXT NOT NULL, revoked_at TEXT)"
        )

    def _digest(self, token: str) -> str:
        return hmac.new(self._key, token.encode(), hashlib.sha256).hexdigest()

    def create(self, role: str, name: str) -> tuple[TokenInfo, str]:
        """A new token for ``role``; the plaintext is returned once and never stored."""
        if role not in ROLES:
            raise ValueError(f"role must be one of: {', '.join(ROLES)}")
        if not name.strip() or len(name) > 100:
            raise ValueError("name must be 1 to 100 characters")
        if any(unicodedata.category(ch) in NOT_ON_ONE_LINE or ch in BIDI_CONTROLS
               for ch in name):
            # `ledger tokens list` prints one token per line, tab-separated, to a terminal;
            # and a name an admin reads there must show what it is: no invisible characters
            # (zero-width spaces, direction marks, byte order marks) to hide or fake one
            raise ValueError("name must be plain text: no tabs, line breaks, control "
                             "characters or invisible formatting characters")
        token = PREFIX + secrets.token_urlsafe(32)
        info = TokenInfo(secrets.token_hex(8), role, name.strip(),
                         datetime.now(UTC).isoformat(timespec="seconds"), None)
        self.sql.execute(
            "INSERT INTO {t}ledger_tokens (id, digest, role, name, created_at) "
            "VALUES (%s, %s, %s, %s, %s)",
            (info.id, self._digest(token), info.role, info.name, info.created_at),
        )
        return info, token

    def lookup(self, token: str) -> TokenInfo | None:
        """The live token's owner, or None (unknown, malformed or revoked)."""
        if not token.startswith(PREFIX) or len(token) > 100:
            return None
        rows = self.sql.query(
            "SELECT id, role, name, created_at, revoked_at FROM {t}ledger_tokens "
            "WHERE digest = %s", (self._digest(token),))
        if not rows or rows[0]["revoked_at"] is not None:
            return None
        r = rows[0]
        return TokenInfo(r["id"], r["role"], r["name"], r["created_at"], None)

    def list(self) -> list[TokenInfo]:
        """Every token ever minted, without secrets."""
        rows = self.sql.query(
            "SELECT id, role, name, created_at, revoked_at FROM {t}ledger_tokens "
            "ORDER BY created_at, id")
        return [TokenInfo(r["id"], r["role"], r["name"], r["created_at"], r["revoked_at"])
                for r in rows]

    def revoke(self, token_id: str) -> bool:
        """Revoke by id; False if there is no such live token."""
        live = [t for t in self.list() if t.id == token_id and t.revoked_at is None]
        if not live:
            return False
        self.sql.execute(
            "UPDATE {t}ledger_tokens SET revoked_at = %s WHERE id = %s",
            (datetime.now(UTC).isoformat(timespec="seconds"), token_id),
        )
        return True
