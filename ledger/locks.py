"""Locks that the ledger's processes share: a ``flock`` on a file beside the SQLite database,
and the key of a PostgreSQL advisory lock; and ``after_fork``, which lets an object that holds
locks or connections start afresh in a forked child (gunicorn forks its workers)."""

from __future__ import annotations

import fcntl
import hashlib
import os
import threading
import time
import weakref
from typing import Any


def after_fork(obj: Any, method: str) -> None:
    """Call ``obj.method()`` in a forked child, for as long as ``obj`` lives."""
    ref = weakref.ref(obj)

    def call() -> None:
        alive = ref()
        if alive is not None:
            getattr(alive, method)()
    os.register_at_fork(after_in_child=call)


def advisory_key(label: str) -> int:
    """The 64-bit key of PostgreSQL's advisory lock for ``label`` (the same in every process)."""
    return int.from_bytes(hashlib.sha256(label.encode()).digest()[:8], "big", signed=True)


class FileLock:
    """An exclusive lock shared by the processes that open one file (a ``flock``), and by the
    threads of each process (a lock of its own: threads waiting on it are woken as soon as it
    is released). The flock is polled every 0.1 ms at first and never more than 1 ms apart.
    The kernel drops the flock of a process that dies; one that hangs holding it makes the
    others' ``acquire`` return False after the timeout."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._threads = threading.Lock()
        self._fd = -1
        after_fork(self, "_forked")

    def _forked(self) -> None:
        # A child must not share its parent's flock (an inherited descriptor does) nor inherit
        # a lock that some parent thread held at the fork.
        self._threads = threading.Lock()
        self.close()

    def close(self) -> None:
        """Close the lock file (releasing the lock if this process held it)."""
        if self._fd >= 0:
            try:
                os.close(self._fd)
            except OSError:
                pass
            self._fd = -1

    def acquire(self, timeout_s: float) -> bool:
        """Wait at most ``timeout_s`` for the lock; whether it was had."""
        deadline = time.monotonic() + timeout_s
        if not self._threads.acquire(timeout=timeout_s):
            return False
        try:
            if self._fd < 0:
                self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            pause = 0.0001
            while True:
                try:
                    fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    return True
                except BlockingIOError:
                    if time.monotonic() > deadline:
                        self._threads.release()
                        return False
                    time.sleep(pause)
                    pause = min(pause * 2, 0.001)
        except BaseException:
            self._threads.release()
            raise

    def release(self) -> None:
        """Let the next one in."""
        try:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
        finally:
            self._threads.release()


def _in_use_file(database: str) -> int:
    return os.open(f"{database}-in-use.lock", os.O_RDWR | os.O_CREAT, 0o600)


# Databases this process holds with ``unused``: it may open them itself (a restore verifying
# the copy it put in place), which a shared mark would otherwise wait for forever.
_HELD: set[str] = set()


def held_here(database: str) -> bool:
    """Whether this process holds the database with ``unused`` (a restore, in this process)."""
    return os.path.abspath(database) in _HELD


def in_use(database: str) -> int:
    """Mark a SQLite database as open by this process: a shared ``flock`` on a file beside it,
    held until the returned descriptor is closed (or the process ends). -1 (no mark needed)
    while this process holds it with ``unused``."""
    if os.path.abspath(database) in _HELD:
        return -1
    fd = _in_use_file(database)
    fcntl.flock(fd, fcntl.LOCK_SH)
    return fd


class InUse(Exception):
    """Another process has the database open."""


class unused:  # noqa: N801 - used as a context manager, like open()
    """While inside, no other process can open the database (``in_use`` waits): raises
    ``InUse`` at once if one has it open now."""

    def __init__(self, database: str) -> None:
        self.database = database
        self._fd = -1

    def __enter__(self) -> unused:
        self._fd = _in_use_file(self.database)
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self._fd)
            self._fd = -1
            raise InUse(self.database) from None
        _HELD.add(os.path.abspath(self.database))
        return self

    def __exit__(self, *_: object) -> None:
        _HELD.discard(os.path.abspath(self.database))
        os.close(self._fd)
        self._fd = -1
