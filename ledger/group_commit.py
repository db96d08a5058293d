"""Group commit: the saves that the threads of one process make while another save is being
written are written together, in one transaction, by whichever of them takes the lead.

Both stores let one transaction append events at a time (SQLite's write lock; on PostgreSQL the
library's EXCLUSIVE lock on the events table, which keeps notification ids in commit order), so
under concurrent writes that lock is the bottleneck, and each hold costs a commit (an fsync)
and round trips. Sharing one hold among the saves queued behind it is what lets the ledger keep
up with a bare app that writes a tenth as much per request.

Every save returns only after the transaction holding it has committed: nothing is acknowledged
before it is durable. A save that breaks a unique key (a race lost to another writer) must fail
alone, so when a shared transaction fails, nothing of it is kept and each of its saves is
written again in a transaction of its own; only when the store itself failed (locked too long,
the disk, the connection) do they all get that error.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

from eventsourcing.persistence import OperationalError, StoredEvent

from .locks import after_fork


class Save:
    """One ``insert_events`` call waiting to be committed."""

    __slots__ = ("events", "kwargs", "ids", "error", "done", "committed")

    def __init__(self, events: Sequence[StoredEvent], kwargs: dict[str, Any]) -> None:
        self.events, self.kwargs = events, kwargs
        self.ids: Sequence[int] | None = None
        self.error: BaseException | None = None
        self.done = False
        self.committed = False


class GroupCommit:
    """Mixin for an application recorder: ``insert_events`` through the queue. The recorder
    supplies ``_insert_together`` (every save of a batch in one transaction) and
    ``_insert_alone`` (one save in a transaction of its own)."""

    def _setup_group_commit(self) -> None:
        self._queue: list[Save] = []
        self._queue_lock = threading.Lock()
        self._lead = threading.Lock()
        after_fork(self, "_reset")

    def _reset(self) -> None:
        # (a forked child starts with an empty queue and locks nobody holds)
        self._queue, self._queue_lock, self._lead = [], threading.Lock(), threading.Lock()

    def insert_events(self, stored_events: Sequence[StoredEvent], **kwargs: Any
                      ) -> Sequence[int] | None:
        save = Save(stored_events, kwargs)
        with self._queue_lock:
            self._queue.append(save)
        with self._lead:
            if not save.done:
                with self._queue_lock:
                    batch, self._queue = self._queue, []
                self._commit(batch)
        if save.error is not None:
            raise save.error
        if not save.done:
            # Another leader took it from the queue and was stopped (KeyboardInterrupt,
            # SystemExit) before its commit could mark it: it must not return as committed.
            raise OperationalError("the commit this save was in was interrupted; it may not "
                                   "have been made")
        return save.ids

    def _commit(self, batch: list[Save]) -> None:
        try:
            if len(batch) > 1:
                try:
                    ids = self._insert_together(batch)
                except OperationalError as error:  # the store failed: for them all
                    for s in batch:
                        s.error = _copy(error)
                    return
                except Exception:  # noqa: BLE001 - rolled back; whose was it? one at a time
                    pass
                else:
                    for s, i in zip(batch, ids, strict=True):
                        s.ids, s.committed = i, True
                    return
            for s in batch:
                try:
                    s.ids, s.committed = self._insert_alone(s), True
                except Exception as error:  # noqa: BLE001 - given to the save it belongs to
                    s.error = error
        finally:
            for s in batch:
                if not s.committed and s.error is None:
                    # The leader was stopped mid-way (KeyboardInterrupt, SystemExit): the other
                    # saves it held must fail too, not return as if committed.
                    s.error = OperationalError("the commit was interrupted; it may not have "
                                               "been made")
                s.done = True

    def _insert_together(self, batch: list[Save]) -> list[Sequence[int] | None]:
        raise NotImplementedError

    def _insert_alone(self, save: Save) -> Sequence[int] | None:
        raise NotImplementedError


def _copy(error: Exception) -> Exception:
    """The same error for another thread to raise (one instance raised in many threads would
    share, and keep rewriting, one traceback)."""
    try:
        fresh = type(error)(*error.args)
    except Exception:  # noqa: BLE001 - an exception type with another signature
        return error
    fresh.__cause__ = error
    return fresh

