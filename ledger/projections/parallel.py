"""A rebuild of the views shared between processes, one per core.

Each worker process reads the log in the same pages (ranges of notification ids), but only the
events of the participants in its shard (participant id modulo the number of workers, picked by
the database); payments and the study are few and every worker applies them. For each page a
worker sends the new rows of its participants that the page touched. This process waits for that
page from every worker, then writes all of their rows and the page's position in one transaction,
exactly as a one-process rebuild does: the views are at a page boundary after every commit, so a
rebuild killed at any moment leaves views equal to a replay to their position, and any process
catches them up.

Workers only read the store. They send nothing personal that a one-process rebuild would not
write itself (rows of facts, and view documents whose personal fields stay sealed), and on a
failure only its type, never its message.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import signal
import threading
from collections.abc import Callable, Iterator, Mapping
from multiprocessing import resource_tracker
from typing import TYPE_CHECKING, Any

from .store import Changes, Stale, changes, merge_changes

if TYPE_CHECKING:
    from .projector import Projector

log = logging.getLogger("ledger.projections")


class WorkerFailed(RuntimeError):
    """A rebuild worker stopped (the message names only the error's type)."""


def rebuild_in_parallel(projector: Projector, workers: int, page_size: int,
                        progress: Callable[[int], None] | None = None) -> None:
    """Empty the views and apply the log up to its current end with ``workers`` processes.
    What was appended meanwhile is left to a catch-up; so is the rest if another process moves
    the views on meanwhile (the next write finds them moved)."""
    ledger = projector.ledger
    stop = ledger.recorder.max_notification_id() or 0
    ctx = multiprocessing.get_context("spawn")  # a fork could inherit open connections
    readers, processes = [], []
    try:
        with _interrupts_left_to_us():
            for k in range(workers):
                reader, writer = ctx.Pipe(duplex=False)
                process = ctx.Process(target=_work, daemon=True, args=(
                    ledger.ledger_env, (k, workers), stop, page_size, writer))
                process.start()
                writer.close()  # the worker holds the only writing end: its exit ends our reads
                readers.append(reader)
                processes.append(process)
        projector.reset()  # while the workers start (they only read the log)
        expected = 0
        while expected < stop:
            position, change = _next_page(readers)
            try:
                projector.views.write_changes(expected, position, change)
            except Stale:
                log.info("another process moved the views during the rebuild; catching up")
                break
            if progress is not None:
                progress(position - expected)
            expected = position
    finally:
        for process in processes:
            if process.is_alive():
                process.terminate()
            process.join()
        for reader in readers:
            reader.close()


@contextlib.contextmanager
def _interrupts_left_to_us() -> Iterator[None]:
    """Start the workers with Ctrl-C blocked: they inherit that, and never see it.

    A Ctrl-C in a terminal reaches every process of the foreground group, the workers too. This
    process stops the rebuild, puts the views back and ends the workers; a worker interrupted
    on its own would add a traceback to the one line the command prints (seen when it came
    while a worker was still importing). Only the signal mask of this thread changes, which a
    started process keeps across exec; this process still gets a Ctrl-C that arrives meanwhile
    (through another thread, or on leaving). Ignoring SIGINT instead would lose that one: a
    process-wide disposition. (multiprocessing protects its resource tracker the same way,
    bpo-33613; it is started first, since starting it unblocks SIGINT again.)

    A process started with SIGINT ignored (in the background, under ``nohup``) is left as it is:
    a Ctrl-C then stops nothing, the workers inherit that, and none is noted here either."""
    if threading.current_thread() is not threading.main_thread() \
            or signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        yield  # (Python raises KeyboardInterrupt in the main thread only)
        return
    resource_tracker.ensure_running()
    mask = {signal.SIGINT}
    # The mask keeps the kernel from delivering SIGINT to this thread, but another thread of
    # this process (PostgreSQL's pool workers) takes it, and Python then raises
    # KeyboardInterrupt here all the same, possibly inside ``Process.start()`` between spawning
    # a worker and sending it what it needs to start: the worker then died with a traceback of
    # its own (EOFError). So a Ctrl-C meanwhile is only noted, and raised once they have started.
    received: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda signum, _frame: received.append(signum))
    signal.pthread_sigmask(signal.SIG_BLOCK, mask)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, mask)
        signal.signal(signal.SIGINT, previous)
    if received:
        raise KeyboardInterrupt


def _next_page(readers: list[Any]) -> tuple[int, Changes]:
    """The same page from every worker: (its last notification id, all their changes)."""
    positions, parts = set(), []
    for reader in readers:
        try:
            message = reader.recv()
        except EOFError:
            raise WorkerFailed("a rebuild worker exited without finishing") from None
        if message[0] == "failed":
            from .projector import UnreadableEvent

            if message[1] == UnreadableEvent.__name__:
                raise UnreadableEvent(message[2])
            raise WorkerFailed(f"a rebuild worker failed: {message[1]}")
        positions.add(message[1])
        parts.append(message[2])
    if len(positions) != 1:
        raise WorkerFailed("rebuild workers sent different pages")  # never: pages are id ranges
    return positions.pop(), merge_changes(parts)


def _work(env: Mapping[str, str], shard: tuple[int, int], stop: int, page_size: int,
          out: Any) -> None:
    """One worker: the rows of its shard, page by page, up to ``stop``."""
    from ..application import Ledger
    from .projector import PARTICIPANT, REBUILD_KEEP, fewer_collections

    try:
        with fewer_collections():
            ledger = Ledger({**env, "LEDGER_PROJECTIONS": "external"})
            try:
                projector = ledger.projector
                projector.replay = projector.new_replay(REBUILD_KEEP, shard=shard)
                events_table = ledger.recorder.events_table_name  # type: ignore[attr-defined]
                for first in range(1, stop + 1, page_size):
                    last = min(first + page_size - 1, stop)
                    page = ledger.sql.shard_notifications(events_table, first, last, shard,
                                                          PARTICIPANT)
                    entries = projector.entries(page) if page else []
                    out.send(("page", last, changes(entries, {})))
            finally:
                ledger.close()
    except BrokenPipeError:
        return  # the rebuild stopped: nobody is reading
    except BaseException as e:  # noqa: BLE001 - reported by type only (messages may hold data)
        try:  # (and, for an event that cannot be read, its position)
            out.send(("failed", type(e).__name__, getattr(e, "position", None)))
        except OSError:
            pass
    finally:
        out.close()
