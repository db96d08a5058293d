"""Apply the event log to private, in-memory aggregates, and turn them into view rows.

``Replay`` is the whole state at a position of the log (every participant, payment and the
study), built by applying stored events in notification order; the compliance report of a past
moment is a replay stopped at that moment. ``Projector`` keeps the views in the database up to
date with the same code: it reads notifications after the views' position, applies them, and
writes the rows of every participant they touched, with the new position, in one transaction.
"""

from __future__ import annotations

import base64
import gc
import json
import logging
import os
import threading
from collections import Counter, OrderedDict
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any
from uuid import UUID

import orjson
from eventsourcing.application import Repository
from eventsourcing.domain import Aggregate, OriginatorIDError, OriginatorVersionError
from eventsourcing.persistence import (
    DatetimeAsISO,
    DecimalAsStr,
    JSONTranscoder,
    Notification,
    StoredEvent,
    Transcoding,
    UUIDAsHex,
)

from ..domain import Participant, Payment, Study, apply_events, is_redacted
from ..privacy.mapper import Sealed
from ..store import UnreadableEvent, decoded
from ..views import participant_view
from .rows import TABLES, participant_rows, summary_row
from .store import Entry, Stale, ViewStore

log = logging.getLogger("ledger.projections")

PAGE = 500
REBUILD_PAGE = 20_000  # a participant's rows are rewritten once per page that touches them
REBUILD_KEEP = 2_000  # aggregates held while rebuilding (by each worker process)
PARALLEL_FROM = 20_000  # events in the log from which a rebuild starts worker processes
MAX_WORKERS = 4
FOLLOW_KEEP = 2_000  # aggregates held while following the log (each worker process holds its own)
WRITTEN_KEEP = 1_000  # participants whose last written rows are remembered
# Past this many events applied by other processes, a follower starts its replay afresh
# rather than asking which of the aggregates it holds those events changed.
GAP_ASKED = 50_000
PARTICIPANT, PAYMENT, STUDY = "ledger:Participant", "ledger:Payment", "ledger:Study"


class RebuildRunning(Exception):
    """Another rebuild holds the views (one at a time: each puts back what it set aside)."""


class SealedRef(Transcoding):
    """A sealed personal value in a stored view document: still ciphertext under the person's
    own key, with what is needed to open it (erasing the person makes it unreadable here too)."""

    type = Sealed
    name = "sealed_ref"

    def encode(self, obj: Sealed) -> list[str]:
        return [base64.b64encode(obj.ciphertext).decode(), str(obj.subject), obj.topic, obj.field]

    def decode(self, data: list[str]) -> Sealed:
        return Sealed(base64.b64decode(data[0]), UUID(data[1]), data[2], data[3])


def _plain(value: Any) -> Any:
    """A stored document's JSON with ids as plain text, as documents are written now (earlier
    ones wrapped them as the transcoder does: ``{"_type_": "uuid_hex", ...}``)."""
    if isinstance(value, dict):
        if value.get("_type_") == "uuid_hex" and set(value) == {"_type_", "_data_"}:
            return str(UUID(value["_data_"]))
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


# The fields a person's list document has gained since the views began (24 November 2026), by
# the section of the document they are in: one written before lacks them, and that is not a
# difference. Any other field missing is (a review deleted "payments" and "erased", and the
# list then showed no payments, and an erased person as not erased).
ADDED_DOC_FIELDS = frozenset({("access_needs", "history"), ("arrangements", "history"),
                              ("expenses", "currency"), ("uses", "attribution"),
                              ("uses", "consented_attribution")})


def _agrees(stored: Any, wanted: Any, section: str = "") -> bool:
    """Whether a stored document says what the log says: every field it has equal to the
    replay's, and every field it lacks one added since an earlier release wrote it (it shows
    once the person changes, or the views are rebuilt)."""
    if isinstance(stored, dict) and isinstance(wanted, dict):
        if any(k not in stored and (section, k) not in ADDED_DOC_FIELDS for k in wanted):
            return False
        return all(k in wanted and _agrees(v, wanted[k], section or k)
                   for k, v in stored.items())
    if isinstance(stored, list) and isinstance(wanted, list):
        return len(stored) == len(wanted) and all(
            _agrees(a, b, section) for a, b in zip(stored, wanted, strict=True))
    return bool(stored == wanted)


def _document_agrees(stored: str, wanted: str) -> bool:
    try:
        return _agrees(_plain(json.loads(stored)), _plain(json.loads(wanted)))
    except ValueError:  # not JSON, or an id that is not one: not what the log gives
        return False


def doc_transcoder() -> JSONTranscoder:
    """The transcoder of stored view documents."""
    t = JSONTranscoder()
    for transcoding in (UUIDAsHex(), DecimalAsStr(), DatetimeAsISO(), SealedRef()):
        t.register(transcoding)
    return t


@contextmanager
def fewer_collections() -> Iterator[None]:
    """Run the cyclic garbage collector less often, for a long replay.

    Replays allocate millions of short-lived objects while holding thousands of aggregates, so
    with the default thresholds the collector keeps rescanning what is held: a third of a
    rebuild's time, measured. Reference counting still frees everything at once; only cycles
    wait a little longer to be found."""
    before = gc.get_threshold()
    gc.set_threshold(50_000, 20, 100)
    try:
        yield
    finally:
        gc.set_threshold(*before)


class Replay:
    """Aggregates rebuilt in memory from notifications, in log order."""

    def __init__(self, mapper: Any, events: Any, keep: int | None = None,
                 shard: tuple[int, int] | None = None,
                 fetch: Callable[[list[UUID]], list[StoredEvent]] | None = None) -> None:
        self.mapper = mapper
        self._loader = Repository(event_store=events)  # for aggregates not held in memory
        self._fetch = fetch  # the stored events of many aggregates in one query, if given
        self.keep = keep  # None: hold everything (a rebuild or a report)
        # (k, n): apply only the participants whose id is k modulo n, and keep every one's
        # registration position (a rebuild worker cannot read it back from views not yet
        # written). Payments and the study are applied in every shard: they are few.
        self.shard = shard
        self.aggregates: OrderedDict[UUID, Aggregate] = OrderedDict()
        self.seq: dict[UUID, int] = {}  # participant -> notification id of their registration
        self.study: Study | None = None
        self.position = 0
        self.count = 0
        self._holding = 0

    def apply(self, n: Notification, event: Any | None = None) -> UUID | None:
        """Apply one notification; returns the participant it concerns (None for the study, or
        for a participant outside this replay's shard)."""
        oid: UUID = n.originator_id  # type: ignore[assignment]
        if self.shard is not None and n.topic.startswith(PARTICIPANT) \
                and not self.in_shard(oid):
            self.position = n.id
            return None  # another shard's: not even decoded
        if event is None:
            event = decoded(self.mapper, n)
        aggregate = self._current(oid, n.originator_version - 1)
        if aggregate is None or aggregate.version < n.originator_version:
            try:
                aggregate = event.mutate(aggregate)
            except (TypeError, AttributeError, KeyError, ValueError, AssertionError,
                    OriginatorIDError, OriginatorVersionError):
                aggregate = None  # (an event that does not fit its history: its topic or
        if aggregate is None:  # version was changed in the database)
            raise UnreadableEvent(n.id)
        self._hold(oid, aggregate)
        self.position, self.count = n.id, self.count + 1
        if n.topic.startswith(STUDY):
            self.study = aggregate  # type: ignore[assignment]
            return None
        if n.topic.startswith(PAYMENT):
            payee: UUID = getattr(aggregate, "participant_id")  # noqa: B009 - a Payment
            return payee if self.shard is None or self.in_shard(payee) else None
        if n.topic == f"{PARTICIPANT}.Registered":
            self.seq[oid] = n.id
        return oid

    def prefetch(self, page: list[Notification]) -> None:
        """Load, in one query, every aggregate the page continues that is not held (each at
        the version before its first event in the page, as ``apply`` would one at a time)."""
        wanted: dict[UUID, int] = {}
        for n in page:
            oid: UUID = n.originator_id  # type: ignore[assignment]
            if oid in wanted or (self.shard is not None and n.topic.startswith(PARTICIPANT)
                                 and not self.in_shard(oid)):
                continue
            held = self.aggregates.get(oid)
            before = n.originator_version - 1
            wanted[oid] = before if before and (held is None or held.version < before) else 0
        self.load_many({oid: v for oid, v in wanted.items() if v})

    def prefetch_payments(self, participants: Iterable[UUID]) -> None:
        """Load, in one query, the payments of these participants that are not held."""
        missing: dict[UUID, int | None] = {pid: None for p in participants
                   if (held := self.aggregates.get(p)) is not None
                   for pid in held.payment_ids()  # type: ignore[attr-defined]
                   if pid not in self.aggregates}
        self.load_many(missing)

    def load_many(self, versions: dict[UUID, int | None]) -> None:
        """Rebuild these aggregates from the store, each up to its version (None: its latest),
        and hold them. Without ``fetch``, each is left to be loaded on its own when needed."""
        if not versions or self._fetch is None:
            return
        events: dict[UUID, list[Any]] = {}
        for stored in self._fetch(list(versions)):
            oid = stored.originator_id
            limit = versions[oid]  # type: ignore[index]
            if limit is None or stored.originator_version <= limit:
                events.setdefault(oid, []).append(  # type: ignore[arg-type]
                    self.mapper.to_domain_event(stored))
        for oid, history in events.items():
            self._hold(oid, apply_events(None, history))

    def in_shard(self, participant_id: UUID) -> bool:
        """Whether this replay applies the participant (always, unless sharded)."""
        return self.shard is None or participant_id.int % self.shard[1] == self.shard[0]

    def _current(self, aggregate_id: UUID, version: int) -> Aggregate | None:
        """The aggregate at ``version`` or later (None before its first event)."""
        held = self.aggregates.get(aggregate_id)
        if held is not None and held.version >= version:
            return held  # (``_hold`` marks it as recently used)
        if version == 0:
            return None
        return self._loader.get(aggregate_id, version=version,  # type: ignore[return-value]
                                projector_func=apply_events)

    def _hold(self, aggregate_id: UUID, aggregate: Aggregate) -> None:
        self.aggregates[aggregate_id] = aggregate
        if self.keep is not None:
            self.aggregates.move_to_end(aggregate_id)
            self._trim()

    def _trim(self) -> None:
        if self.keep is not None and not self._holding:
            while len(self.aggregates) > self.keep:
                # a dropped participant's registration position is read back from the views
                # when needed (Projector._entry), so neither map grows with the study
                dropped = self.aggregates.popitem(last=False)[0]
                if self.shard is None:
                    self.seq.pop(dropped, None)

    @contextmanager
    def holding(self) -> Iterator[None]:
        """Evict nothing until the end: a batch's rows are then computed from the aggregates
        it applied, never from one read back from the store at a later version."""
        self._holding += 1
        try:
            yield
        finally:
            self._holding -= 1
            self._trim()

    def forget(self, aggregate_ids: Iterable[UUID]) -> None:
        """Drop aggregates that were moved past what was written (a batch that lost a race)."""
        for a in aggregate_ids:
            self.aggregates.pop(a, None)
            self.seq.pop(a, None)

    def participant(self, participant_id: UUID) -> Participant:
        """A participant held in memory (or loaded at its latest version)."""
        p = self.aggregates.get(participant_id)
        if p is None:
            p = self._loader.get(participant_id, projector_func=apply_events)
            self._hold(participant_id, p)
        return p  # type: ignore[return-value]

    def payments(self, p: Participant) -> list[Payment]:
        """The participant's payments, as held."""
        out = []
        for pid in p.payment_ids():
            pay = self.aggregates.get(pid)
            if pay is None:
                pay = self._loader.get(pid, projector_func=apply_events)
                self._hold(pid, pay)
            out.append(pay)
        return out  # type: ignore[return-value]

    def participants(self) -> Iterator[Participant]:
        """Every participant held, in registration order (a full replay holds them all)."""
        for pid in sorted(self.seq, key=self.seq.__getitem__):
            yield self.participant(pid)

    def all_rows(self) -> dict[str, list[dict[str, Any]]]:
        """The view rows of every participant held (for reports of a replayed moment)."""
        out: dict[str, list[dict[str, Any]]] = {name: [] for name in TABLES}  # even with no one
        for p in self.participants():
            for name, rows in participant_rows(p, self.payments(p)).items():
                out.setdefault(name, []).extend(rows)
        return out


class Projector:
    """Keeps the view tables up to date from the log (any number of processes may run one)."""

    def __init__(self, ledger: Any, keep: int | None = FOLLOW_KEEP) -> None:
        self.ledger = ledger
        self.views = ViewStore(ledger.sql)
        self.keep = keep
        self.replay = self.new_replay(keep)
        self.transcoder = doc_transcoder()
        self._lock = threading.Lock()
        # What this process last wrote for recent participants, valid while the views are still
        # at ``_written_at`` (no other process wrote since): lets a batch rewrite only the
        # tables that changed. Bounded; a participant not in it gets all rows replaced.
        self._written: OrderedDict[str, Entry] = OrderedDict()
        self._written_at = -1
        self._written_keep = WRITTEN_KEEP
        self.put_back_at: int | None = None  # where a rebuild that stopped left the views

    def new_replay(self, keep: int | None, shard: tuple[int, int] | None = None) -> Replay:
        """A replay that reads the aggregates it is missing a page's worth at a time."""
        table = self.ledger.recorder.events_table_name
        return Replay(self.ledger.mapper, self.ledger.events, keep=keep, shard=shard,
                      fetch=lambda ids: self.ledger.sql.events_of(table, ids))

    def differences_from_log(self) -> tuple[int, dict[str, tuple[int, int]]]:
        """Hold the views against the log: their rows (read in one transaction with their
        position) against a replay of the log up to that position, in memory. Returns the
        position and, for each table that differs, (rows only in the views, rows only in the
        replay): counts, never the rows (they hold references and dates). The views are what
        the current report and the staff list read; ``ledger verify`` holds only the log, so
        a view table edited in the database would go unseen there."""
        from .rows import rows_key

        ledger = self.ledger
        position, _, tables, people = self.views.snapshot(ledger.recorder.events_table_name,
                                                          docs=True)
        stored_docs = {str(p["participant_id"]): p.pop("doc") for p in people}
        differ: dict[str, tuple[int, int]] = {}
        end = ledger.recorder.max_notification_id() or 0
        if position > end:  # views that claim events the log does not have
            differ["position"] = (position, end)
        replay = Replay(ledger.mapper, ledger.events, keep=None)
        start = 1
        while start <= position:
            page = ledger.sql.read_page(ledger.recorder, start, REBUILD_PAGE, stop=position)
            for n in page:
                replay.apply(n)
            if len(page) < REBUILD_PAGE:
                break
            start = page[-1].id + 1
        replayed = replay.all_rows()
        # The people themselves (reference, registration, erasure), which the report reads for
        # its references, erased flags and erasures.
        tables = {**tables, "participants": people}
        replayed["participants"] = [summary_row(p, replay.seq[p.id])
                                    for p in replay.participants()]
        # And each one's document, which the staff list shows (a review copied one person's
        # over another's: the list showed someone twice and someone not at all, and this
        # passed). Compared still sealed: the sealed values are the events' own ciphertext.
        wrong = 0
        for p in replay.participants():
            kept = stored_docs.pop(str(p.id), None)
            made = self.encode_doc(participant_view(p, replay.payments(p), reveal=lambda v: v))
            if kept is None or not _document_agrees(kept, made):
                wrong += 1
        if wrong or stored_docs:
            differ["participant documents"] = (wrong + len(stored_docs), wrong)
        for name in sorted(set(tables) | set(replayed)):
            stored = Counter(map(rows_key, tables.get(name, [])))
            wanted = Counter(map(rows_key, replayed.get(name, [])))
            if stored != wanted:
                differ[name] = ((stored - wanted).total(), (wanted - stored).total())
        return position, differ

    def catch_up(self, *, limit: int | None = None, page_size: int = PAGE,
                 progress: Callable[[int], None] | None = None) -> int:
        """Apply everything after the views' position (or, with ``limit``, the pages up to
        that notification id); returns the new position."""
        with self._lock:
            expected = self.views.position()
            if not self.ledger.sql.read_page(self.ledger.recorder, expected + 1, 1):
                return expected  # (nothing to do: no need to wait for the shared lock)
            # One process at a time: two that apply the same page both compute it, and one
            # finds the views moved on and throws its work away (two API workers under writes
            # threw away as many events as they kept). Correct either way: the position guards.
            with self.ledger.sql.shared_lock("views"):
                return self._catch_up(limit, page_size, progress)

    def _catch_up(self, limit: int | None, page_size: int,
                  progress: Callable[[int], None] | None) -> int:
        while True:
            expected = self.views.position()
            page = self.ledger.sql.read_page(self.ledger.recorder, expected + 1, page_size)
            if not page:
                return expected
            try:
                self._apply_batch(expected, page)
            except Stale:
                continue
            if progress is not None:
                progress(len(page))
            if (limit is not None and page[-1].id >= limit) or len(page) < page_size:
                return page[-1].id  # a short page was the end of the log just now

    def process_event(self, event: Any, notification_id: int) -> None:
        """Apply one event already decoded, delivered with its notification id (the
        ProjectionRunner's path); nothing happens if the views already include it."""
        with self._lock:
            while True:
                expected = self.views.position()
                if expected >= notification_id:
                    return
                if expected < notification_id - 1 and self.ledger.sql.read_page(
                        self.ledger.recorder, expected + 1, 1, stop=notification_id - 1):
                    # The views are behind what was delivered (a rebuild emptied them or put
                    # them back meanwhile): what lies between is read from the log, not skipped.
                    self._catch_up(notification_id, PAGE, None)
                    continue
                n = Notification(id=notification_id, originator_id=event.originator_id,
                                 originator_version=event.originator_version,
                                 topic=type(event).TOPIC, state=b"")
                try:
                    self._apply_batch(expected, [n], {notification_id: event})
                    return
                except Stale:
                    continue

    def entries(self, page: list[Notification], decoded: dict[int, Any] | None = None
                ) -> list[Entry]:
        """Apply a page of notifications to the replay; the new rows of every participant it
        touched. If this raises, the replay has dropped whatever the page changed."""
        touched: dict[UUID, None] = {}
        try:
            with self.replay.holding():
                # What the page continues, its participants' payments and registration
                # positions are each read in one query, not one per aggregate.
                self.replay.prefetch(page)
                for n in page:
                    pid = self.replay.apply(n, (decoded or {}).get(n.id))
                    if pid is not None:
                        touched[pid] = None
                self.replay.prefetch_payments(touched)
                unknown = [str(pid) for pid in touched if pid not in self.replay.seq]
                for pid_key, seq in self.views.seqs_of(unknown).items():
                    self.replay.seq[UUID(pid_key)] = seq
                # Computed before any write transaction opens: computing may read the store.
                return [self._entry(pid) for pid in touched]
        except BaseException:
            self.replay.forget(n.originator_id for n in page)  # type: ignore[misc]
            raise

    def _apply_batch(self, expected: int, page: list[Notification],
                     decoded: dict[int, Any] | None = None) -> None:
        if expected != self._written_at:
            self._written.clear()  # another process wrote: what we wrote may be stale
        if expected < self.replay.position:
            # The views went back behind what this replay applied (a rebuild emptied them, or
            # put them back): its aggregates are too far on for these pages. Start afresh.
            self.replay = self.new_replay(self.replay.keep, self.replay.shard)
        elif expected > self.replay.position and self.replay.aggregates:
            self._forget_what_others_applied(expected)
        try:
            entries = self.entries(page, decoded)
            try:
                self.views.write(expected, page[-1].id, entries, self._written)
            except BaseException:
                self.replay.forget(n.originator_id for n in page)  # type: ignore[misc]
                raise  # re-read them next time, from the store
        except BaseException:
            self._written.clear()
            self._written_at = -1
            raise
        for entry in entries:
            pid_key = entry[0]["participant_id"]
            self._written[pid_key] = entry
            self._written.move_to_end(pid_key)
        while len(self._written) > self._written_keep:
            self._written.popitem(last=False)
        self._written_at = page[-1].id

    def _forget_what_others_applied(self, expected: int) -> None:
        """Another process applied the pages from this replay's position to ``expected``: drop
        what this replay holds that those events changed, to be read back when next needed.
        Without this, a payment reversed there (or a person changed there) was still held here
        as it was before, and the person's next event applied here rewrote their rows from it:
        the staff list and the current report showed a reversed payment as paid, until the
        person's next event happened to be applied where the payment was fresh."""
        first = self.replay.position + 1
        if expected - first >= GAP_ASKED:
            self.replay = self.new_replay(self.replay.keep, self.replay.shard)
            return
        changed = self.ledger.sql.originators_between(
            self.ledger.recorder.events_table_name, first, expected)
        self.replay.forget(a for a in changed if a in self.replay.aggregates)

    def _entry(self, participant_id: UUID) -> Entry:
        p = self.replay.participant(participant_id)
        payments = self.replay.payments(p)
        seq = self.replay.seq.get(participant_id)
        if seq is None:
            seq = self.views.seq_of(str(participant_id))
            assert seq is not None, "a participant is registered before anything else happens"
            self.replay.seq[participant_id] = seq
        doc = participant_view(p, payments, reveal=lambda v: v)
        return summary_row(p, seq), self.encode_doc(doc), participant_rows(p, payments)

    def encode_doc(self, doc: dict[str, Any]) -> str:
        """A participant document as stored: JSON by orjson (a fifth of a rebuild's time went
        to encoding them with ``json``). Times, sealed values and decimals are written as the
        transcoder writes them; ids as plain strings (``id`` keys hold only ids, and
        ``read_doc`` reads them back as UUIDs; documents stored with wrapped ids still read)."""
        return orjson.dumps(doc, default=self.transcoder._encode_obj,
                            option=orjson.OPT_PASSTHROUGH_DATETIME
                            | orjson.OPT_PASSTHROUGH_DATACLASS).decode()

    def rebuild(self, progress: Callable[[int], None] | None = None,
                page_size: int = REBUILD_PAGE, workers: int | None = None) -> int:
        """Empty the views and apply the whole log again, a page per transaction.

        ``workers`` processes share the work (``parallel.py``; a power of two, rounded down).
        By default: one per core, up to ``MAX_WORKERS``, once the log has ``PARALLEL_FROM``
        events (below that, starting them costs more than they save); else this process alone.
        Memory stays flat in the size of the log: the aggregates held are bounded (those dropped
        are read back from the store if the log comes back to them), in each process."""
        if workers is None:
            size = self.ledger.recorder.max_notification_id() or 0
            workers = min(os.cpu_count() or 1, MAX_WORKERS) if size >= PARALLEL_FROM else 1
        workers = 1 << (max(1, workers).bit_length() - 1)  # shards are split by a power of two
        self.put_back_at = None
        with fewer_collections(), self.ledger.sql.shared_lock("rebuild", timeout_s=0) as alone:
            if not alone:
                raise RebuildRunning("another `ledger projections rebuild` is running on this "
                                     "ledger; wait for it to finish")
            self.views.drop_prior()  # what a killed rebuild set aside (if no ledger opened since)
            try:
                with self._lock:  # this process's own follower waits until the end
                    if workers > 1:
                        from .parallel import rebuild_in_parallel

                        rebuild_in_parallel(self, workers, page_size, progress)
                    # (the rest of the log, or all of it: also what was appended meanwhile;
                    # other processes' followers wait, as for any catch-up)
                    with self.ledger.sql.shared_lock("views"):
                        if workers == 1:
                            self.reset()
                        position = self._catch_up(None, page_size, progress)
            except BaseException:
                # Stopped (an event that cannot be read, a failed worker, an interrupt): the
                # views go back to what they were, not left part-built. Only a kill leaves
                # them at a page boundary (still equal to a replay to there).
                self._put_back()
                raise
            try:
                self.views.drop_prior()
            except Exception as error:  # noqa: BLE001 - the rebuild itself is done
                log.warning("could not drop the views set aside (%s); the next rebuild "
                            "drops them", type(error).__name__)
            return position

    def recover(self) -> None:
        """Put back the views a killed rebuild set aside, unless what it built is further on (then
        only drop them). Run when a ledger opens: a rebuild that stopped any other way has
        already put them back, and one still running holds the rebuild lock (it is left alone)."""
        if self.views.prior_position() is None:  # (the usual case: one read)
            return
        with self.ledger.sql.shared_lock("rebuild", timeout_s=0) as alone:
            if not alone:
                return
            with self._lock:
                self._written.clear()
                self._written_at = -1
                self.replay = self.new_replay(self.keep)
                did, position = self.views.put_back_or_keep(unless_behind=True)
            if did == "put back":
                log.warning("a rebuild of the views did not finish (it was killed, or could not "
                            "put them back itself); the views it set aside are back, up to "
                            "position %s", position)
            elif did == "kept":
                log.warning("a rebuild of the views left them set aside (it was killed, or could "
                            "not drop them) after getting as far as they had been; they stay as "
                            "it left them (up to position %s) and catch up", position)

    def _put_back(self) -> None:
        """Put the views back as the stopped rebuild found them; a failure here is logged (by
        type) and leaves them part-built, never hiding why the rebuild stopped."""
        with self._lock:
            self._written.clear()
            self._written_at = -1
            self.replay = self.new_replay(self.keep)  # a follower's again, from the start
            try:
                self.put_back_at = self.views.put_back_prior()
            except Exception as error:  # noqa: BLE001 - the caller re-raises the first error
                log.warning("could not put the views back (%s); they stay part-built, equal "
                            "to the log up to their position", type(error).__name__)

    def reset(self) -> None:
        """Empty the views, setting them aside until the rebuild ends, and forget what was
        applied (the caller holds ``_lock``)."""
        self.views.reset(keep_prior=True)
        self._written.clear()
        self._written_at = -1
        self.replay = self.new_replay(REBUILD_KEEP)

    def read_doc(self, doc: str, reveal: Callable[[Any], Any]) -> dict[str, Any]:
        """A stored participant document, with its sealed fields opened by ``reveal``.

        One pass: the transcoder's own object hook decodes each encoded value as the document is
        parsed, and a sealed one is opened there and then."""
        decode_obj = self.transcoder._decode_obj  # what the transcoder's decoder calls

        def decode(d: dict[str, Any]) -> Any:
            value = decode_obj(d)
            if isinstance(value, Sealed):
                opened = reveal(value)
                return "[erased]" if is_redacted(opened) else opened
            if value is d and type(d.get("id")) is str:
                d["id"] = UUID(d["id"])
            return value
        view = json.loads(doc, object_hook=decode)
        if not isinstance(view["communities"], list):
            view["communities"] = [view["communities"]]
        return view  # type: ignore[no-any-return]
