"""The bare baseline for bench/api.py: Flask endpoints doing one plain eventsourcing save or read.

Served by gunicorn with the same workers and threads as `ledger serve`. Storage from BARE_SQLITE
(a file) or BARE_POSTGRES_SCHEMA (a schema in the test database).
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from uuid import UUID

from eventsourcing.application import Application
from eventsourcing.domain import Aggregate, event
from flask import Flask, jsonify, request


class Note(Aggregate):
    """One small aggregate per request, like one payment."""

    @event("Written")
    def __init__(self, activity: str, amount: str) -> None:
        self.activity, self.amount = activity, amount


@contextmanager
def _setup_lock() -> Iterator[None]:
    """One worker at a time sets up the store (as ``ledger.store.schema_lock`` does)."""
    if os.environ.get("BARE_POSTGRES_SCHEMA"):
        import psycopg

        with psycopg.connect("postgresql://postgres@127.0.0.1:5432/test", autocommit=True) as c:
            c.execute("SELECT pg_advisory_lock(4242)")
            try:
                yield
            finally:
                c.execute("SELECT pg_advisory_unlock(4242)")
        return
    with open(os.environ["BARE_SQLITE"] + ".setup-lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def store_env(sqlite_path: str | None = None, postgres_schema: str | None = None
              ) -> dict[str, str]:
    """eventsourcing's settings for a SQLite file or a schema of the local test database."""
    if postgres_schema:
        return {"PERSISTENCE_MODULE": "eventsourcing.postgres", "POSTGRES_DBNAME": "test",
                "POSTGRES_HOST": "127.0.0.1", "POSTGRES_PORT": "5432", "POSTGRES_USER": "postgres",
                "POSTGRES_PASSWORD": "", "POSTGRES_SCHEMA": postgres_schema}
    assert sqlite_path, "a SQLite file or a PostgreSQL schema"
    return {"PERSISTENCE_MODULE": "eventsourcing.sqlite", "SQLITE_DBNAME": sqlite_path,
            "SQLITE_LOCK_TIMEOUT": "30"}


def create() -> Flask:
    env = store_env(os.environ.get("BARE_SQLITE"), os.environ.get("BARE_POSTGRES_SCHEMA"))
    with _setup_lock():  # workers starting together race to create the tables otherwise
        app_es: Application = Application(env=env)
    app = Flask(__name__)

    @app.post("/save")
    def save():  # type: ignore[no-untyped-def]
        body = request.get_json()
        note = Note(body["activity"], body["amount"])
        app_es.save(note)
        return jsonify(id=str(note.id)), 201

    @app.get("/read/<uuid:note_id>")
    def read(note_id: UUID):  # type: ignore[no-untyped-def]
        note = app_es.repository.get(note_id)
        return jsonify(id=str(note.id), activity=note.activity, amount=note.amount)

    return app
