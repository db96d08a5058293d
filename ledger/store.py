"""Storage wiring: the eventsourcing environment for SQLite or PostgreSQL, and a small SQL helper
for the ledger's own tables (data keys, metadata) in the same database as the events."""

from __future__ import annotations

import os
import re
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, unquote, urlparse
from uuid import UUID

from eventsourcing.persistence import IntegrityError as PersistenceIntegrityError
from eventsourcing.persistence import InterfaceError as PersistenceInterfaceError
from eventsourcing.persistence import MapperDeserialisationError, Notification, StoredEvent
from eventsourcing.persistence import OperationalError as PersistenceOperationalError
from eventsourcing.postgres import PostgresApplicationRecorder, PostgresDatastore, PostgresFactory
from psycopg.errors import PipelineAborted
from psycopg.sql import SQL
from psycopg_pool import PoolClosed, PoolTimeout, TooManyRequests

from .config import Settings
from .group_commit import GroupCommit, Save
from .locks import FileLock, advisory_key
from .privacy.keys import write_secret_file

SQLITE_LOCK_TIMEOUT_S = 30
EVENTS_TABLE = "ledger_events"  # the library names it after the application ("Ledger")
COPY_FROM = 100  # rows from which PostgreSQL inserts go by COPY

IDEMPOTENCY_INSERT = (
    "INSERT INTO {t}ledger_idempotency (token_id, idem_key, request_hash, status, body, "
    "created_at) VALUES (%s, %s, %s, %s, %s, %s)"
)
IDEMPOTENCY_ROW = ", (%s, %s, %s, %s, %s, %s)"  # each further row of one multi-row INSERT


# The library's insert without its retry decorator (``_insert_retrying`` retries it itself).
PG_INSERT = PostgresApplicationRecorder.insert_events.__wrapped__  # type: ignore[attr-defined]
INSERT_TRIES = 10
# Failures of a try that never reached the server (no connection from the pool): it cannot
# have committed.
NEVER_REACHED_THE_SERVER = (PoolTimeout, PoolClosed, TooManyRequests)


PG_FACTORY = "ledger.store:LedgerPostgresFactory"  # the PERSISTENCE_MODULE of a PostgreSQL ledger


class LedgerPostgresApplicationRecorder(GroupCommit, PostgresApplicationRecorder):
    """Also writes an ``idempotency=`` row passed to ``save()``, in the events' transaction;
    saves made by this process's threads meanwhile are committed together (``GroupCommit``)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._setup_group_commit()

    def _insert_together(self, batch: list[Save]) -> list[Sequence[int] | None]:
        rows = [s.kwargs["idempotency"] for s in batch if s.kwargs.get("idempotency") is not None]
        ids = self._insert_retrying([e for s in batch for e in s.events], idempotency_rows=rows)
        assert ids is not None
        out: list[Sequence[int] | None] = []
        start = 0
        for s in batch:  # the ids come back in the order the events went in
            out.append(ids[start:start + len(s.events)])
            start += len(s.events)
        return out

    def _insert_alone(self, save: Save) -> Sequence[int] | None:
        return self._insert_retrying(save.events, **save.kwargs)

    def _insert_retrying(self, events: Sequence[StoredEvent], **kwargs: Any
                         ) -> Sequence[int] | None:
        """The library's insert, retried as the library does (up to 10 tries, 0.2 s apart) when
        it fails with the connection or the server. Once a try has failed after reaching the
        server (so it may have committed, its answer lost), look before each retry, and on a
        unique-key clash, whether the rows are the very ones sent (their states are ciphertexts
        with random nonces, so no other save has the same bytes): if so, that try committed,
        and this answers with their ids. The library retried blindly and met its own rows as a
        clash, so the command was refused ("already done", a duplicate id) although it had
        succeeded. If the store cannot be asked then, the outcome is unknown: an
        OperationalError (a 500), never a clash."""
        maybe_committed = False
        for attempt in range(1, INSERT_TRIES + 1):
            if maybe_committed:
                try:
                    ids = self._ids_if_stored(events)
                except (PersistenceInterfaceError, PersistenceOperationalError):
                    ids = None  # cannot ask just now: the try below will tell
                if ids is not None:
                    return ids
            try:
                return PG_INSERT(self, events, **kwargs)  # type: ignore[no-any-return]
            except PersistenceIntegrityError:
                if not maybe_committed:
                    raise
                try:
                    ids = self._ids_if_stored(events)
                except (PersistenceInterfaceError, PersistenceOperationalError) as error:
                    raise PersistenceOperationalError(
                        "the save may have been committed, and the store cannot be asked"
                    ) from error
                if ids is not None:
                    return ids
                raise
            except (PersistenceInterfaceError, PersistenceOperationalError) as error:
                if isinstance(error.__cause__, PipelineAborted):
                    # The server refused a statement of this try, and psycopg read its error
                    # while later ones were still being sent (see _insert_events): the library
                    # then loses that error, and the COMMIT is never sent, so nothing of this
                    # try was committed. Tried again at once, the failure is seen as itself.
                    if attempt == INSERT_TRIES:
                        raise
                    continue
                if not isinstance(error.__cause__, NEVER_REACHED_THE_SERVER):
                    maybe_committed = True
                if attempt == INSERT_TRIES:
                    raise
                time.sleep(0.2)
        raise AssertionError("unreachable")

    def _ids_if_stored(self, events: Sequence[StoredEvent]) -> list[int] | None:
        """The notification ids of ``events`` if exactly these are stored (same states), else
        None; raises the store's error if it cannot be asked."""
        if not events:
            return None
        table = f'"{self.datastore.schema}".{self.events_table_name}'
        found: list[int] = []
        with self.datastore.get_connection() as conn:
            for e in events:
                row = conn.execute(
                    f"SELECT notification_id, state FROM {table} WHERE originator_id = %s "
                    "AND originator_version = %s", (e.originator_id, e.originator_version)
                ).fetchone()
                if row is None or bytes(row["state"]) != bytes(e.state):
                    return None
                found.append(int(row["notification_id"]))
        return found

    # The idempotency rows go in with the events, in the same statement (a data-modifying WITH),
    # so that a clash on either is the statement's one error, read at the library's sync and
    # raised as the unique-key violation it is. In pipeline mode an error the client reads
    # while it is still sending later statements is lost by the library, which raises psycopg's
    # PipelineAborted instead. Sent first (in the library's hook for "other things"), a kept
    # key's clash (a retry) was reported that way in 93 of 100 clashing inserts, each taken for
    # a lost connection: a keyed replay slept 0.2 s and tried again, up to ten times, then a
    # 500. Sent after the events as a statement of its own, the events' clash was (31 of 50).
    def _insert_events(self, curs: Any, stored_events: Any, **kwargs: Any) -> None:
        super()._insert_events(curs, stored_events, **kwargs)
        rows = _idempotency_rows(kwargs)
        if rows and not stored_events:  # (the library then inserts no events)
            curs.execute(self._rows_insert(len(rows)), [v for row in rows for v in row])

    def _insert_stored_events(self, curs: Any, stored_events: Any, **kwargs: Any) -> None:
        rows = _idempotency_rows(kwargs)
        if not rows:
            super()._insert_stored_events(curs, stored_events, **kwargs)
            return
        # The library's steps (PostgresApplicationRecorder's, then PostgresRecorder's), with
        # the rows' INSERT put in front of its events' INSERT ... RETURNING notification_id.
        self._lock_table(curs)
        self._notify_channel(curs)
        events = [self.construct_pg_stored_event(e.originator_id, e.originator_version, e.topic,
                                                 e.state) for e in stored_events]
        curs.execute(SQL("WITH kept AS ({}) ").format(SQL(self._rows_insert(len(rows))))
                     + self.insert_events_statement,
                     [*(v for row in rows for v in row), events])

    def _rows_insert(self, n: int) -> str:
        statement = IDEMPOTENCY_INSERT + IDEMPOTENCY_ROW * (n - 1)  # (one statement, n rows)
        return statement.replace("{t}", f'"{self.datastore.schema}".')


def _idempotency_rows(kwargs: dict[str, Any]) -> list[tuple[Any, ...]]:
    """The idempotency rows a save carries: one (``idempotency=``) or a shared commit's."""
    rows = kwargs.get("idempotency_rows")
    if rows:
        return list(rows)
    return [kwargs["idempotency"]] if kwargs.get("idempotency") is not None else []


def postgres_env(url: str) -> dict[str, str]:
    """Translate ``postgresql://user:pw@host:port/db?schema=s`` into eventsourcing's variables."""
    u = urlparse(url)
    if u.scheme not in ("postgres", "postgresql") or not u.path.strip("/"):
        raise ValueError("LEDGER_DATABASE_URL must look like postgresql://user@host:port/dbname")
    query = parse_qs(u.query)
    return {
        "PERSISTENCE_MODULE": PG_FACTORY,
        "POSTGRES_DBNAME": unquote(u.path.strip("/")),
        "POSTGRES_HOST": u.hostname or "127.0.0.1",
        "POSTGRES_PORT": str(u.port or 5432),
        "POSTGRES_USER": unquote(u.username or "postgres"),
        "POSTGRES_PASSWORD": unquote(u.password or ""),
        "POSTGRES_SCHEMA": query.get("schema", [""])[0],
        "POSTGRES_POOL_SIZE": "5",
        "POSTGRES_MAX_OVERFLOW": "30",
        "POSTGRES_CONNECT_TIMEOUT": "10",
        "POSTGRES_LOCK_TIMEOUT": "30",
        "APPLICATION_RECORDER_TOPIC": "ledger.store:LedgerPostgresApplicationRecorder",
    }


class LedgerPostgresDatastore(PostgresDatastore):
    """The library's datastore, which renews its idle connections when one is found broken.

    When the server restarts, fails over or ends sessions, every connection idle in the pool
    is dead too, and each would fail one request before the pool replaced it: measured, 23
    requests in a row answered 500 after one drop. When a connection turns out broken (not
    for any other error: a lock timeout or a full disk leaves connections sound), the idle ones
    are closed and new ones opened by the pool's own workers (``drain``: no round trip in the
    request's thread). While all is well this costs nothing, unlike checking every connection
    before each use (``pre_ping``, a round trip a request)."""

    _renewing: threading.Lock  # set by LedgerPostgresFactory

    @contextmanager
    def get_connection(self) -> Iterator[Any]:
        held = None
        try:
            with super().get_connection() as conn:
                held = conn
                yield conn
        except (PersistenceOperationalError, PersistenceInterfaceError):
            if held is not None and held.broken:
                self.renew_idle_connections()
            raise

    def renew_idle_connections(self) -> None:
        if not self._renewing.acquire(blocking=False):
            return  # another thread is already at it
        try:
            self.pool.drain()
        except Exception:  # noqa: BLE001 - the server may still be down: the pool retries
            pass
        finally:
            self._renewing.release()


class LedgerPostgresFactory(PostgresFactory):
    """The library's PostgreSQL factory, with ``LedgerPostgresDatastore``."""

    def __init__(self, env: Any) -> None:
        super().__init__(env)
        # (the library builds its datastore inline, so the instance is given the subclass: it
        # adds methods and one attribute, the lock that lets one thread renew the pool at a time,
        # set here since the library's ``__init__`` has already run)
        self.datastore.__class__ = LedgerPostgresDatastore
        self.datastore._renewing = threading.Lock()  # type: ignore[attr-defined]


def _connect(env: dict[str, str]) -> Any:
    """An autocommit connection to the database the environment names (for set-up and checks,
    outside the library's pool)."""
    import psycopg

    return psycopg.connect(
        dbname=env["POSTGRES_DBNAME"], host=env["POSTGRES_HOST"], port=env["POSTGRES_PORT"],
        user=env["POSTGRES_USER"], password=env["POSTGRES_PASSWORD"] or None, autocommit=True,
        connect_timeout=10,
    )


def postgres_ledger_exists(env: dict[str, str]) -> bool:
    """Whether the database and schema hold a ledger (its events table), asked without creating
    anything: a mistyped database or schema is an error, not an empty ledger made on the spot."""
    with _connect(env) as conn:
        row = conn.execute("SELECT to_regclass(format('%%I.%%I', %s::text, %s::text))",
                           (env.get("POSTGRES_SCHEMA") or "public", EVENTS_TABLE)).fetchone()
    return row is not None and row[0] is not None


def ensure_postgres_schema(env: dict[str, str]) -> None:
    """Create the named schema if it is not the default one (the library expects it to exist)."""
    schema = env.get("POSTGRES_SCHEMA")
    if not schema or schema == "public":
        return
    from psycopg import sql

    with _connect(env) as conn:
        conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(schema)))


@contextmanager
def schema_lock(env: dict[str, str], settings: Settings) -> Iterator[None]:
    """Let one process at a time set up the store. Workers starting together would otherwise
    race: on SQLite to switch a new file to WAL ("database is locked"), on PostgreSQL on CREATE
    OR REPLACE FUNCTION ("tuple concurrently updated"). SQLite: an exclusive flock on a file in
    the data directory. PostgreSQL: a session advisory lock keyed by schema (works across hosts)."""
    if env.get("PERSISTENCE_MODULE") != PG_FACTORY:
        import fcntl

        settings.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        # 0600, as every file the ledger makes in the data directory
        fd = os.open(settings.data_dir / "setup.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC,
                     0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)
        return
    key = advisory_key(f"ledger-schema|{env.get('POSTGRES_SCHEMA') or 'public'}")
    with _connect(env) as conn:
        conn.execute("SELECT pg_advisory_lock(%s)", (key,))
        try:
            ensure_postgres_schema(env)
            yield
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", (key,))


def eventsourcing_env(settings: Settings, cipher_key: str) -> dict[str, str]:
    """The complete environment for the eventsourcing library (nothing from os.environ)."""
    env = {
        "CIPHER_TOPIC": "eventsourcing.cryptography:AESCipher",
        "CIPHER_KEY": cipher_key,
        "AGGREGATE_CACHE_MAXSIZE": "1000",
        "AGGREGATE_CACHE_FASTFORWARD": "n",  # see Ledger.__init__: commands rely on versions
        "DEEPCOPY_FROM_AGGREGATE_CACHE": "n",  # see Ledger.__init__: commands lock and evict
    }
    if settings.database_url:
        env.update(postgres_env(settings.database_url))  # the schema is created in schema_lock
    else:
        settings.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        # Create the file ourselves so it (and the -wal/-shm files SQLite copies it from) is 0600.
        write_secret_file(settings.sqlite_path, b"")
        env.update({
            "PERSISTENCE_MODULE": "ledger.sqlite_store:LedgerSQLiteFactory",
            "SQLITE_DBNAME": str(settings.sqlite_path),
            "SQLITE_LOCK_TIMEOUT": str(SQLITE_LOCK_TIMEOUT_S),
            "APPLICATION_RECORDER_TOPIC": "ledger.sqlite_store:LedgerSQLiteApplicationRecorder",
        })
    return env


class VersionProbe:
    """The latest stored version of an aggregate, in one statement and no transaction: on
    SQLite a per-thread read-only connection (~10 us), on PostgreSQL one round trip."""

    def __init__(self, datastore: Any, table: str, db_path: str | None) -> None:
        self._datastore = datastore
        self._uri = f"file:{db_path}?mode=ro"
        self._is_postgres = isinstance(datastore, PostgresDatastore)
        if self._is_postgres:
            table = f'"{datastore.schema}".{table}'
        self._statement = (
            f"SELECT MAX(originator_version) FROM {table} WHERE originator_id = "
            + ("%s" if self._is_postgres else "?")
        )
        self._local = threading.local()

    def latest(self, aggregate_id: UUID) -> int | None:
        """The highest version stored for ``aggregate_id`` (None if it has no events)."""
        if self._is_postgres:
            with self._datastore.get_connection() as pg:
                row = pg.execute(self._statement, (aggregate_id,)).fetchone()
            return None if row is None else next(iter(row.values()))
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self._uri, uri=True, isolation_level=None,
                                   check_same_thread=True)
            self._local.conn = conn
        rows = conn.execute(self._statement, (aggregate_id.hex,)).fetchall()  # no open cursor
        return rows[0][0]

    def close(self) -> None:
        """Close this thread's connection (others close when their threads end)."""
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None


class UnreadableEvent(Exception):
    """A stored event that cannot be decrypted or decoded: changed after it was written, or
    sealed with a key this process does not have. Names only its position (never its data)."""

    def __init__(self, position: int | None) -> None:
        self.position = position
        which = "a stored event" if position is None else f"the event at position {position}"
        super().__init__(
            f"{which} cannot be read: it was changed after it was written, or it was sealed "
            "with another key (check LEDGER_DATA_DIR and the keys; `ledger verify` finds "
            "changed events)")


def decoded(mapper: Any, n: Notification) -> Any:
    """The domain event stored at notification ``n``; ``UnreadableEvent`` naming its position
    when the mapper cannot decrypt or decode it (the mapper's own message could quote it)."""
    try:
        return mapper.to_domain_event(n)
    except MapperDeserialisationError:
        raise UnreadableEvent(n.id) from None


def refused_by_the_store(error: BaseException) -> bool:
    """Whether a failed write is known not to be stored: the store itself answered that it did
    not save. On SQLite any error does (a failed commit is rolled back in this process); on
    PostgreSQL an error the server sent with its SQLSTATE, except a lost connection (class 08)
    or a session ended by the server (57P01 to 57P05: shut down, crashed, terminated), after
    which a COMMIT sent may yet become visible. Otherwise the outcome is not known."""
    cause = error.__cause__ or error
    if isinstance(cause, sqlite3.Error):
        return True
    sqlstate = getattr(cause, "sqlstate", None)
    return isinstance(sqlstate, str) and not sqlstate.startswith(("08", "57P"))


MAX_VERSION = 2 ** 63  # (a version is a positive 64-bit integer; the leaf packs it in 8 bytes)
# What reading a row the ledger never wrote raises (text that is not UTF-8, on SQLite, is an
# OperationalError, wrapped by the library in its own). A real operational error also lands
# here: the rows are then read as stored, and when none of them is malformed it is raised again.
UNREADABLE = (TypeError, ValueError, AttributeError, sqlite3.OperationalError,
              PersistenceOperationalError)


BYTES = (bytes, memoryview)


def _checked(page: list[Notification]) -> list[Notification]:
    """The page, once every event in it is ``readable``; else ``UnreadableEvent``."""
    for n in page:
        if not readable(n):
            raise UnreadableEvent(n.id)
    return page


def _unreadable(error: BaseException) -> bool:
    """Whether an error from reading rows may come from a row's values, rather than from the
    database (locked, gone): an operational error only when SQLite could not decode text."""
    if isinstance(error, sqlite3.OperationalError | PersistenceOperationalError):
        return "decode" in str(error).lower()
    return True


def readable(n: Any) -> bool:
    """Whether an event the library read holds what the ledger writes: a text topic, a version
    from 1, bytes. (SQLite hands back any value as stored; a NULL topic passes on both.) Run on
    every event read, so kept to the cheapest tests (about 0.2 us)."""
    v = n.originator_version
    return (type(n.topic) is str and type(v) is int and 0 < v < MAX_VERSION
            and isinstance(n.state, BYTES))


@dataclass(frozen=True)
class StoredRow:
    """One row of the events table as stored, read without the library (which fails on a row
    rewritten with a NULL, an id or version that is not one, or on SQLite text that is not
    UTF-8). ``intact`` is false for a row in any form the ledger never writes; an unreadable
    value then stands as one no event has (the nil id, version 0, the empty topic), so the
    row's hash also differs from the one recorded for it."""

    id: int
    originator_id: UUID
    originator_version: int
    topic: str
    state: Any
    intact: bool

    @classmethod
    def read(cls, row: Any) -> StoredRow:
        oid, version, topic, state = (row["originator_id"], row["originator_version"],
                                      row["topic"], row["state"])
        intact = bool(row["typed"]) if "typed" in row.keys() else True  # (SQLite: the types)
        if isinstance(oid, bytes):  # SQLite's text, read as its bytes
            intact = intact and CANONICAL_ID.fullmatch(oid) is not None
            oid = oid.decode("utf-8", "replace")
        try:
            oid = oid if isinstance(oid, UUID) else UUID(str(oid))
        except ValueError:
            oid, intact = UUID(int=0), False
        if not (isinstance(version, int) and 0 < version < MAX_VERSION):
            version, intact = 0, False
        if isinstance(topic, bytes):
            try:
                topic = topic.decode("utf-8")
            except UnicodeDecodeError:
                topic, intact = topic.decode("utf-8", "replace"), False
        if not isinstance(topic, str):
            topic, intact = "", False
        if not isinstance(state, bytes | memoryview):
            intact = False
        return cls(int(row["id"]), oid, version, topic, state, intact)


CANONICAL_ID = re.compile(rb"[0-9a-f]{32}")  # how the library writes an id on SQLite


class Sql:
    """Run the ledger's own statements on the event store's connections (either backend).

    Statements use ``%s`` placeholders and ``{t}`` for the table prefix (the schema on PostgreSQL).
    """

    def __init__(self, datastore: Any) -> None:
        self.datastore = datastore
        self.is_postgres = isinstance(datastore, PostgresDatastore)
        self.prefix = f'"{datastore.schema}".' if self.is_postgres else ""
        self._locks: dict[str, FileLock] = {}

    def close(self) -> None:
        """Close the files of the shared locks this process opened (SQLite)."""
        for lock in self._locks.values():
            lock.close()

    @contextmanager
    def shared_lock(self, name: str, timeout_s: float = 5.0) -> Iterator[bool]:
        """Hold ``name``, a lock every process (and host) on this database shares, for the
        block; yields whether it was had within ``timeout_s`` (the block runs either way: it is
        for work that stays correct when done twice, which it then saves doing twice).
        SQLite: a ``FileLock`` beside the database. PostgreSQL: a session advisory lock, asked
        for again every few milliseconds while another session holds it."""
        if not self.is_postgres:
            lock = self._locks.get(name)
            if lock is None:
                lock = self._locks.setdefault(
                    name, FileLock(f"{self.datastore.pool.db_name}-{name}.lock"))
            had = lock.acquire(timeout_s)
            try:
                yield had
            finally:
                if had:
                    lock.release()
            return
        key = advisory_key(f"ledger-lock|{self.datastore.schema or 'public'}|{name}")
        with self.datastore.get_connection() as conn:  # (autocommit: a session lock)
            deadline, pause = time.monotonic() + timeout_s, 0.0005
            while True:
                had = bool(conn.execute("SELECT pg_try_advisory_lock(%s) AS had",
                                        (key,)).fetchone()["had"])
                if had or time.monotonic() > deadline:
                    break
                time.sleep(pause)
                pause = min(pause * 2, 0.005)
            try:
                yield had
            finally:
                if had:
                    conn.execute("SELECT pg_advisory_unlock(%s)", (key,))

    def _sql(self, statement: str) -> str:
        statement = statement.replace("{t}", self.prefix)
        return statement if self.is_postgres else statement.replace("%s", "?")

    @contextmanager
    def transaction(self, *, lock_first: bool = False) -> Iterator[Any]:
        """A committed transaction; yields a cursor whose ``execute`` takes portable SQL.

        ``lock_first``: on SQLite, take the write lock (waiting for it) before anything is read.
        SQLite starts a transaction deferred, and one that reads and then writes fails at once
        ("database is locked") if another process wrote in between."""
        with self.datastore.transaction(commit=True) as cursor:
            portable = _PortableCursor(cursor, self._sql)
            if lock_first and not self.is_postgres:
                portable.execute("UPDATE {t}ledger_meta SET value = value WHERE name = %s",
                                 ("master_key_id",))
            yield portable

    @contextmanager
    def read_transaction(self) -> Iterator[Any]:
        """A read-only transaction, rolled back at the end: one consistent snapshot (WAL on
        SQLite, REPEATABLE READ on PostgreSQL) that never holds this process's writer."""
        with self.datastore.transaction(commit=False) as cursor:
            if self.is_postgres:
                cursor.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
            yield _PortableCursor(cursor, self._sql)

    def query(self, statement: str, params: tuple[Any, ...] = ()) -> list[Any]:
        """Rows of one read-only statement, run on its own (one round trip, no BEGIN/ROLLBACK)."""
        if self.is_postgres:
            with self.datastore.get_connection() as conn:
                return list(conn.execute(self._sql(statement), params).fetchall())
        with self.datastore.get_connection(commit=False) as conn:
            cursor = conn.cursor()
            cursor.execute(self._sql(statement), params)
            return list(cursor.fetchall())

    def execute(self, statement: str, params: tuple[Any, ...] = ()) -> None:
        """Run one statement in its own committed transaction."""
        with self.transaction() as cursor:
            cursor.execute(statement, params)

    def all_exist(self, *names: str) -> bool:
        """Whether every one of these tables and indexes exists (in the ledger's schema).

        Checked before ``CREATE ... IF NOT EXISTS``, which a starting process need not run
        once the tables are there: on PostgreSQL ``CREATE INDEX IF NOT EXISTS`` locks its table
        (SHARE) before it looks for the index, so a process starting while others write could
        block their writes, or deadlock with a writer that holds one table and wants the next."""
        wanted = sorted(set(names))
        if self.is_postgres:
            rows = self.query(
                "SELECT count(*) AS n FROM pg_class c JOIN pg_namespace s "
                "ON s.oid = c.relnamespace WHERE s.nspname = %s AND c.relname = ANY(%s)",
                (self.datastore.schema or "public", wanted))
        else:
            marks = ", ".join("%s" for _ in wanted)
            rows = self.query(f"SELECT count(*) AS n FROM sqlite_master WHERE name IN ({marks})",
                              tuple(wanted))
        return int(rows[0]["n"]) == len(wanted)

    def columns(self, table: str, cursor: Any = None) -> set[str]:
        """The column names of ``table`` (in the ledger's schema): asked on its own, or in the
        transaction of ``cursor`` (one that adds a column if missing, under the lock it holds)."""
        if self.is_postgres:
            statement = ("SELECT column_name AS name FROM information_schema.columns WHERE "
                         "table_schema = %s AND table_name = %s")
            params: tuple[Any, ...] = (self.datastore.schema or "public", table)
        else:
            statement, params = "SELECT name FROM pragma_table_info(%s)", (table,)
        if cursor is None:
            rows = self.query(statement, params)
        else:
            cursor.execute(statement, params)
            rows = cursor.fetchall()
        return {str(r["name"]) for r in rows}

    def read_page(self, recorder: Any, start: int, limit: int, *, topics: Sequence[str] = (),
                  stop: int | None = None) -> list[Notification]:
        """The library's ``select_notifications``; if it cannot read a row, or reads one in a
        form the ledger never writes (see ``readable``), ``UnreadableEvent`` naming the first
        such row's position."""
        with self._naming_unreadable(lambda: self.stored_rows(
                recorder.events_table_name, start, limit, topics=topics, stop=stop)):
            page = list(recorder.select_notifications(start=start, limit=limit, topics=topics,
                                                      stop=stop))
        return _checked(page)

    @contextmanager
    def _naming_unreadable(self, stored: Callable[[], Iterable[StoredRow]]) -> Iterator[None]:
        """Turn an error that a row's values can cause (see ``_unreadable``) into
        ``UnreadableEvent`` naming the first row ``stored()`` finds not intact; any other
        error, or one with no such row, is raised as it is."""
        try:
            yield
        except UNREADABLE as error:
            if not _unreadable(error):
                raise
            bad = next((r.id for r in stored() if not r.intact), None)
            if bad is None:
                raise
            raise UnreadableEvent(bad) from None

    def stored_rows(self, events_table: str, start: int, limit: int, *,
                    topics: Sequence[str] = (), stop: int | None = None) -> list[StoredRow]:
        """Up to ``limit`` rows of the events table from notification id ``start`` on (to
        ``stop``; of ``topics``), in log order, as stored (see ``StoredRow``). On SQLite each
        value is read as its bytes (text that is not UTF-8 cannot be read otherwise), with
        whether every value has the type the library writes."""
        column = "notification_id" if self.is_postgres else "rowid"
        values = ("originator_id, originator_version, topic, state" if self.is_postgres else
                  "CAST(originator_id AS BLOB) AS originator_id, originator_version, "
                  "CAST(topic AS BLOB) AS topic, CAST(state AS BLOB) AS state, "
                  "(typeof(originator_id) = 'text' AND typeof(originator_version) = 'integer' "
                  "AND typeof(topic) = 'text' AND typeof(state) = 'blob') AS typed")
        where, params = f"{column} >= %s", [start]  # type: tuple[str, list[Any]]
        if stop is not None:
            where, params = where + f" AND {column} <= %s", [*params, stop]
        if topics:
            where += f" AND topic IN ({', '.join(['%s'] * len(topics))})"
            params += list(topics)
        rows = self.query(f"SELECT {column} AS id, {values} FROM {{t}}{events_table} "
                          f"WHERE {where} ORDER BY {column} LIMIT %s", (*params, limit))
        return [StoredRow.read(r) for r in rows]

    def malformed_rows(self, events_table: str) -> tuple[int, int | None]:
        """How many rows of the events table hold an id in a form the library never writes, and
        the first one's notification id: on SQLite an id in capitals or with hyphens reads as
        the same UUID (so hashes the same), yet the aggregate's own history, matched by the id's
        exact text, no longer holds that event (Python's UUID also reads other Unicode digits,
        spaces and underscores). Every other malformed value fails the reading itself (see
        ``readable``). The test for 32 lower-case hex digits is an ``ltrim`` of them, which
        must leave nothing."""
        if self.is_postgres:
            return 0, None  # (a uuid column)
        rows = self.query(f"SELECT COUNT(*) AS n, MIN(rowid) AS first FROM {{t}}{events_table} "
                          "WHERE length(originator_id) != 32 "
                          "OR ltrim(originator_id, '0123456789abcdef') != ''")
        first = rows[0]["first"]
        return int(rows[0]["n"]), None if first is None else int(first)

    def events_of(self, events_table: str, ids: list[UUID]) -> list[StoredEvent]:
        """Every stored event of these aggregates, by aggregate and version, in one query a
        few hundred aggregates at a time (the library reads one aggregate a query). A row in a
        form the ledger never writes is ``UnreadableEvent`` at its position."""
        out: list[StoredEvent] = []
        column = "notification_id" if self.is_postgres else "rowid"
        for i in range(0, len(ids), 500):
            chunk = ids[i:i + 500]
            params: tuple[Any, ...]
            if self.is_postgres:
                statement, params = (
                    f"SELECT {column} AS id, originator_id, originator_version, topic, state "
                    f"FROM {{t}}{events_table} WHERE originator_id = ANY(%s) "
                    "ORDER BY originator_id, originator_version", (chunk,))
            else:
                statement, params = (
                    f"SELECT {column} AS id, originator_id, originator_version, topic, state "
                    f"FROM {{t}}{events_table} WHERE originator_id IN "
                    f"({', '.join(['%s'] * len(chunk))}) ORDER BY originator_id, "
                    "originator_version", tuple(u.hex for u in chunk))
            raw = statement if self.is_postgres else statement.replace(  # (see stored_rows)
                "topic, state", "CAST(topic AS BLOB) AS topic, CAST(state AS BLOB) AS state, "
                "(typeof(topic) = 'text' AND typeof(state) = 'blob') AS typed")
            with self._naming_unreadable(lambda raw=raw, params=params: map(  # type: ignore[misc]
                    StoredRow.read, self.query(raw, params))):
                rows = self.query(statement, params)
                events = [StoredEvent(originator_id=r["originator_id"] if self.is_postgres
                                      else UUID(r["originator_id"]),
                                      originator_version=r["originator_version"],
                                      topic=r["topic"], state=r["state"]) for r in rows]
            for r, event in zip(rows, events, strict=True):
                if not readable(event):
                    raise UnreadableEvent(int(r["id"]))
            out += events
        return out

    def originators_between(self, events_table: str, first: int, last: int) -> set[UUID]:
        """The aggregates with an event whose notification id is from ``first`` to ``last``
        (ids and positions only: no state is read)."""
        column = "notification_id" if self.is_postgres else "rowid"
        rows = self.query(f"SELECT DISTINCT originator_id FROM {{t}}{events_table} "
                          f"WHERE {column} BETWEEN %s AND %s", (first, last))
        return {r["originator_id"] if self.is_postgres else UUID(r["originator_id"])
                for r in rows}

    def shard_notifications(self, events_table: str, first: int, last: int,
                            shard: tuple[int, int], sharded_topics: str) -> list[Notification]:
        """The notifications with ids from ``first`` to ``last``, in order, leaving out those
        whose topic starts with ``sharded_topics`` and whose originator is not in ``shard``:
        (k, n), n a power of two up to 16, keeps the ids whose integer value is k modulo n (its
        last hex digit decides). Read in the database, so a rebuild worker neither fetches nor
        parses the other workers' events."""
        k, n = shard
        assert n & (n - 1) == 0 and 0 < n <= 16 and 0 <= k < n, shard
        if self.is_postgres:
            statement = (
                "SELECT notification_id AS id, originator_id, originator_version, topic, state "
                f"FROM {{t}}{events_table} WHERE notification_id BETWEEN %s AND %s AND (topic "
                f"NOT LIKE %s OR get_byte(uuid_send(originator_id), 15) & {n - 1} = {k}) "
                "ORDER BY notification_id")
        else:
            statement = (
                "SELECT rowid AS id, originator_id, originator_version, topic, state "
                f"FROM {{t}}{events_table} WHERE rowid BETWEEN %s AND %s AND (topic NOT LIKE %s OR "
                f"(instr('0123456789abcdef', substr(originator_id, 32, 1)) - 1) & {n - 1} = {k}) "
                "ORDER BY rowid")
        # (a row this shard may not own: the first unreadable in the range is named)
        with self._naming_unreadable(lambda: self.stored_rows(
                events_table, first, last - first + 1, stop=last)):
            rows = self.query(statement, (first, last, f"{sharded_topics}%"))
            page = [Notification(id=r["id"], originator_id=r["originator_id"] if self.is_postgres
                                 else UUID(r["originator_id"]),
                                 originator_version=r["originator_version"], topic=r["topic"],
                                 state=r["state"]) for r in rows]
        return _checked(page)

    def maintenance(self, statement: str, *, lock_timeout_ms: int = 0) -> None:
        """Run a PostgreSQL statement outside any transaction (VACUUM), waiting for locks at most
        ``lock_timeout_ms`` (0: the server's default)."""
        with self.datastore.get_connection() as conn:
            if lock_timeout_ms:
                conn.execute(f"SET lock_timeout = {int(lock_timeout_ms)}")
            try:
                conn.execute(self._sql(statement))
            finally:
                if lock_timeout_ms:
                    conn.execute("RESET lock_timeout")

    def checkpoint(self, busy_timeout_ms: int = 200) -> tuple[int, int, int]:
        """SQLite: a TRUNCATE checkpoint that waits for readers at most ``busy_timeout_ms``;
        returns (busy, wal frames, frames checkpointed)."""
        with self.datastore.get_connection(commit=True) as conn:
            cursor = conn.cursor()
            cursor.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
            try:
                cursor.execute("PRAGMA wal_checkpoint(TRUNCATE)")
                row = cursor.fetchall()[0]
            finally:
                cursor.execute(f"PRAGMA busy_timeout = {SQLITE_LOCK_TIMEOUT_S * 1000}")
        return int(row[0]), int(row[1]), int(row[2])


class _PortableCursor:
    def __init__(self, cursor: Any, translate: Any) -> None:
        self._cursor, self._translate = cursor, translate

    def execute(self, statement: str, params: tuple[Any, ...] = ()) -> None:
        self._cursor.execute(self._translate(statement), params)

    def executemany(self, statement: str, params: list[tuple[Any, ...]]) -> None:
        self._cursor.executemany(self._translate(statement), params)

    def insert_many(self, table: str, columns: tuple[str, ...], rows: list[tuple[Any, ...]],
                    *, bulk: bool = True) -> bool:
        """Insert rows; returns whether it did. On PostgreSQL a batch of ``COPY_FROM`` rows or
        more goes by ``COPY``, many times faster than an INSERT a row, but only when ``bulk``
        (not inside ``pipeline()``, which COPY cannot join): else it is left to the caller."""
        if not rows:
            return True
        if len(rows) >= COPY_FROM and hasattr(self._cursor, "copy"):
            if not bulk:
                return False
            with self._cursor.copy(self._translate(
                    f"COPY {table} ({', '.join(columns)}) FROM STDIN")) as copy:
                for row in rows:
                    copy.write_row(row)
            return True
        self.executemany(f"INSERT INTO {table} ({', '.join(columns)}) VALUES "
                         f"({', '.join(['%s'] * len(columns))})", rows)
        return True

    @property
    def rowcount(self) -> int:
        """Rows changed by the last statement."""
        inner = getattr(self._cursor, "sqlite_cursor", self._cursor)
        return int(inner.rowcount)

    def pipeline(self) -> Any:
        """PostgreSQL: send the statements inside without waiting for each one's answer (one
        round trip for a batch; an error still aborts the transaction). SQLite: no-op."""
        connection = getattr(self._cursor, "connection", None)
        if connection is not None and hasattr(connection, "pipeline"):
            return connection.pipeline()
        return nullcontext()

    def fetchone(self) -> Any:
        return self._cursor.fetchone()

    def fetchall(self) -> Any:
        return self._cursor.fetchall()
