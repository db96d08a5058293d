"""Settings from the environment. ``load_environment`` is the one place that reads os.environ."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from dotenv import dotenv_values

DEFAULT_LINK_DAYS = 180


class SettingsError(ValueError):
    """A LEDGER_* variable has a value the ledger cannot use (the message names it)."""


@dataclass(frozen=True)
class Settings:
    """What the ledger needs to know about where it runs."""

    data_dir: Path
    database_url: str | None
    base_url: str
    link_days: int = DEFAULT_LINK_DAYS
    projections: str = "inline"

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Settings:
        """Read LEDGER_* variables from a mapping (never from os.environ directly)."""
        return cls(
            data_dir=Path(env.get("LEDGER_DATA_DIR") or "./var"),
            database_url=_database_url(env.get("LEDGER_DATABASE_URL") or None),
            base_url=(env.get("LEDGER_BASE_URL") or "http://127.0.0.1:8000").rstrip("/"),
            link_days=_link_days(env.get("LEDGER_LINK_DAYS")),
            projections=_projections(env.get("LEDGER_PROJECTIONS")),
        )

    @property
    def sqlite_path(self) -> Path:
        """The SQLite database file used when no LEDGER_DATABASE_URL is set."""
        return self.data_dir / "ledger.sqlite3"


def _link_days(value: str | None) -> int:
    """LEDGER_LINK_DAYS: a whole number of days from 1 to 3650 (ten years)."""
    if not value:
        return DEFAULT_LINK_DAYS
    try:
        days = int(value)
    except ValueError:
        days = 0
    if not 1 <= days <= 3650:
        raise SettingsError("LEDGER_LINK_DAYS must be a whole number of days from 1 to 3650")
    return days


SCHEMA_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")


def _database_url(value: str | None) -> str | None:
    """LEDGER_DATABASE_URL: ``postgresql://user:password@host:port/dbname``, optionally with
    ``?schema=name`` and nothing else. Anything else in the query (``sslmode=require``, say) would
    be dropped, and a connection meant to be encrypted would silently not be: refused instead.
    libpq's own variables (``PGSSLMODE``, ``PGSSLROOTCERT``, ...) apply to every connection."""
    if value is None:
        return None
    from urllib.parse import parse_qsl, urlparse

    u = urlparse(value)
    if u.scheme not in ("postgres", "postgresql") or not u.path.strip("/"):
        raise SettingsError("LEDGER_DATABASE_URL must look like "
                            "postgresql://user@host:port/dbname")
    try:
        names = [name for name, _ in parse_qsl(u.query, keep_blank_values=True,
                                                strict_parsing=bool(u.query))]
    except ValueError:
        names = ["?"]
    others = sorted({name for name in names if name != "schema"})
    if others or len(names) > 1:
        raise SettingsError(
            "LEDGER_DATABASE_URL takes only ?schema=name after the database name (it had "
            f"{', '.join(others) if others else 'schema twice'}); set connection options with "
            "libpq's variables instead, e.g. PGSSLMODE=verify-full and PGSSLROOTCERT")
    schema = dict(parse_qsl(u.query, keep_blank_values=True)).get("schema")
    if schema is not None and not SCHEMA_NAME.fullmatch(schema):
        # The library names the schema in its statements unquoted: a capital letter or a hyphen
        # broke `ledger init` half-way, leaving a half-made schema that every later init hit.
        raise SettingsError("the ?schema= of LEDGER_DATABASE_URL must be lower-case letters, "
                            "digits and underscores, starting with a letter or underscore "
                            "(at most 63)")
    try:
        u.port  # noqa: B018 - raises for a port that is not a number, or out of range
    except ValueError:
        raise SettingsError("the port in LEDGER_DATABASE_URL must be a number from 1 to "
                            "65535") from None
    return value


def _projections(value: str | None) -> str:
    """LEDGER_PROJECTIONS: ``inline`` (each process keeps the views up to date after its own
    saves) or ``external`` (``ledger projections run`` does, e.g. beside several PostgreSQL hosts)."""
    value = (value or "inline").strip().lower()
    if value not in ("inline", "external"):
        raise SettingsError("LEDGER_PROJECTIONS must be inline or external")
    return value


def load_environment(env_file: str | Path = ".env") -> dict[str, str]:
    """The process environment, with a .env file's values filling in what it does not set."""
    merged = {k: v for k, v in dotenv_values(env_file).items() if v is not None}
    merged.update(os.environ)
    return merged
