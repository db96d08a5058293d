"""The SQLite store: durable commits, one writer at a time across processes, handed over at once,
and the saves of one process that wait for that writer committed together (``group_commit``).

Why: several ``ledger serve`` workers write to one file. SQLite admits one writer; the others
used to wait in its busy handler, which sleeps in growing steps (up to 100 ms a try) whether or
not the lock has come free, and readers queued inside the library's connection pool behind any
writer waiting for its turn. Measured under 16 connections of payments, the write lock was held
three quarters of the time, each hold stretched four times by the CPU the waiting workers used.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
from collections.abc import Sequence
from typing import Any

from eventsourcing.persistence import ConnectionPoolClosedError, OperationalError
from eventsourcing.sqlite import (
    SQLiteApplicationRecorder,
    SQLiteConnection,
    SQLiteConnectionPool,
    SQLiteFactory,
)

from .group_commit import GroupCommit, Save
from .locks import FileLock, after_fork, in_use
from .store import IDEMPOTENCY_INSERT

log = logging.getLogger("ledger.store")

SQLITE_IDEMPOTENCY_INSERT = IDEMPOTENCY_INSERT.replace("{t}", "").replace("%s", "?")


class DurableSQLiteConnectionPool(SQLiteConnectionPool):
    """Connections that fsync every commit (synchronous=FULL) and zero deleted content.

    A writer passes the write gate (a ``FileLock`` beside the database) and then uses this
    process's one writing connection; each thread reads on a connection of its own. Neither
    goes through the library's pool, whose semaphore, conditions and locks cost a small read
    more than its query. A thread that asks
    for a second reading connection while it holds one (a nested read) gets one from the pool."""

    def __init__(self, **kwargs: Any) -> None:
        if not SQLiteConnectionPool.detect_memory_mode(kwargs.get("db_name", "")):
            from pathlib import Path

            from .backup import finish_interrupted_restore

            finish_interrupted_restore(Path(kwargs["db_name"]))
        super().__init__(**kwargs)
        self.gate = FileLock(f"{self.db_name}-write.lock")
        self._gate_timeout_s = float(self.lock_timeout or 5)
        self._own = not self.is_sqlite_memory_mode
        # Held (shared) while this pool is open, so `ledger restore` can tell that a server or
        # another command has the database open, and refuse to swap it underneath them.
        self._open_mark = in_use(self.db_name) if self._own else -1
        self._forget()
        after_fork(self, "_forget")

    def _forget(self) -> None:
        # (also in a forked child: a connection must not cross a fork, the child opens its own)
        self._writer: SQLiteConnection | None = None
        self._local = threading.local()
        self._readers: list[SQLiteConnection] = []
        self._readers_lock = threading.Lock()

    def _create_connection(self) -> SQLiteConnection:
        conn = super()._create_connection()
        cursor = conn.cursor()
        cursor.execute("PRAGMA synchronous=FULL")
        cursor.execute("PRAGMA secure_delete=ON")
        return conn

    def get_connection(self, timeout: float | None = None, *, is_writer: bool | None = None
                       ) -> SQLiteConnection:
        if not self._own or is_writer is None:
            return super().get_connection(timeout, is_writer=is_writer)
        if self.closed:
            raise ConnectionPoolClosedError
        if is_writer:
            # SQLite's own lock is free whenever the gate is held, so its busy handler (which
            # sleeps up to 100 ms a try whether or not the lock came free) rarely runs.
            if not self.gate.acquire(self._gate_timeout_s):
                raise OperationalError("database is locked (write gate)")
            try:
                if self._writer is None or self._writer.closed:
                    self._writer = self._create_connection()
            except BaseException:
                self.gate.release()
                raise
            return self._writer
        if getattr(self._local, "busy", False):
            return super().get_connection(timeout, is_writer=False)
        reader: SQLiteConnection | None = getattr(self._local, "reader", None)
        if reader is None or reader.closed:
            reader = self._local.reader = self._create_connection()
            with self._readers_lock:
                self._readers.append(reader)
        self._local.busy = True
        return reader

    def put_connection(self, conn: SQLiteConnection) -> None:
        if conn is self._writer:
            try:
                self._end_a_failed_transaction(conn)
            finally:
                self.gate.release()
        elif conn is getattr(self._local, "reader", None):
            self._end_a_failed_transaction(conn)
            self._local.busy = False
        else:
            super().put_connection(conn)

    @staticmethod
    def _end_a_failed_transaction(conn: SQLiteConnection) -> None:
        """Roll back a transaction that a failed COMMIT (or ROLLBACK) left open.

        When COMMIT fails (SQLITE_FULL, SQLITE_IOERR, SQLITE_BUSY), SQLite may keep the
        transaction open and asks the application to issue ROLLBACK; the library's transaction
        raises without doing so. Left open on the writer, it would hold SQLite's write lock, so
        no worker could write again, and every later BEGIN on this connection would fail with
        "cannot start a transaction within a transaction" until the server restarted. (The
        save that failed has already raised: nothing of it is acknowledged or kept.)"""
        raw = conn._sqlite_conn
        if not raw.in_transaction:
            return
        log.warning("a transaction was left open after a failed commit or rollback; "
                    "rolling it back")
        try:
            raw.rollback()
        except sqlite3.Error:
            conn.close()  # a new connection is opened for the next caller

    def close(self) -> None:
        super().close()
        with self._readers_lock:
            readers, self._readers = self._readers, []
        for conn in [*readers, *([self._writer] if self._writer else [])]:
            conn.close()
        self._writer = None
        self.gate.close()
        if self._open_mark >= 0:
            os.close(self._open_mark)
            self._open_mark = -1


class LedgerSQLiteFactory(SQLiteFactory):
    """eventsourcing's SQLite factory with the durable connection pool."""

    def __init__(self, env: Any) -> None:
        super().__init__(env)
        old = self.datastore.pool
        self.datastore.pool = DurableSQLiteConnectionPool(
            db_name=old.db_name, lock_timeout=old.lock_timeout, pool_size=5, max_overflow=30,
            pool_timeout=30.0,
        )
        old.close()


class LedgerSQLiteApplicationRecorder(GroupCommit, SQLiteApplicationRecorder):
    """Also writes an ``idempotency=`` row passed to ``save()``, in the events' transaction;
    saves made by this process's threads meanwhile are committed together (``GroupCommit``)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._setup_group_commit()

    def _insert_together(self, batch: list[Save]) -> list[Sequence[int] | None]:
        with self.datastore.transaction(commit=True) as c:
            return [self._insert_events(c, s.events, **s.kwargs) for s in batch]

    def _insert_alone(self, save: Save) -> Sequence[int] | None:
        with self.datastore.transaction(commit=True) as c:
            return self._insert_events(c, save.events, **save.kwargs)  # type: ignore[no-any-return]

    def _insert_events(self, c: Any, stored_events: Any, **kwargs: Any) -> Any:
        ids = super()._insert_events(c, stored_events, **kwargs)
        if kwargs.get("idempotency") is not None:
            c.execute(SQLITE_IDEMPOTENCY_INSERT, kwargs["idempotency"])
        return ids
