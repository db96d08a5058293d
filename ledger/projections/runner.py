"""``ledger projections run``: follow the log with eventsourcing's ProjectionRunner and keep the
views up to date, for deployments where API processes leave that to one follower
(``LEDGER_PROJECTIONS=external``, e.g. several hosts on one PostgreSQL database).

The runner's subscription delivers each event with its notification id; the projector writes the
rows and the new position in one transaction, so a follower killed at any moment resumes exactly
where the views stand. On SQLite (no subscriptions) the same command polls the log instead.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Mapping
from typing import Any

from eventsourcing.persistence import MapperDeserialisationError, Tracking, TrackingRecorder
from eventsourcing.projection import BaseProjectionRunner, Projection

from .projector import UnreadableEvent, decoded
from .store import ViewStore

POLL_S = 0.2


class ViewTracking(TrackingRecorder):
    """The views' own position, as the runner reads it to know where to subscribe from."""

    def __init__(self, views: ViewStore) -> None:
        self.views = views

    def insert_tracking(self, tracking: Tracking) -> None:
        """Positions are written with the rows (``ViewStore.write``), never on their own."""
        raise NotImplementedError("the projector writes positions together with the rows")

    def max_tracking_id(self, application_name: str) -> int | None:
        """The last notification id the views include."""
        return self.views.position() or None


class ViewsProjection(Projection[ViewTracking]):
    """Hands each event to the projector."""

    name = "ledger_views"

    def __init__(self, view: ViewTracking, projector: Any) -> None:
        super().__init__(view)
        self.projector = projector

    def process_event(self, domain_event: Any, tracking: Tracking) -> None:  # type: ignore[override]
        """Apply one event and move the views to its notification id."""
        self.projector.process_event(domain_event, tracking.notification_id)


def wake_if_stalled(ledger: Any, seen: int) -> int:
    """NOTIFY the log's channel if the views stood still at ``seen`` since the last look while
    the log holds more; returns where the views stand now.

    The library's subscription reads what is there, then starts to LISTEN in another thread:
    events committed in between are announced to no one, and it waits for the next NOTIFY. When
    the writes stop there (as they may when the follower restarts under load), the views would
    stay behind until someone writes again, and readers that wait for them time out."""
    position: int = ledger.projector.views.position()
    if position == seen and (ledger.recorder.max_notification_id() or 0) > position:
        from psycopg.sql import SQL, Identifier

        with ledger.sql.datastore.get_connection() as conn:  # autocommit: sent at once
            conn.execute(SQL("NOTIFY {0}").format(Identifier(ledger.recorder.channel_name)))
    return position


def first_unreadable(ledger: Any) -> int | None:
    """The position of the event the library's subscription could not decode: the first after
    the views' position that the mapper cannot read (it hands events over in log order)."""
    position = ledger.projector.views.position()
    while True:
        try:
            page = ledger.sql.read_page(ledger.recorder, position + 1, 100)
        except UnreadableEvent as error:  # (a row the library cannot even read)
            return error.position
        if not page:
            return None
        for n in page:
            try:
                decoded(ledger.mapper, n)
            except UnreadableEvent as error:
                return error.position
        position = page[-1].id


def run_views(env: Mapping[str, str], *, until_idle: bool = False,
              stop: threading.Event | None = None) -> None:
    """Follow the log until SIGTERM/SIGINT (or, with ``until_idle``, until caught up)."""
    from ..application import Ledger

    env = {**env, "LEDGER_PROJECTIONS": "external"}  # this process is the follower
    ledger = Ledger(env)
    stop = stop or threading.Event()
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: stop.set())
    try:
        ledger.projector.catch_up()  # what is already there, in pages
        ledger.checkpoint_if_due()
        if until_idle:
            return
        if not ledger.sql.is_postgres:  # SQLite has no subscriptions: poll
            while not stop.wait(POLL_S):
                ledger.projector.catch_up()
                ledger.checkpoint_if_due()
                ledger.retry_scrub()
            return
        runner = BaseProjectionRunner(
            projection=ViewsProjection(ViewTracking(ledger.projector.views), ledger.projector),
            application_class=Ledger, tracking_recorder=ViewTracking(ledger.projector.views),
            topics=(), env=env)
        with runner:
            seen = -1
            while not stop.is_set():
                try:
                    runner.run_forever(timeout=POLL_S)  # re-raises the processing thread's error
                except (MapperDeserialisationError, TypeError, ValueError,
                        AttributeError) as error:  # (its message could quote the event)
                    # On PostgreSQL a NULL state is a TypeError, not a decoding error: either
                    # way, the first event that cannot be read is named, if there is one.
                    position = first_unreadable(ledger)
                    if position is None and not isinstance(error, MapperDeserialisationError):
                        raise
                    raise UnreadableEvent(position) from None
                ledger.checkpoint_if_due()  # the Merkle leaves and signed checkpoints
                ledger.retry_scrub()  # erased keys a reader kept on disk, once it has gone
                if runner.is_interrupted.is_set():
                    break
                seen = wake_if_stalled(ledger, seen)
    finally:
        ledger.close()
