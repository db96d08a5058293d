"""Backup and restore of a SQLite ledger, while the service runs.

The copy is taken with SQLite's online backup API in one step: it reads one consistent snapshot
(a read transaction in WAL mode never blocks the writers, nor is blocked by them), so it holds
exactly the events committed when it started, never half a command. It is then switched to a
single file (no WAL beside it), checked with ``PRAGMA integrity_check``, flushed to disk and only
then given its final name, mode 0600 (its contents are encrypted, but it is still the record).

The keys are not in the copy: ``master.key`` and ``signing.key`` in the data directory must be
backed up separately, and kept apart from the database copies (either alone is useless).

PostgreSQL has its own tools for the same thing (see the README): ``pg_dump`` also reads one
consistent snapshot while the service runs.
"""

from __future__ import annotations

import logging
import os
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from uuid import UUID

from .locks import InUse, held_here, unused

log = logging.getLogger("ledger.backup")


# What SQLite says when a write fails: in a backup, only the copy is written.
WRITE_ERRORS = {"SQLITE_IOERR_WRITE", "SQLITE_IOERR_FSYNC", "SQLITE_IOERR_TRUNCATE",
                "SQLITE_IOERR_DIR_FSYNC", "SQLITE_READONLY"}


class BackupError(Exception):
    """The backup or restore could not be made; nothing was changed."""


def _events(connection: sqlite3.Connection) -> int:
    row = connection.execute("SELECT COUNT(*) FROM stored_events").fetchone()
    return int(row[0])


def _check(path: Path) -> int:
    """Is ``path`` an intact ledger database? Returns its number of events."""
    try:
        connection = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    except sqlite3.Error as e:
        raise BackupError(f"{path} cannot be opened as a SQLite database") from e
    try:
        result = connection.execute("PRAGMA integrity_check").fetchone()
        if result is None or result[0] != "ok":
            raise BackupError(f"{path} failed SQLite's integrity check")
        return _events(connection)
    except sqlite3.DatabaseError as e:
        raise BackupError(f"{path} is not an intact ledger database") from e
    finally:
        connection.close()


def _copy(source: Path, target: Path, *, place: str, unreadable: str) -> None:
    """Copy the database at ``source`` into ``target`` (an empty file) through SQLite: one
    snapshot, with what a write-ahead log beside ``source`` holds (a copy of the file's bytes
    alone would leave that out), as a single file with no log of its own. A failure is a
    ``BackupError`` that blames the right side: no room or no write ``place`` for the copy
    (before, a full disk was blamed on the database read), else ``unreadable``."""
    src = sqlite3.connect(f"file:{source}?mode=ro", uri=True, timeout=30)
    dst = sqlite3.connect(target)
    try:
        src.backup(dst)  # pages=-1: one step, one snapshot
        dst.execute("PRAGMA journal_mode=DELETE")
        dst.commit()
    except sqlite3.DatabaseError as e:
        if getattr(e, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL:
            raise BackupError(f"there is no room for the copy {place}: free some space or "
                              "choose another disk; nothing was changed") from None
        if getattr(e, "sqlite_errorname", "") in WRITE_ERRORS:  # (the source is read-only)
            raise BackupError(f"the copy could not be written {place} "
                              f"({e.sqlite_errorname}); nothing was changed") from None
        raise BackupError(f"{unreadable} ({type(e).__name__})") from None
    finally:
        src.close()
        dst.close()


def backup_sqlite(source: Path, destination: Path) -> int:
    """Copy the live database at ``source`` to ``destination`` (which must not exist);
    returns the number of events in the copy."""
    if destination.exists():
        raise BackupError(f"{destination} exists already; choose a new name")
    if not source.exists():
        raise BackupError(f"there is no database at {source}")
    if not destination.parent.is_dir():  # (else the error named this process's partial file)
        raise BackupError(f"there is no directory {destination.parent}: create it, or choose "
                          "another place for the copy")
    # This process's own partial file: two backups at once never touch each other's.
    partial = destination.with_name(f"{destination.name}.partial-{os.getpid()}")
    partial.unlink(missing_ok=True)
    fd = os.open(partial, os.O_CREAT | os.O_WRONLY | os.O_EXCL, 0o600)
    os.close(fd)
    try:
        _copy(source, partial, place=f"at {destination}",
              unreadable=f"the database at {source} could not be read whole; run "
                         "`ledger verify`")
        events = _check(partial)
        with open(partial, "rb") as f:
            os.fsync(f.fileno())
        try:
            os.link(partial, destination)  # its final name, unless a file took it meanwhile
        except FileExistsError:
            raise BackupError(f"{destination} exists already; choose a new name") from None
        directory = os.open(destination.parent, os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)
    finally:
        partial.unlink(missing_ok=True)
    return events


def _kept_name(database: Path) -> Path:
    """A name for the replaced database that no earlier restore has used."""
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S.%fZ")
    for n in range(1000):
        kept = database.with_name(f"{database.name}.before-restore-{stamp}"
                                  + (f"-{n}" if n else ""))
        if not any(Path(f"{kept}{s}").exists() for s in ("", "-wal", "-shm")):
            return kept
    raise BackupError("too many restores kept beside the database; move some away")


@contextmanager
def restoring(backup: Path, database: Path) -> Iterator[tuple[int, Path | None]]:
    """Put ``backup`` in place of ``database`` and hold the database for the block: no other
    process can open it from before the swap until the block has verified the copy (and done
    whatever else a restore owes). Refused while any process has it open. The database it
    replaces is kept beside it, renamed, never deleted or overwritten; if the block raises
    (verification failed, an interrupt, any error), that database is put back before anyone
    else can open either. Yields the number of events restored and where the replaced
    database went."""
    events = _check(backup)
    incoming = _incoming(database)
    marker = _pending(database)
    try:
        with unused(str(database)):
            _undo_interrupted(database)  # (an earlier restore killed mid-way)
            # The copy first, beside the live database: a kill meanwhile leaves it in place.
            # Through SQLite, not byte for byte: a file with a write-ahead log beside it (a
            # database a restore kept, or one a killed process left) holds in that log events
            # the count above included; a copy of the file alone lost them, and verified.
            os.close(os.open(incoming, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o600))
            _copy(backup, incoming, place=f"in {database.parent}",
                  unreadable=f"{backup} could not be read whole; nothing was changed")
            fd = os.open(incoming, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
            if _check(incoming) != events:
                raise BackupError(f"{backup} changed while it was being restored (a process "
                                  "writing to it?); nothing was changed")
            kept = _kept_name(database) if database.exists() else None
            # Before anything moves, a note of where the live database goes: if this process is
            # killed from here until the copy is verified and the erasures it would undo are
            # repeated, the next process to open the database puts it back (``_undo``).
            _write_durably(marker, b"" if kept is None else kept.name.encode())
            try:
                if kept is not None:
                    for suffix in ("", "-wal", "-shm"):
                        current = Path(f"{database}{suffix}")
                        if current.exists():
                            os.replace(current, Path(f"{kept}{suffix}"))
                os.replace(incoming, database)
                _fsync_directory(database.parent)
                yield events, kept
            except BaseException:
                _put_back(database, kept)
                raise
            marker.unlink()
            _fsync_directory(database.parent)
    except InUse:
        raise BackupError("the database is open in another process (`ledger serve`, "
                          "`ledger projections run` or another command): stop it first; "
                          "nothing was changed") from None
    finally:
        incoming.unlink(missing_ok=True)


def _fsync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _incoming(database: Path) -> Path:
    return database.with_name(database.name + ".restoring")


def _pending(database: Path) -> Path:
    """The note that a restore of ``database`` has begun and not finished."""
    return database.with_name(database.name + ".restore-pending")


def _write_durably(path: Path, data: bytes) -> None:
    """Write ``path`` whole or not at all, even killed or cut off part-way: written beside it,
    synced, then renamed over it (a note emptied by a kill read as "nothing was replaced")."""
    temporary = path.with_name(path.name + ".tmp")
    fd = os.open(temporary, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o600)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(temporary, path)
    _fsync_directory(path.parent)


PUTTING_BACK = b"\nputting back"  # added to the note once the copy's files are gone


def _undo(database: Path, kept: Path | None, *, swapped: bool) -> None:
    """Undo a restore: once the copy was swapped in, it goes (with the files SQLite made beside
    it); each file of the replaced database comes back, as far as it had been moved. Before
    the swap, the files not yet moved are the live database's own and stay.

    Safe to run again after a kill part-way (the note stays until it has finished): the copy's
    files are deleted only until the note says they are gone, never once a file of the replaced
    database may have come back; and the main file comes back last, after its WAL, so no
    database file is ever beside a WAL that is not its own."""
    marker = _pending(database)
    if swapped and not (marker.exists() and marker.read_bytes().endswith(PUTTING_BACK)):
        for suffix in ("", "-wal", "-shm"):
            Path(f"{database}{suffix}").unlink(missing_ok=True)
        _fsync_directory(database.parent)
        if marker.exists():
            _write_durably(marker, marker.read_bytes() + PUTTING_BACK)
    for suffix in ("-wal", "-shm", ""):
        if kept is not None and Path(f"{kept}{suffix}").exists():
            os.replace(Path(f"{kept}{suffix}"), Path(f"{database}{suffix}"))


def _put_back(database: Path, kept: Path | None) -> None:
    """Undo a restore that failed or was killed, then remove its note: the note goes only once
    the files are back in place durably, so a kill while putting them back leaves it for the
    next process to finish."""
    incoming = _incoming(database)
    _undo(database, kept, swapped=not incoming.exists())
    _fsync_directory(database.parent)
    _pending(database).unlink(missing_ok=True)
    _fsync_directory(database.parent)
    # Only now: while the note is there, the copy still beside the database is what says the
    # swap had not happened (a re-run must then delete nothing).
    incoming.unlink(missing_ok=True)
    _pending(database).with_name(_pending(database).name + ".tmp").unlink(missing_ok=True)


def _undo_interrupted(database: Path) -> bool:
    """With the database held (``unused``): if a restore was killed before it finished (its
    note is still there), put back the database it replaced. True if it did."""
    marker = _pending(database)
    try:
        name = marker.read_bytes().removesuffix(PUTTING_BACK).decode()
    except FileNotFoundError:
        return False
    _put_back(database, database.with_name(name) if name else None)
    log.warning("a restore was stopped before it finished (the copy was not yet verified, or "
                "the erasures it would undo not yet repeated): the database it replaced was "
                "put back. Run `ledger restore` again if it is still wanted.")
    return True


def finish_interrupted_restore(database: Path) -> None:
    """Before opening ``database``: put back what a restore killed mid-way replaced, unless a
    restore is running now (it holds the database; opening waits for it) or this process is
    the one restoring. Without this, a restore killed after the swap left its unverified copy
    in place, with the erasures recorded since the backup not repeated: an erased person's
    data was readable again, and nothing said so."""
    incoming = _incoming(database)
    unfinished = _pending(database).with_name(_pending(database).name + ".tmp")
    if not any(p.exists() for p in (_pending(database), incoming, unfinished)) \
            or held_here(str(database)):
        return
    try:
        with unused(str(database)):
            if not _undo_interrupted(database) and (incoming.exists() or unfinished.exists()):
                # Killed before it moved anything: only its copy of the backup is left, beside
                # the master key, where no erasure would reach it (and perhaps a note not yet
                # put in place, which names nothing that was moved).
                unfinished.unlink(missing_ok=True)
                incoming.unlink(missing_ok=True)
                _fsync_directory(database.parent)
                log.warning("a restore was stopped before it finished (before it replaced "
                            "anything): its copy of the backup was removed. Run `ledger "
                            "restore` again if it is still wanted.")
    except InUse:
        return  # a restore holds it (or another process is putting it back): wait to open


def kept_databases(database: Path) -> list[Path]:
    """The databases ``ledger restore`` replaced and kept beside ``database``."""
    return sorted(p for p in database.parent.glob(f"{database.name}.before-restore-*")
                  if not p.name.endswith(("-wal", "-shm", "-journal")))


def shred_keys_in_kept(database: Path, participant_ids: list[UUID]) -> list[Path]:
    """Delete these (erased) participants' data keys from every database a restore kept beside
    ``database``, then rewrite the file, so that no freed page still holds the bytes: those
    files sit next to the master key, so erasure must reach them as it reaches the live one.
    Their kept requests' fingerprints (keyed digests of what they said) are dropped there too,
    as ``IdempotencyStore.forget`` drops them in the live one.
    Returns the kept databases it could not change (left as they were, to retry)."""
    from .idempotency import ERASED, SEALED, SEALED_FOR

    failed: list[Path] = []
    if not participant_ids:
        return failed
    ids = [pid.hex for pid in participant_ids]
    sealed_for = [SEALED + pid.bytes for pid in participant_ids]
    for kept in kept_databases(database):
        try:
            connection = sqlite3.connect(kept, timeout=5, isolation_level=None)
            try:
                connection.execute("PRAGMA secure_delete = ON")
                deleted = 0
                for i in range(0, len(ids), 500):
                    part = ids[i:i + 500]
                    deleted += connection.execute(
                        "DELETE FROM ledger_data_keys WHERE participant_id IN "
                        f"({', '.join('?' * len(part))})", part).rowcount
                if connection.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND "
                                      "name = 'ledger_idempotency'").fetchone():
                    for prefix in sealed_for:
                        deleted += connection.execute(
                            "UPDATE ledger_idempotency SET request_hash = ? WHERE substr(body, "
                            f"1, {SEALED_FOR}) = ? AND request_hash <> ?",
                            (ERASED, prefix, ERASED)).rowcount
                if deleted:
                    connection.execute("VACUUM")
                    connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            finally:
                connection.close()
        except sqlite3.Error:
            failed.append(kept)
    return failed


def recorded_in_kept(database: Path, events_table: str, erased_topic: str,
                     registered_topic: str) -> tuple[set[UUID], set[UUID], int]:
    """Across every database a restore kept beside ``database``: the participants recorded as
    erased, those recorded as registered, and how many rows or files could not be read (a
    damaged database). Topics and ids are stored in the clear, so no key is needed."""
    erased, registered, unreadable = set[UUID](), set[UUID](), 0
    for kept in kept_databases(database):
        try:
            connection = sqlite3.connect(f"file:{kept}?mode=ro", uri=True)
            try:
                rows = connection.execute(
                    f"SELECT topic, originator_id FROM {events_table} WHERE topic IN (?, ?)",
                    (erased_topic, registered_topic)).fetchall()
            finally:
                connection.close()
        except sqlite3.Error:  # restoring over a damaged database: it cannot say
            unreadable += 1
            continue
        for event_topic, originator in rows:
            try:
                pid = UUID(str(originator))
            except ValueError:
                unreadable += 1
                continue
            (erased if event_topic == erased_topic else registered).add(pid)
    return erased, registered, unreadable
