"""The view tables, in the same database as the events, and their tracking position.

A batch of rows and the new position are written in one transaction, guarded by the position it
was computed from: if another process moved the views on meanwhile, nothing is written and the
caller starts again from the new position. So every notification is applied exactly once to the
views, after any crash, whichever process (API worker or ``ledger projections run``) applies it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from operator import itemgetter
from typing import Any
from uuid import UUID

from ..store import Sql
from .rows import BOOLEAN_COLUMNS, INTEGER_COLUMNS, TABLES

log = logging.getLogger("ledger.projections")

TRACKING = "ledger_view_tracking"
NAME = "views"
PRIOR = "views_prior"  # the tracking row of the views a rebuild set aside until it ends
PARTICIPANTS = ("participant_id", "seq", "reference", "registered_at", "erased_at", "doc")


def _table(name: str) -> str:
    return f"{{t}}ledger_view_{name}"


def _prior(name: str) -> str:
    return f"{{t}}ledger_view_prior_{name}"


def _columns(name: str) -> tuple[str, ...]:
    return PARTICIPANTS if name == "participants" else TABLES[name]


def _definition(name: str) -> str:
    """A view table's columns, as ``CREATE TABLE`` takes them."""
    big = "BIGINT"
    if name == "participants":
        return (f"participant_id TEXT PRIMARY KEY, seq {big} NOT NULL, reference TEXT NOT NULL, "
                "registered_at TEXT, erased_at TEXT, doc TEXT NOT NULL")
    return ", ".join(f"{c} {big if c in INTEGER_COLUMNS else 'TEXT'}" for c in TABLES[name])


VIEWS = ("participants", *TABLES)

# Columns added to a view table after its first release, (table, column), in the order added.
ADDED_COLUMNS = (("uses", "attribution"), ("uses", "consented_attribution"))


def _index_name(name: str) -> str:
    return "ledger_view_participants_seq" if name == "participants" else f"ledger_view_{name}_pid"


def _index(name: str) -> str:
    column = "seq" if name == "participants" else "participant_id"
    return f"CREATE INDEX IF NOT EXISTS {_index_name(name)} ON {_table(name)} ({column})"


# A SQL condition (portable %s placeholders) and its parameters.
Filter = tuple[str, tuple[Any, ...]]

# What one participant contributes: their own row, their sealed view document, rows by table.
Entry = tuple[dict[str, Any], str, dict[str, list[dict[str, Any]]]]


class Stale(Exception):
    """The views moved on while a batch was computed: start again from the stored position."""


class ViewStore:
    """Reads and writes the view tables."""

    def __init__(self, sql: Sql) -> None:
        self.sql = sql
        self.create()

    def create(self) -> None:
        """Create the tables if missing (safe to run in many processes at once)."""
        statements = [
            f"CREATE TABLE IF NOT EXISTS {{t}}{TRACKING} (name TEXT PRIMARY KEY, "
            "position BIGINT NOT NULL)",
        ]
        for name in VIEWS:
            statements.append(f"CREATE TABLE IF NOT EXISTS {_table(name)} ({_definition(name)})")
            statements.append(_index(name))
        relations = [TRACKING, *(f"ledger_view_{name}" for name in VIEWS),
                     *(_index_name(name) for name in VIEWS)]
        missing = not self.sql.all_exist(*relations)  # (see there: no DDL while others write)
        added = [] if missing else self._columns_missing()
        with self.sql.transaction(lock_first=True) as c:
            for s in statements if missing else ():
                c.execute(s)
            for name, column in ADDED_COLUMNS if missing or added else ():
                # Views made by an earlier release lack columns added since: added empty, which
                # is what the events before those columns existed replay to (None).
                if column not in self.sql.columns(f"ledger_view_{name}", c):
                    c.execute(f"ALTER TABLE {_table(name)} ADD COLUMN {column} "
                              f"{'BIGINT' if column in INTEGER_COLUMNS else 'TEXT'}")
            c.execute(f"INSERT INTO {{t}}{TRACKING} (name, position) SELECT %s, 0 WHERE NOT "
                      f"EXISTS (SELECT 1 FROM {{t}}{TRACKING} WHERE name = %s)", (NAME, NAME))

    def _columns_missing(self) -> list[tuple[str, str]]:
        """The added columns an existing view table lacks (a cheap query a table, no lock)."""
        have = {name: self.sql.columns(f"ledger_view_{name}") for name in {n for n, _ in ADDED_COLUMNS}}
        return [(n, c) for n, c in ADDED_COLUMNS if c not in have[n]]

    def erased(self) -> list[UUID]:
        """The participants the views show erased."""
        return [UUID(r["participant_id"]) for r in self.sql.query(
            f"SELECT participant_id FROM {_table('participants')} WHERE erased_at IS NOT NULL")]

    def position(self) -> int:
        """The last notification id the views include."""
        rows = self.sql.query(f"SELECT position FROM {{t}}{TRACKING} WHERE name = %s", (NAME,))
        return int(rows[0]["position"]) if rows else 0

    def write(self, expected: int, position: int, participants: Iterable[Entry],
              previous: Mapping[str, Entry] | None = None) -> None:
        """Replace the rows of each given participant and move the position from ``expected`` to
        ``position``, in one transaction; ``Stale`` if the position was no longer ``expected``.

        ``previous`` holds, for some participants, exactly what is stored for them now (what
        this process wrote last, at ``expected``); only their tables that differ are rewritten.
        Any participant not in it has all of their rows replaced."""
        self.write_changes(expected, position, changes(participants, previous or {}))

    def write_changes(self, expected: int, position: int, change: Changes) -> None:
        """``write``, of changes already worked out (``changes``, ``merge_changes``)."""
        stale, updates, fresh = change
        with self.sql.transaction() as c:
            # The UPDATE first: it takes the write lock before anything is read (SQLite), and
            # on PostgreSQL it locks the tracking row until commit.
            c.execute(f"UPDATE {{t}}{TRACKING} SET position = %s WHERE name = %s AND position = %s",
                      (position, NAME, expected))
            if c.rowcount != 1:
                raise Stale
            with c.pipeline():  # batched by table: one DELETE of the rows replaced, one INSERT
                for name, pids in stale.items():
                    for i in range(0, len(pids), 500):
                        chunk = pids[i:i + 500]
                        c.execute(f"DELETE FROM {_table(name)} WHERE participant_id IN "
                                  f"({', '.join(['%s'] * len(chunk))})", tuple(chunk))
                if updates:
                    c.executemany(f"UPDATE {_table('participants')} SET seq = %s, reference = %s, "
                                  "registered_at = %s, erased_at = %s, doc = %s "
                                  "WHERE participant_id = %s", updates)
                bulk = {name: values for name, values in fresh.items()
                        if not c.insert_many(_table(name), _columns(name), values, bulk=False)}
            for name, values in bulk.items():  # outside the pipeline, which COPY cannot join
                c.insert_many(_table(name), _columns(name), values)

    def reset(self, *, keep_prior: bool = False) -> None:
        """Empty every view and set the position to 0, in one transaction.

        ``keep_prior``: first set the views aside whole, with their position in a tracking row
        of their own, so that a rebuild that cannot finish puts them back (``put_back_prior``)
        instead of leaving them part-built.

        - SQLite: the tables are renamed and empty ones created in their place. That costs the
          same whatever the views hold (a copy took 1.4 s at 200,000 events; this takes
          0.1 s), and a reader's snapshot holds the schema too, so it still reads the old.
        - PostgreSQL: the rows are copied into tables of their own, then deleted. A reader's
          snapshot there does not cover the schema: a report that had read the position
          would find the new, empty tables by name, and print a position with no rows."""
        with self._locked() as c:
            renamed = False
            if keep_prior:
                c.execute(f"DELETE FROM {{t}}{TRACKING} WHERE name = %s", (PRIOR,))
                c.execute(f"INSERT INTO {{t}}{TRACKING} (name, position) SELECT %s, position "
                          f"FROM {{t}}{TRACKING} WHERE name = %s", (PRIOR, NAME))
                for name in VIEWS:
                    self._move(c, name, back=False)
                renamed = not self.sql.is_postgres
            for name in VIEWS if not renamed else ():
                c.execute(f"DELETE FROM {_table(name)}")
            c.execute(f"UPDATE {{t}}{TRACKING} SET position = 0 WHERE name = %s", (NAME,))

    def prior_position(self) -> int | None:
        """The position of the views a rebuild set aside, if it has not ended (or was killed)."""
        rows = self.sql.query(f"SELECT position FROM {{t}}{TRACKING} WHERE name = %s", (PRIOR,))
        return int(rows[0]["position"]) if rows else None

    def put_back_prior(self) -> int | None:
        """Put back the views a rebuild set aside (``reset(keep_prior=True)``), in one
        transaction, replacing what it had built; returns their position, or None if none."""
        return self.put_back_or_keep(unless_behind=False)[1]

    def put_back_or_keep(self, *, unless_behind: bool) -> tuple[str, int | None]:
        """``put_back_prior``, saying what it did: ("none", None) if nothing was set aside (any
        more), ("put back", position) or ("kept", position of what was built)."""
        with self._locked() as c:
            c.execute(f"SELECT name, position FROM {{t}}{TRACKING} WHERE name IN (%s, %s)",
                      (PRIOR, NAME))
            at = {row["name"]: int(row["position"]) for row in c.fetchall()}
            if PRIOR not in at:
                return "none", None
            # As far, or further: the rebuild got where the views had been (it may have finished
            # and only failed to drop the set-aside tables), so what it built is whole to there.
            if unless_behind and at[PRIOR] <= at.get(NAME, 0):
                done: tuple[str, int | None] = ("kept", at.get(NAME, 0))
            else:
                for name in VIEWS:
                    self._move(c, name, back=True)
                c.execute(f"UPDATE {{t}}{TRACKING} SET position = %s WHERE name = %s",
                          (at[PRIOR], NAME))
                done = ("put back", at[PRIOR])
            c.execute(f"DELETE FROM {{t}}{TRACKING} WHERE name = %s", (PRIOR,))
        try:
            self.drop_prior()
        except Exception as error:  # noqa: BLE001 - the views are back; the next rebuild drops it
            log.warning("could not drop the views set aside (%s)", type(error).__name__)
        return done

    def drop_prior(self) -> None:
        """Drop the views a rebuild set aside (once it has finished, or ones a killed rebuild
        left behind). Not under the tracking row: nothing else uses these tables, so no view
        batch waits here; on PostgreSQL it waits at most 5 s for a session reading them (a
        ``pg_dump``), then fails (the next rebuild drops them)."""
        with self.sql.transaction() as c:
            if self.sql.is_postgres:
                c.execute("SET LOCAL lock_timeout = 5000")
            c.execute(f"DELETE FROM {{t}}{TRACKING} WHERE name = %s", (PRIOR,))
            for name in VIEWS:
                c.execute(f"DROP TABLE IF EXISTS {_prior(name)}")

    @contextmanager
    def _locked(self) -> Iterator[Any]:
        """A transaction that first locks the tracking row: no batch can land in the views
        until it ends (a batch's own first step is to update that row). Without it, on
        PostgreSQL, rows a batch committed after a ``DELETE`` began would survive the delete."""
        with self.sql.transaction() as c:
            c.execute(f"UPDATE {{t}}{TRACKING} SET position = position WHERE name = %s",
                      (NAME,))
            yield c

    def _move(self, c: Any, name: str, *, back: bool) -> None:
        """Set one view table aside (``back``: put it back in place of what was built since),
        each store its own way (see ``reset``)."""
        live, prior = _table(name), _prior(name)
        if self.sql.is_postgres:
            if back:
                c.execute(f"DELETE FROM {live}")
            else:
                # Logged: after a server crash PostgreSQL empties unlogged tables, and a
                # rebuild that outlived it would put back views with no rows.
                c.execute(f"CREATE TABLE {prior} ({_definition(name)})")
            source, target = (prior, live) if back else (live, prior)
            cols = ", ".join(_columns(name))
            c.execute(f"INSERT INTO {target} ({cols}) SELECT {cols} FROM {source}")
        elif back:
            c.execute(f"DROP TABLE {live}")
            c.execute(f"ALTER TABLE {prior} RENAME TO ledger_view_{name}")
            c.execute(_index(name))
        else:
            # Index names are the database's: the new table needs its table's, so the index
            # goes (it is built again if the table is put back).
            c.execute(f"DROP INDEX IF EXISTS {_index_name(name)}")
            c.execute(f"ALTER TABLE {live} RENAME TO ledger_view_prior_{name}")
            c.execute(f"CREATE TABLE {live} ({_definition(name)})")
            c.execute(_index(name))

    def all_rows(self) -> dict[str, list[dict[str, Any]]]:
        """Every view table's rows, as JSON-ready dicts (the same as ``participant_rows``)."""
        with self.sql.read_transaction() as c:
            return _read_tables(c)

    def snapshot(self, events_table: str, where: Mapping[str, Filter] | None = None, *,
                 docs: bool = False
                 ) -> tuple[int, int, dict[str, list[dict[str, Any]]], list[dict[str, Any]]]:
        """(position, events up to it, every table's rows, summaries), read in one transaction
        so they agree with each other even while writes go on. ``where`` narrows the rows
        read from some tables (the report reads only the rows its rules could pick); ``docs``
        adds each summary's stored document (``doc``), still sealed."""
        column = "notification_id" if self.sql.is_postgres else "rowid"
        with self.sql.read_transaction() as c:
            c.execute(f"SELECT position FROM {{t}}{TRACKING} WHERE name = %s", (NAME,))
            position = int(c.fetchone()["position"])
            c.execute(f"SELECT COUNT(*) AS n FROM {{t}}{events_table} WHERE {column} <= %s",
                      (position,))
            count = int(c.fetchone()["n"])
            tables = _read_tables(c, where or {})
            cols = PARTICIPANTS if docs else PARTICIPANTS[:-1]
            c.execute(f"SELECT {', '.join(cols)} FROM {_table('participants')} ORDER BY seq")
            people = [{k: r[k] for k in cols} for r in c.fetchall()]
        return position, count, tables, people

    def page(self, *, after_seq: int, limit: int) -> list[tuple[str, int, str]]:
        """(participant_id, seq, doc) of up to ``limit`` participants registered after ``after_seq``."""
        result = self.sql.query(
            f"SELECT participant_id, seq, doc FROM {_table('participants')} WHERE seq > %s "
            "ORDER BY seq LIMIT %s", (after_seq, limit))
        return [(r["participant_id"], int(r["seq"]), r["doc"]) for r in result]

    def seqs_of(self, participant_ids: list[str]) -> dict[str, int]:
        """The registration positions of those of these participants that are listed."""
        out: dict[str, int] = {}
        for i in range(0, len(participant_ids), 500):
            chunk = participant_ids[i:i + 500]
            for r in self.sql.query(
                    f"SELECT participant_id, seq FROM {_table('participants')} WHERE "
                    f"participant_id IN ({', '.join(['%s'] * len(chunk))})", tuple(chunk)):
                out[r["participant_id"]] = int(r["seq"])
        return out

    def seq_of(self, participant_id: str) -> int | None:
        """The registration position of a listed participant."""
        result = self.sql.query(
            f"SELECT seq FROM {_table('participants')} WHERE participant_id = %s",
            (participant_id,))
        return int(result[0]["seq"]) if result else None


# What a batch changes: participant ids whose rows go, by table; updated participant rows;
# rows to insert, by table (as tuples in the tables' column order).
Changes = tuple[dict[str, list[str]], list[tuple[Any, ...]], dict[str, list[tuple[Any, ...]]]]


def changes(participants: Iterable[Entry], previous: Mapping[str, Entry]) -> Changes:
    """The changes that replace each participant's rows (only their tables that differ from
    ``previous``, for those in it). Pure: a rebuild's workers work them out in parallel."""
    stale: dict[str, list[str]] = {name: [] for name in VIEWS}
    fresh: dict[str, list[tuple[Any, ...]]] = {name: [] for name in VIEWS}
    updates = []
    for summary, doc, rows in participants:
        pid = summary["participant_id"]
        before = previous.get(pid)
        if before is None:
            stale["participants"].append(pid)
            fresh["participants"].append((*(summary[k] for k in PARTICIPANTS[:-1]), doc))
        elif (summary, doc) != before[:2]:
            updates.append((*(summary[k] for k in PARTICIPANTS[1:-1]), doc, pid))
        for name, table_rows in rows.items():
            if before is not None and before[2].get(name) == table_rows:
                continue
            stale[name].append(pid)
            fresh[name] += map(_ROW[name], table_rows)
    return stale, updates, fresh


def merge_changes(parts: Iterable[Changes]) -> Changes:
    """The changes of several batches of different participants, as one."""
    stale: dict[str, list[str]] = {}
    updates: list[tuple[Any, ...]] = []
    fresh: dict[str, list[tuple[Any, ...]]] = {}
    for part_stale, part_updates, part_fresh in parts:
        for name, pids in part_stale.items():
            stale.setdefault(name, []).extend(pids)
        updates += part_updates
        for name, values in part_fresh.items():
            fresh.setdefault(name, []).extend(values)
    return stale, updates, fresh


def _row_maker(columns: tuple[str, ...]) -> Callable[[dict[str, Any]], tuple[Any, ...]]:
    """A row dict as a tuple in column order, booleans stored as integers."""
    assert len(columns) > 1  # (itemgetter of one key gives the value, not a tuple)
    get = itemgetter(*columns)
    flags = [i for i, k in enumerate(columns) if k in BOOLEAN_COLUMNS]
    if not flags:
        return get  # type: ignore[return-value]

    def make(row: dict[str, Any]) -> tuple[Any, ...]:
        values = list(get(row))
        for i in flags:
            if values[i] is not None:
                values[i] = int(bool(values[i]))
        return tuple(values)
    return make


_ROW = {name: _row_maker(columns) for name, columns in TABLES.items()}


def _read_tables(c: Any, where: Mapping[str, Filter] | None = None
                 ) -> dict[str, list[dict[str, Any]]]:
    tables = {}
    for name, columns in TABLES.items():
        condition, params = (where or {}).get(name, ("1 = 1", ()))
        c.execute(f"SELECT {', '.join(columns)} FROM {_table(name)} WHERE {condition}",
                  params)
        convert = [(k, bool if k in BOOLEAN_COLUMNS else int)
                   for k in columns if k in BOOLEAN_COLUMNS or k in INTEGER_COLUMNS]
        rows = [{k: r[k] for k in columns} for r in c.fetchall()]
        for row in rows:
            for k, to in convert:
                if row[k] is not None:
                    row[k] = to(row[k])
        tables[name] = rows
    return tables
