"""A thread that keeps this process's views up to date right after its own saves."""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from typing import Any

log = logging.getLogger("ledger.projections")
RETRY_S = 0.5
BATCH_S = 0.1  # reads catch up themselves, so this delay never shows in an answer


class Follower:
    """Woken after each save, runs its jobs: catches the views up (batching saves that came
    meanwhile), then whatever else follows the log (the Merkle leaves and signed checkpoints).
    A job may return a number of seconds: the follower then runs again that much later even if
    no save wakes it (a checkpoint that was not yet due).

    Started on the first wake in each process (gunicorn forks workers, and threads do not
    survive a fork). A failure is logged by type only and retried: the views are derived data,
    the next catch-up (here, on a read or at start-up) repairs them."""

    def __init__(self, *jobs: Callable[[], Any]) -> None:
        self._jobs = jobs
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._pid = 0
        self._start_lock = threading.Lock()

    def wake(self) -> None:
        """Ask for a catch-up soon."""
        if self._stopping.is_set():
            return
        if self._thread is None or self._pid != os.getpid():
            with self._start_lock:
                if self._thread is None or self._pid != os.getpid():
                    self._pid = os.getpid()
                    self._thread = threading.Thread(target=self._run, name="ledger-views",
                                                    daemon=True)
                    self._thread.start()
        self._wake.set()

    def _run(self) -> None:
        again: float | None = None
        while not self._stopping.is_set():
            self._wake.wait(again)
            self._stopping.wait(BATCH_S)  # let saves that follow closely share one catch-up
            self._wake.clear()
            if self._stopping.is_set():
                return
            again = None
            try:
                for job in self._jobs:
                    delay = job()
                    if isinstance(delay, float) and (again is None or delay < again):
                        again = delay
            except Exception as error:  # noqa: BLE001 - logged by type; retried below
                from .projector import UnreadableEvent  # (its message names only a position)

                what = str(error) if isinstance(error, UnreadableEvent) else type(error).__name__
                log.warning("could not follow the log (%s); retrying", what)
                self._stopping.wait(RETRY_S)
                self._wake.set()

    def stop(self) -> None:
        """Stop the thread, after any catch-up in progress (the owner finishes what is left)."""
        if self._stopping.is_set():
            return
        self._stopping.set()
        self._wake.set()
        thread = self._thread
        if thread is not None and self._pid == os.getpid() and thread.is_alive():
            thread.join(timeout=30)
