"""Shared fixtures: a Ledger on a temp SQLite file, and on a fresh PostgreSQL schema.

PostgreSQL tests run against LEDGER_TEST_DATABASE_URL (default: the local test database). They are
skipped with the reason when no server answers, except in CI (CI=true), where they must run.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest

# Every API response dumped by the compiled dumper is also dumped by marshmallow and compared
# (ledger/api/fastdump.py): set before any ledger module is imported, and passed on to the
# servers the end-to-end tests start.
os.environ["LEDGER_CHECK_DUMPS"] = "1"

from ledger.application import Ledger  # noqa: E402

PG_URL = os.environ.get("LEDGER_TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test")
IN_CI = os.environ.get("CI", "").lower() == "true"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--slow", action="store_true", default=False,
                     help="run the model-based test longer, with a random seed")


def _pg_unavailable_reason() -> str | None:
    try:
        import psycopg

        with psycopg.connect(PG_URL.split("?")[0], connect_timeout=3) as conn:
            conn.execute("SELECT 1")
    except Exception as e:  # noqa: BLE001 - any failure means "no server here"
        return f"PostgreSQL not reachable at {PG_URL}: {type(e).__name__}"
    return None


@pytest.fixture(scope="session")
def pg_available() -> None:
    """Skip (or, in CI, fail) when PostgreSQL cannot be reached."""
    reason = _pg_unavailable_reason()
    if reason and IN_CI:
        pytest.fail(f"CI=true requires the PostgreSQL tests to run: {reason}")
    if reason:
        pytest.skip(reason)


def drop_schema(schema: str) -> None:
    """Remove a test schema and everything in it."""
    import psycopg
    from psycopg import sql

    with psycopg.connect(PG_URL.split("?")[0], autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))


@pytest.fixture
def pg_schema(pg_available: None) -> Iterator[str]:
    """A fresh, empty PostgreSQL schema for one test."""
    schema = f"t_{uuid.uuid4().hex[:12]}"
    yield schema
    drop_schema(schema)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def store_env(request: pytest.FixtureRequest, tmp_path) -> dict[str, str]:  # type: ignore[no-untyped-def]
    """Ledger environment for one test, on each store in turn."""
    env = {"LEDGER_DATA_DIR": str(tmp_path / "data")}
    if request.param == "postgres":
        schema = request.getfixturevalue("pg_schema")
        env["LEDGER_DATABASE_URL"] = f"{PG_URL.split('?')[0]}?schema={schema}"
    return env


@pytest.fixture
def ledger(store_env: dict[str, str]) -> Iterator[Ledger]:
    """A Ledger with the pilot study, on each store in turn."""
    lg = Ledger(store_env)
    lg.init_study(by="test")
    yield lg
    lg.close()


def wait_for_postgres_backends(env: dict[str, str], application_name: str | None = None) -> None:
    """After killing a process that wrote to PostgreSQL, wait until no other backend of the
    database is still running a statement. The server may be finishing a COMMIT the killed
    process had sent; it becomes visible only when it ends. A check must see the store as it
    will stay, not a moment before that commit lands (SQLite has no such window: a killed
    process's commit is done or not when it dies). ``application_name``: only the backends of
    processes started with that ``PGAPPNAME`` (libpq reads it), else any in the database."""
    import time

    import psycopg

    deadline = time.monotonic() + 30
    with psycopg.connect(env["LEDGER_DATABASE_URL"].split("?")[0], autocommit=True) as conn:
        while conn.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                " AND pid <> pg_backend_pid() AND backend_type = 'client backend'"
                " AND state = 'active' AND (%s::text IS NULL OR application_name = %s)",
                (application_name, application_name)).fetchone()[0]:  # type: ignore[index]
            assert time.monotonic() < deadline, "a killed server's statement still running"
            time.sleep(0.01)
