"""The Ledger: the one service layer. Each command loads aggregates, calls the domain, saves once."""

from __future__ import annotations

import logging
import os
import secrets
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Generic, TypeVar
from uuid import UUID, uuid4

from eventsourcing.application import (
    AggregateNotFoundError,
    Application,
    ProcessingEvent,
    Repository,
)
from eventsourcing.domain import Aggregate
from eventsourcing.persistence import (
    InfrastructureFactory,
    IntegrityError,
    JSONTranscoder,
)
from eventsourcing.utils import Environment, EnvType

from . import pilot
from .audit.checkpoints import MerkleLog, signed_json
from .audit.feed import audit_item
from .config import Settings
from .domain import Participant, Payment, PersonalDetails, Study, apply_events, derived_id
from .domain.base import personal_fields, topic
from .domain.consent import CONSENTED, use_standing
from .domain.errors import (
    ConcurrentUpdate,
    IdempotencyKeyUsed,
    InvalidInput,
    LedgerError,
    LinkNotFound,
    NotErased,
    ParticipantNotFound,
    PaymentNotFound,
    StudyNotFound,
    ViewsBehind,
)
from .domain.money import parse_pence
from .idempotency import IdempotencyStore, IdempotentRequest
from .privacy.keys import MASTER_KEY_FILE, SIGNING_KEY_FILE, MasterKey, ensure_signing_key
from .privacy.keystore import DataKeyStore
from .privacy.links import LinkRef, LinkStore
from .privacy.mapper import PersonalDataMapper, SealedAsBase64
from .privacy.tokens import TokenStore
from .projections.follower import Follower
from .projections.projector import Projector
from .receipts import consent_receipt, my_consents_view
from .store import Sql, UnreadableEvent, VersionProbe, decoded, eventsourcing_env, schema_lock
from .views import (
    arrangement_view,
    consent_view,
    need_view,
    participant_view,
    payment_view,
    study_view,
)

T = TypeVar("T")
A = TypeVar("A", bound=Aggregate)
MAX_ATTEMPTS = 20
LOCK_STRIPES = 64
CACHE_SIZE = 1000
log = logging.getLogger("ledger")
VIEW_WAIT_S = 5.0
SCRUB_RETRY_S = 30.0  # how often a pending scrub of erased keys is retried (and looked for)
CHECKPOINT_EVERY_S = 2.0  # while writes go on, a signed checkpoint at least this often
REFERENCE_ALPHABET = "23456789ABCDEFGHJKMNPQRSTVWXYZ"  # no 0/O, 1/I/L, U: easy to read aloud


@dataclass(frozen=True)
class Also(Generic[T]):
    """A command's result, plus other aggregates to save atomically with the participant."""

    result: T
    aggregates: tuple[Aggregate, ...]


class _Collected(ProcessingEvent[UUID]):
    """The library's ProcessingEvent, except that this package's aggregates are recognised by
    their class: its check against runtime Protocols walked their attributes on every save (a
    fifth of a payment's save, measured)."""

    def collect_events(self, *objs: Any, **kwargs: Any) -> None:
        others = []
        for obj in objs:
            if isinstance(obj, Aggregate):
                self.events.extend(obj.collect_events())
                self.aggregates[obj.id] = obj
            else:
                others.append(obj)
        super().collect_events(*others, **kwargs)


class CopyingReader(Repository[UUID]):  # type: ignore[misc]
    """eventsourcing's Repository with a lock per aggregate (striped) held across the
    fast-forward of the cached aggregate *and* the copy it returns. The library copies after
    releasing its fast-forward lock, so another thread could fast-forward the same cached object
    while it was being copied ("dictionary changed size during iteration", once in CI, reading
    the study while forms were registered)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._stripes = [threading.Lock() for _ in range(LOCK_STRIPES)]

    def get(self, aggregate_id: UUID, **kwargs: Any) -> Any:
        with self._stripes[aggregate_id.int % LOCK_STRIPES]:
            return super().get(aggregate_id, **kwargs)


class ConfigurationError(Exception):
    """The data directory and the database do not belong together."""


def utcnow() -> datetime:
    """The current time, timezone-aware UTC."""
    return datetime.now(UTC)


class Ledger(Application[UUID]):
    """The consent and remuneration ledger."""

    name = "Ledger"

    def __init__(
        self, env: Mapping[str, str] | None = None, *, clock: Callable[[], datetime] = utcnow,
        study_slug: str = pilot.SLUG, shred_kept: bool = True,
    ) -> None:
        self.settings = Settings.from_env(env or {})
        # Whether erasures reach the databases a restore kept (not while a restore has yet to
        # verify the copy it put in place: an altered copy must not change the one it replaced).
        self.shred_kept = shred_kept
        # What another process needs to open this same ledger (a rebuild's workers).
        self.ledger_env = {k: v for k, v in (env or {}).items() if k.startswith("LEDGER_")}
        self.master_key = MasterKey.load_or_create(self.settings.data_dir)
        signing_key, made_signing_key = ensure_signing_key(self.settings.data_dir)
        self.clock = clock
        self.study_id = derived_id("study", study_slug)
        es_env = eventsourcing_env(self.settings, self.master_key.at_rest_cipher_key())
        with schema_lock(es_env, self.settings):  # workers starting together must not race to create tables
            super().__init__(es_env)
            self.sql = Sql(self.factory.datastore)  # type: ignore[attr-defined]
            try:
                self._check_master_key()
            except ConfigurationError:
                # The database was set up with another master key. The keys this start made,
                # taking the directory for a new ledger's, must not stay beside it: with the
                # backed-up master.key put back, a new signing.key left here would sign the
                # next checkpoint, and `ledger verify` would fail for good.
                if made_signing_key:
                    signing_key.unlink(missing_ok=True)
                if self.master_key.made:
                    (self.settings.data_dir / MASTER_KEY_FILE).unlink(missing_ok=True)
                raise
            self.keys = DataKeyStore(self.sql, self.master_key.wrapping_key())
            self.tokens = TokenStore(self.sql, self.master_key.derive("api-token-hmac/v1"))
            self.links = LinkStore(self.sql, self.master_key.derive("withdrawal-link/v1"))
            self.idempotency = IdempotencyStore(
                self.sql, self.master_key.derive("idempotency/v1"), self.keys)
            self.projector = Projector(self)
            self.merkle = MerkleLog(self.sql, self.recorder, signing_key, clock)
            if made_signing_key and not self.merkle.signed_with_this_key():
                # The key was just made, but checkpoints signed with the one that went missing
                # are in the database: every one would look forged. (Checkpoints another
                # process, starting at the same moment, signed with the new key are fine: the
                # key is only removed if the latest checkpoint does not hold under it.)
                signing_key.unlink(missing_ok=True)
                raise ConfigurationError(
                    f"{SIGNING_KEY_FILE} is missing from the data directory, but the database "
                    "holds checkpoints signed with it: put the backed-up key back")
        assert isinstance(self.mapper, PersonalDataMapper)
        self.mapper.keys = self.keys
        # Commands read the study but never change it: they share one copy, replaced (never
        # changed in place) when the version probe shows the stored study has moved on.
        self._study_cache: Study | None = None
        self._probe = VersionProbe(
            self.factory.datastore,  # type: ignore[attr-defined]
            self.recorder.events_table_name,  # type: ignore[attr-defined]
            str(self.settings.sqlite_path),
        )
        # Commands use self.repository, whose cache is neither fast-forwarded nor copied:
        # - a decision taken on a stale copy can never be saved (its event collides on version),
        #   and _change() then evicts and retries;
        # - commands on one aggregate take its lock, and any failure evicts the cached object,
        #   so no half-applied command is ever seen by the next one.
        # Queries and checks on other aggregates read fresh (and copied) through this one.
        self._locks = [threading.Lock() for _ in range(LOCK_STRIPES)]
        self._reader = CopyingReader(
            event_store=self.events, cache_maxsize=CACHE_SIZE, fastforward=True
        )
        self._scrub_next, self._scrub_pending = time.monotonic() + SCRUB_RETRY_S, False
        self._scrub_marked = 0  # counts the times an erasure found a scrub left pending
        self._keys_left = False  # an erasure here could not destroy a key (a fault): look soon
        self._pending_lock = threading.Lock()  # for _keys_left and _scrub_next
        try:
            self.finish_erasures()  # complete any erasure a crash interrupted
        except Exception as error:  # noqa: BLE001 - logged; retried at the next start
            # Opened all the same, so that `ledger verify` can say what was changed (an erased
            # person's record altered in the database); retried at the next start and after the
            # next erasure. Logged by kind only: the library's messages can quote stored values,
            # ours name only a position.
            log.warning("could not finish interrupted erasures (%s)", error
                        if isinstance(error, UnreadableEvent) else type(error).__name__)
        self.projector.recover()  # put back the views a killed rebuild set aside
        self._saved = threading.local()
        self._wrote_in = 0  # the process that saved through this ledger (0: none yet)
        self._follower = Follower(self.projector.catch_up, self.checkpoint_if_due,
                                  self.retry_scrub)
        if self.settings.projections == "inline":
            self.projector.catch_up()  # what a crash left behind, or a first build

    def close(self) -> None:
        """Stop following the log, and finish what the follower had still to do for this
        process's saves: the views, the Merkle leaves and a signed checkpoint of the whole log
        (else a command such as `ledger demo` would exit leaving its last events unhashed and
        unsigned, for the next process to hash as it then found them). Then close connections.
        """
        self._follower.stop()
        # (the library's __del__ closes again: only the first close finishes anything)
        wrote, self._wrote_in = getattr(self, "_wrote_in", 0) == os.getpid(), 0
        if wrote and self.settings.projections == "inline":
            try:
                self.projector.catch_up()
            except Exception as error:  # noqa: BLE001 - the next catch-up does it
                log.warning("could not catch the views up on closing (%s)",
                            type(error).__name__)
        if wrote:
            try:
                self.merkle.checkpoint()
            except Exception as error:  # noqa: BLE001 - the next writer's follower does it
                log.warning("could not sign a checkpoint on closing (%s)", type(error).__name__)
        self._probe.close()
        self.sql.close()
        super().close()

    # -- wiring ------------------------------------------------------------------------------

    def construct_env(self, name: str, env: EnvType | None = None) -> Environment:
        """Only the environment built from Settings: the process environment is not consulted."""
        return Environment(name, dict(env or {}))

    def construct_factory(self, env: Environment) -> InfrastructureFactory:
        """The factory named by the environment (our durable SQLite one, or PostgreSQL)."""
        return InfrastructureFactory.construct(env)

    def construct_mapper(self) -> PersonalDataMapper:
        """The mapper that seals personal fields per participant."""
        return self.factory.mapper(
            transcoder=self.construct_transcoder(), mapper_class=PersonalDataMapper
        )  # type: ignore[return-value]

    def register_transcodings(self, transcoder: JSONTranscoder) -> None:
        """The library's transcodings plus sealed personal fields."""
        super().register_transcodings(transcoder)
        transcoder.register(SealedAsBase64())

    def _check_master_key(self) -> None:
        self.sql.execute(
            "CREATE TABLE IF NOT EXISTS {t}ledger_meta (name TEXT PRIMARY KEY, value TEXT NOT NULL)"
        )
        with self.sql.transaction() as c:
            c.execute("SELECT value FROM {t}ledger_meta WHERE name = %s", ("master_key_id",))
            row = c.fetchone()
            if row is None:
                c.execute(
                    "INSERT INTO {t}ledger_meta (name, value) VALUES (%s, %s)",
                    ("master_key_id", self.master_key.key_id),
                )
            elif row["value"] != self.master_key.key_id and self.master_key.made:
                raise ConfigurationError(
                    f"LEDGER_DATA_DIR holds no {MASTER_KEY_FILE}, but this database was set up "
                    f"with one: put the backed-up {MASTER_KEY_FILE} and {SIGNING_KEY_FILE} back "
                    "in LEDGER_DATA_DIR (no key was made in their place)")
            elif row["value"] != self.master_key.key_id:
                raise ConfigurationError(
                    "the master key in LEDGER_DATA_DIR does not match this database"
                )

    def claim_once(self, name: str) -> bool:
        """Record that a one-off action (like loading the demo) happened; False if it already had."""
        try:
            self.sql.execute(
                "INSERT INTO {t}ledger_meta (name, value) VALUES (%s, %s)",
                (name, self.clock().isoformat()),
            )
        except IntegrityError:
            return False
        return True

    def claimed(self, name: str) -> bool:
        """Whether a one-off action was recorded (``claim_once``)."""
        return bool(self.sql.query("SELECT 1 AS one FROM {t}ledger_meta WHERE name = %s",
                                   (name,)))

    def save(self, *objs: Any, **kwargs: Any) -> Any:
        """Save atomically; then (views kept inline) wake this process's view follower.

        The steps of ``Application.save``, collecting events with ``_Collected``."""
        processing_event = _Collected()
        processing_event.collect_events(*objs, **kwargs)
        recordings = self._record(processing_event)
        self._after_save(bool(recordings),
                         recordings[-1].notification.id if recordings else None,
                         processing_event, recordings)
        return recordings

    def _after_save(self, wrote: bool, position: int | None,
                    processing_event: _Collected | None = None,
                    recordings: list[Any] | None = None) -> None:
        """What follows a save the store kept: ``position`` is its last event's, or one after
        it (None: not known just now). Nothing here raises: the events are stored, and the
        caller would be told the save failed (a 500) and retry it, recording it twice."""
        if position is not None:
            self._saved.position = position  # read-your-writes
        if wrote:
            self._wrote_in = os.getpid()  # this process saved: it signs on closing
        try:
            if processing_event is not None:
                self._forget_plaintext(processing_event.events)
                self._take_snapshots(processing_event)
                self._notify(recordings or [])
            if self.settings.projections == "inline":
                self._follower.wake()
        except Exception as error:  # noqa: BLE001 - logged by type; the save stands
            # (e.g. no thread could be started for the follower: the next save wakes it again,
            # and reads wait for the views meanwhile, or answer 503)
            log.error("after a save: %s", type(error).__name__)

    def last_saved_position(self) -> int | None:
        """The notification id of this thread's latest save (for read-your-writes)."""
        return getattr(self._saved, "position", None)

    def forget_saved_position(self) -> None:
        """Start a new request: nothing saved yet."""
        self._saved.position = None

    def checkpoint_if_due(self) -> float | None:
        """Hash new events into the Merkle log and, if the log grew and the latest signed
        checkpoint is at least ``CHECKPOINT_EVERY_S`` old, sign a new one. Returns the seconds
        until one will be due (the caller comes back then), or None if none is pending."""
        size, _ = self.merkle.catch_up()
        latest = self.merkle.latest()
        if latest is not None and latest["size"] >= size:
            return None
        if latest is not None:
            age = (self.clock() - datetime.fromisoformat(latest["time"])).total_seconds()
            if 0 <= age < CHECKPOINT_EVERY_S:
                return CHECKPOINT_EVERY_S - age
        self.merkle.checkpoint()
        return None

    def views_at_least(self, position: int | None = None) -> int:
        """Make the views include ``position`` and return their position. Inline, this process
        catches them up itself (to everything saved so far); external, it waits for ``ledger
        projections run`` (``ViewsBehind`` after ``VIEW_WAIT_S``), and with no ``position``
        takes the views as they stand (the staff list; the current report asks for the end of
        the log)."""
        if self.settings.projections == "inline":
            return self.projector.catch_up()
        deadline = time.monotonic() + VIEW_WAIT_S
        while True:
            current = self.projector.views.position()
            if position is None or current >= position:
                return current
            if time.monotonic() > deadline:
                raise ViewsBehind("the views have not caught up yet; try again shortly")
            time.sleep(0.05)

    # -- loading -----------------------------------------------------------------------------

    def _study(self, *, for_update: bool = False) -> Study:
        """The study: a private copy to change, or the shared, up-to-date one to read."""
        cached = self._study_cache
        if not for_update and cached is not None:
            if self._probe.latest(self.study_id) == cached.version:
                return cached
        repository = self.repository if for_update else self._reader  # the reader copies
        try:
            study: Study = repository.get(self.study_id)  # type: ignore[assignment]
        except AggregateNotFoundError:
            raise StudyNotFound("no study is set up; run `ledger init`") from None
        if not for_update:
            self._study_cache = study
        return study

    def _load(self, aggregate_id: UUID, kind: type[A], missing: LedgerError, *, fresh: bool) -> A:
        """An aggregate of ``kind``: a fresh copy to read, or the cached one a command may change.
        Anything else under that id (or nothing) raises ``missing``."""
        found: object = None
        try:
            found = (self._reader if fresh else self.repository).get(
                aggregate_id, projector_func=apply_events)
        except AggregateNotFoundError:
            pass
        if not isinstance(found, kind):
            raise missing
        return found

    def _participant(self, participant_id: UUID, *, fresh: bool = True) -> Participant:
        return self._load(participant_id, Participant,
                          ParticipantNotFound("no participant with this id"), fresh=fresh)

    def _payment(self, payment_id: UUID, *, fresh: bool = True) -> Payment:
        return self._load(payment_id, Payment,
                          PaymentNotFound("no such payment for this participant"), fresh=fresh)

    def _revealer(self, people: list[UUID] | None = None) -> Callable[[Any], Any]:
        """Opens sealed personal values for one view (see PersonalDataMapper.revealer)."""
        assert isinstance(self.mapper, PersonalDataMapper)
        return self.mapper.revealer(people)

    def _forget_plaintext(self, events: Iterable[Any]) -> None:
        """Drop from the cache each aggregate just saved with personal data it was given in
        plaintext (a name, a reason, a payment reference): the library caches the object the
        command changed, and that copy would hold the text in this process until evicted, even
        after the person's erasure elsewhere. Read back from the store, the fields stay sealed."""
        for event in events:
            spec = personal_fields(type(event))
            if spec is not None and any(getattr(event, f, None) is not None for f in spec.fields):
                self._evict(event.originator_id)

    def _evict(self, aggregate_id: UUID) -> None:
        if self.repository.cache is not None:
            try:
                self.repository.cache.get(aggregate_id, evict=True)
            except KeyError:
                pass

    @contextmanager
    def _exclusive(self, aggregate_id: UUID) -> Iterator[list[UUID]]:
        """Serialise commands on one aggregate in this process (striped locks); on any failure,
        forget the cached copies of it and of whatever else the command touched."""
        touched = [aggregate_id]
        with self._locks[aggregate_id.int % LOCK_STRIPES]:
            try:
                yield touched
            except BaseException:
                for aggregate in touched:
                    self._evict(aggregate)
                raise

    def _change(self, participant_id: UUID,
                command: Callable[[Participant, Study], T | Also[T]],
                once: IdempotentRequest | None = None) -> T:
        """Run a command on a participant and save it (with any other aggregate it returns in
        ``Also``) in one atomic save; on a lost race, reload and run it again.

        The domain decides again on fresh state, so a retried duplicate gets the domain's own
        error (e.g. already withdrawn) rather than a silent second write. A refusal, or a
        decision to change nothing, made on a cached copy is only reported once the copy is
        known to be current.

        With ``once`` (a request's Idempotency-Key), the rendered response is kept under its
        key in the same transaction; a key already kept makes the save clash, and this raises
        ``IdempotencyKeyUsed`` (the caller replays the kept response, or refuses the request).
        """
        for _ in range(MAX_ATTEMPTS):
            with self._exclusive(participant_id) as touched:
                participant = self._participant(participant_id, fresh=False)
                try:
                    outcome = command(participant, self._study())
                except LedgerError:
                    if self._probe.latest(participant_id) != participant.version:
                        self._evict(participant_id)  # decided on a stale copy: decide again
                        continue
                    raise
                result, others = ((outcome.result, outcome.aggregates)
                                  if isinstance(outcome, Also) else (outcome, ()))
                touched.extend(a.id for a in others)
                if (not participant.pending_events and not any(a.pending_events for a in others)
                        and self._probe.latest(participant_id) != participant.version):
                    # Nothing to save is an answer too ("already stopped", "never given"): on
                    # a stale copy it could be wrong, and no version clash would say so.
                    self._evict(participant_id)
                    continue
                extra = ({"idempotency": self.idempotency.row(once, result, participant_id)}
                         if once is not None else {})
                try:
                    # The others (a payment) first: the person's note of it then follows it
                    # in the log, so views caught up to any position between the two show
                    # what a replay to that position shows (never a payment not yet in the
                    # log, read back at a later version).
                    self.save(*others, participant, **extra)
                except IntegrityError:
                    for aggregate in touched:
                        self._evict(aggregate)
                    if once is not None and self.idempotency.lookup(once.token_id, once.key):
                        raise IdempotencyKeyUsed("this Idempotency-Key has been used") from None
                    continue
                return result
        raise ConcurrentUpdate("the record changed repeatedly while saving; try again")

    # -- study -------------------------------------------------------------------------------

    def init_study(self, *, by: str = "system") -> bool:
        """Create the pilot study and its first consent form; False if it already exists."""
        at = self.clock()
        try:
            self._study()
            return False
        except StudyNotFound:
            pass
        study = Study.define(
            slug=pilot.SLUG, name=pilot.NAME, controller=pilot.CONTROLLER,
            lawful_bases=pilot.LAWFUL_BASES, scopes=pilot.SCOPES, activities=pilot.ACTIVITIES,
            retention_days=pilot.RETENTION_DAYS, at=at, by=by,
        )
        study.register_form(pilot.FORM_VERSION, pilot.FORM_TEXT, at=at, by=by)
        try:
            self.save(study)
        except IntegrityError:
            return False  # another process created it at the same moment
        return True

    def _change_study(self, command: Callable[[Study], T]) -> T:
        for _ in range(MAX_ATTEMPTS):
            with self._exclusive(self.study_id):
                study = self._study(for_update=True)
                result = command(study)
                try:
                    self.save(study)
                except IntegrityError:
                    self._evict(self.study_id)
                    continue
                return result
        raise ConcurrentUpdate("the study changed repeatedly while saving; try again")

    def register_form(self, version: str, text: str, *, by: str) -> str:
        """Register a new consent form version; returns its SHA-256."""
        return self._change_study(
            lambda s: s.register_form(version, text, at=self.clock(), by=by).sha256)

    def set_withdrawal_deadline(self, scope: str, deadline: datetime | None, *, by: str) -> None:
        """Set or clear a scope's withdrawal deadline."""
        self._change_study(
            lambda s: s.set_withdrawal_deadline(scope, deadline, at=self.clock(), by=by))

    def set_finance_retention(self, days: int, *, by: str) -> None:
        """Keep the payee's identity with payment records this many days (erasure waits)."""
        self._change_study(lambda s: s.set_finance_retention(days, at=self.clock(), by=by))

    def set_rate(self, activity: str, amount: object, *, by: str) -> None:
        """Change an activity's standard rate."""
        pence = parse_pence(amount, field="rate")
        self._change_study(lambda s: s.set_rate(activity, pence, at=self.clock(), by=by))

    def study(self) -> dict[str, Any]:
        """The study as a plain dict."""
        return study_view(self._study())

    def last_known_contact(self) -> tuple[str, str]:
        """The study's name and contact email without asking the store (for a page that must
        render while it is down): as last read, else the pilot study's own."""
        cached = self._study_cache
        if cached is not None:
            view = study_view(cached)
            return view["name"], view["controller"].get("email", "")
        from . import pilot

        return pilot.NAME, pilot.CONTROLLER["email"]

    # -- participants ------------------------------------------------------------------------

    def register_participant(
        self, name: object, email: object = None, phone: object = None,
        communities: object = None, preferred_contact: object = None, *, by: str,
        idempotent: IdempotentRequest | None = None,
    ) -> dict[str, Any]:
        """Register a person; returns their random ``id`` and short ``reference``. With
        ``idempotent``, the response is kept under its key in the registration's transaction,
        and a key already kept raises ``IdempotencyKeyUsed`` (nothing is registered)."""
        details = PersonalDetails.check(name, email, phone, communities, preferred_contact)
        study = self._study()
        participant_id = uuid4()
        reference = "ST-" + "".join(secrets.choice(REFERENCE_ALPHABET) for _ in range(8))
        participant = Participant.register(
            id=participant_id, study_id=study.id, reference=reference, details=details,
            at=self.clock(), by=by,
        )
        self.keys.create(participant_id)
        result = {"id": participant_id, "reference": reference}
        extra = ({"idempotency": self.idempotency.row(idempotent, result, participant_id)}
                 if idempotent is not None else {})
        try:
            self.save(participant, **extra)
        except BaseException as error:
            # The key goes only if the registration is known not to be stored: a COMMIT can
            # succeed and its reply be lost (a PostgreSQL connection dropped after the server
            # committed), and a stored registration without its key could never be read, or
            # have anything recorded again, nor be erased.
            stored = self._stored(participant_id)
            if stored is False:
                self.keys.discard(participant_id)  # it never sealed anything that was kept
                if (idempotent is not None and isinstance(error, IntegrityError)
                        and self.idempotency.lookup(idempotent.token_id, idempotent.key)):
                    raise IdempotencyKeyUsed("this Idempotency-Key has been used") from None
            if not stored or not isinstance(error, Exception):
                raise  # (unknown: the key is kept; a key with no registration is harmless)
            log.warning("registration: stored, though the store reported %s; answered as "
                        "stored", type(error).__name__)
            self._after_save(True, self._end_of_log())  # (at or after the registration's)
        return result

    def _end_of_log(self) -> int | None:
        """The log's last position; None if the store cannot say just now."""
        try:
            return self.recorder.max_notification_id()
        except Exception:  # noqa: BLE001 - the caller goes on without it
            return None

    def _stored(self, aggregate_id: UUID) -> bool | None:
        """Whether ``aggregate_id`` has events in the store; None if the store cannot say.
        Asked twice: the first ask may meet a connection that died with the save's (the
        failure has the pool replace the dead ones, see ``LedgerPostgresDatastore``)."""
        for _ in range(2):
            try:
                return self._probe.latest(aggregate_id) is not None
            except Exception:  # noqa: BLE001 - unknown, which the caller treats as "maybe"
                continue
        return None

    def _notifications(self, *topics: str) -> Iterator[Any]:
        """Notifications of the given topics, in log order, read a page at a time."""
        start = 1
        while True:
            page = self.sql.read_page(self.recorder, start, 500, topics=topics)
            yield from page
            if len(page) < 500:
                return
            start = page[-1].id + 1

    def participant_ids(self) -> list[UUID]:
        """Every registered participant's id, in registration order (streamed from the log)."""
        return [n.originator_id for n in self._notifications(topic("Participant.Registered"))]

    def participants_page(self, *, limit: int, after: UUID | None,
                          min_position: int | None = None) -> dict[str, Any]:
        """A page of participants in registration order, after the id ``after``, read from the
        views (which include at least notification ``min_position``)."""
        if min_position is not None and min_position > (self.recorder.max_notification_id() or 0):
            # No write has answered with this position: waiting for it would never end.
            raise InvalidInput("min_position is beyond the end of the log; use the "
                               "Ledger-Position header of a write", field="min_position")
        self.views_at_least(min_position)
        views = self.projector.views
        after_seq = 0
        if after is not None:
            found = views.seq_of(str(after))
            if found is None:
                raise InvalidInput("after must be the id of a listed participant", field="after")
            after_seq = found
        rows = views.page(after_seq=after_seq, limit=limit + 1)
        reveal = self._revealer([UUID(row[0]) for row in rows[:limit]])
        items = [self.projector.read_doc(doc, reveal) for _, _, doc in rows[:limit]]
        return {"items": items, "next_after": UUID(rows[limit - 1][0]) if len(rows) > limit
                else None}

    def participant(self, participant_id: UUID) -> dict[str, Any]:
        """Everything about one participant, as a plain dict."""
        p = self._participant(participant_id)
        payments = [self._payment(pid) for pid in p.payment_ids()]
        return participant_view(p, payments, self._revealer())

    def subject_access(self, participant_id: UUID) -> dict[str, Any]:
        """Everything held about one person, for a subject access request: their view, consents
        as ISO/IEC TS 27560 records, and whether their personal link works (never the link)."""
        from .export import subject_access_export

        p = self._participant(participant_id)
        payments = [self._payment(pid) for pid in p.payment_ids()]
        link = None if p.link is None else {
            "issued_at": p.link.issued_at, "expires_at": p.link.expires_at,
            "revoked_at": p.link.revoked_at}
        return subject_access_export(participant_view(p, payments, self._revealer()),
                                     self.study(), link=link, now=self.clock())

    def erase(self, participant_id: UUID, reason: object, *, by: str,
              repeated: bool = False) -> dict[str, Any]:
        """Crypto-shred a participant: record the erasure, then destroy their data key.

        In that order, an interruption leaves a person marked erased (so nothing more is
        recorded and every view shows the marker) whose key ``finish_erasures`` then destroys;
        never a person whose data is gone but who is not marked erased.

        ``repeated``: an erasure already made, in a database a restore replaced, made again. The
        restored study's finance retention does not hold it back: the erasure was allowed when
        it was made, and a restore must not bring the person's data back (for years, were the
        backup's retention longer than the one in force when they were erased).
        """
        def command(p: Participant, s: Study) -> dict[str, Any]:
            now = self.clock()
            if not repeated:
                s.check_erasure([self._payment(pid) for pid in p.payment_ids()], now,
                                p.expenses)
            p.erase(reason, at=now, by=by)
            return {"id": p.id, "reference": p.reference, "erased": True,
                    "erased_at": p.erased_at}
        try:
            result = self._change(participant_id, command)
        finally:
            self._destroy_erased_keys(participant_id)
        try:
            receipt: dict[str, Any] | None = self.erasure_receipt(participant_id)
        except Exception as error:  # noqa: BLE001 - the erasure stands; the receipt is asked again
            # (it signs a checkpoint, a write, which a full disk refuses): a 500 here would tell
            # the admin the erasure failed, and their retry would be refused as already done.
            log.warning("erasure: recorded, but its receipt could not be issued now (%s)",
                        type(error).__name__)
            receipt = None
        return {**result, "receipt": receipt}

    def _destroy_erased_keys(self, participant_id: UUID) -> None:
        """``finish_erasures`` for this person. If the store fails now, the erasure stands: it
        is recorded, and every view shows the marker. The key is then destroyed when the views'
        follower looks for keys left behind (``retry_scrub``: a second later here, then every
        ``SCRUB_RETRY_S``; with the views kept externally, ``ledger projections run`` looks),
        or at the next start; meanwhile the receipt says it is not yet destroyed. (Before, the
        erasure was answered 500 and the key kept until the next start.)"""
        try:
            self.finish_erasures([participant_id])
        except Exception as error:  # noqa: BLE001 - logged by type; retried
            log.warning("erasure: a data key could not be destroyed yet (%s); retrying",
                        type(error).__name__)
            with self._pending_lock:
                self._keys_left = True
                self._scrub_next = min(self._scrub_next, time.monotonic() + 1.0)
            if self.settings.projections == "inline":
                self._follower.wake()

    def erasure_receipt(self, participant_id: UUID) -> dict[str, Any]:
        """A signed receipt that the person was erased: when and by whom, that their data key
        is gone, and proof that the erasure is in the log (the event's audit path to a signed
        checkpoint). Signed over its compact JSON (``signed_json``) with the checkpoints' key.
        Issued again on request, with the same facts, if the first was lost."""
        p = self._participant(participant_id)
        if p.erased_at is None:
            raise NotErased("this participant has not been erased")
        erased = next(n for n in self._notifications(topic("Participant.Erased"))
                      if n.originator_id == participant_id)
        cp = self.merkle.checkpoint()
        proof = self.merkle.inclusion(self.merkle.position_of(erased.id), cp["size"])
        body = {
            "receipt": "erasure", "participant_id": str(participant_id),
            "reference": p.reference, "erased_at": p.erased_at.isoformat(),
            "erased_by": getattr(self.mapper.to_domain_event(erased), "by"),  # noqa: B009
            "data_key_destroyed": not self.keys.exists(participant_id),
            "erased": "the person's data key was destroyed: their name, contact details, "
                      "communities, access-need details, and every note and reason recorded "
                      "about them can no longer be read from the ledger. Backups taken before "
                      "the erasure still hold the key until they are deleted under the "
                      "backup retention policy" + (
                          "; so do the PostgreSQL server's write-ahead log, its archive and "
                          "any replica's, until they are recycled or deleted under theirs"
                          if self.sql.is_postgres else ""),
            "kept": "the facts, without the person's identity: consent given and withdrawn "
                    "(scope, form version, when, and how it was given, e.g. online, in BSL or "
                    "through a supporter), access needs met or not, payment arrangements and "
                    "payments (amount, method, date), expenses (amount, method), and the "
                    "reference",
            "event": {"position": proof["position"], "notification_id": erased.id,
                      "leaf_hash": proof["leaf_hash"]},
            "audit_path": proof["audit_path"],
            "checkpoint": {k: cp[k] for k in ("size", "root", "time", "signature")},
            "issued_at": self.clock().isoformat(),
        }
        return {**body, "signature": self.merkle.sign(signed_json(body))}

    def finish_erasures(self, participant_ids: list[UUID] | None = None) -> int:
        """Destroy the data key of every erased participant that still has one (after an
        interrupted erasure), and retry a scrub of the database files that could not complete.
        Returns how many keys were destroyed. Runs at start-up and after every erasure."""
        if participant_ids is None:
            participant_ids = [n.originator_id for n in self._notifications(  # type: ignore[misc]
                topic("Participant.Erased"))]
        destroyed, erased = 0, []
        for pid in participant_ids:
            try:
                p = self._participant(pid)
            except ParticipantNotFound:  # (a restore's: erased after the backup was taken)
                continue
            if p.erased_at is not None:
                erased.append(pid)
                if self.keys.exists(pid):
                    self.idempotency.forget(pid)  # (first: if it fails, the key is left to retry)
                    self.keys.destroy(pid)
                    destroyed += 1
        if not self.keys.scrub_if_pending():  # a reader still holds the old bytes
            self._scrub_marked += 1
            self._scrub_pending = True
            with self._pending_lock:
                self._scrub_next = time.monotonic() + SCRUB_RETRY_S
            if hasattr(self, "_follower") and self.settings.projections == "inline":
                self._follower.wake()  # it comes back to retry (not yet at start-up)
        if self.shred_kept and not self.sql.is_postgres and erased:
            from .backup import shred_keys_in_kept

            for kept in shred_keys_in_kept(self.settings.sqlite_path, erased):
                log.warning("erasure: could not remove erased people's keys from %s, which a "
                            "restore kept; retried at the next start", kept.name)
        return destroyed

    def retry_scrub(self) -> float | None:
        """A job of the follower (and of ``ledger projections run``): every ``SCRUB_RETRY_S``,
        retry a scrub of erased keys left pending by a reader that held the old bytes (in this
        process or another), so it finishes without waiting for the next erasure or start; and
        destroy the keys of people the views show erased whose key is still there (an erasure
        the store refused to finish, in this process or another: with the views kept
        externally, the API's processes have no follower to retry their own).
        Returns when to come back while either is known to be pending."""
        now = time.monotonic()
        with self._pending_lock:
            due = now >= self._scrub_next
            if due:
                self._scrub_next = now + SCRUB_RETRY_S
                self._keys_left = False  # (an erasure failing from here on sets it again)
        if due:
            try:
                left = [pid for pid in self.projector.views.erased() if self.keys.exists(pid)]
                if left:  # (``finish_erasures`` checks each against the log first)
                    self.finish_erasures(left)
            except Exception as error:  # noqa: BLE001 - logged by type; retried
                log.warning("erasure: a data key could not be destroyed yet (%s); "
                            "retrying", type(error).__name__)
                with self._pending_lock:
                    self._keys_left = True
            marked = self._scrub_marked
            # One short try (not the erasure's two seconds): a TRUNCATE checkpoint waiting for
            # a reader holds up this database's writers meanwhile.
            done = self.keys.scrub_if_pending(patient=False)
            if marked == self._scrub_marked:  # no erasure left one pending meanwhile
                self._scrub_pending = not done
        waiting = self._scrub_pending or self._keys_left
        return self._scrub_next - now if waiting else None

    def repeat_erasures(self, participant_ids: list[UUID], *, by: str) -> tuple[int, list[str]]:
        """Erase again each of these people who is here and not erased (after a restore from a
        backup taken before their erasure). Returns how many were erased, and for any that
        could not be, their reference and why (no personal data)."""
        repeated, refused = 0, []
        for pid in dict.fromkeys(participant_ids):
            try:
                p = self._participant(pid)
            except ParticipantNotFound:
                continue  # registered after the backup was taken: not in it
            if p.erased_at is not None:
                continue
            try:
                self.erase(pid, "erased before a restore brought them back; repeated by "
                                "`ledger restore`", by=by, repeated=True)
                repeated += 1
            except LedgerError as error:
                refused.append(f"{p.reference} ({error})")
        return repeated, refused

    # -- the audit feed ------------------------------------------------------------------------

    def audit_events(self, *, after: int, limit: int) -> dict[str, Any]:
        """The log in order after notification ``after``: what happened, when, by whom. Personal
        fields are never opened here: they read as "[personal data]"."""
        page = self.sql.read_page(self.recorder, after + 1, limit)
        items = [audit_item(n.id, n.topic, decoded(self.mapper, n)) for n in page]
        return {"items": items, "next_after": page[-1].id if len(page) == limit else None}

    # -- the personal withdrawal link ---------------------------------------------------------

    def issue_withdrawal_link(self, participant_id: UUID, *, by: str) -> dict[str, Any]:
        """A new personal link (the old one stops working): ``{url, expires_at}``."""
        now = self.clock()
        link_id, expires_at = uuid4(), now + timedelta(days=self.settings.link_days)
        self._participant(participant_id).check_not_erased()
        token = self.links.create(participant_id, link_id, expires_at)
        self._change(participant_id, lambda p, s: p.issue_withdrawal_link(
            link_id, expires_at, at=self.clock(), by=by))
        return {"url": f"{self.settings.base_url}/my/{token}", "expires_at": expires_at}

    def revoke_withdrawal_link(self, participant_id: UUID, *, by: str) -> dict[str, Any]:
        """Stop the participant's current link."""
        def command(p: Participant, s: Study) -> dict[str, Any]:
            p.revoke_withdrawal_link(at=self.clock(), by=by)
            return {"revoked": True}
        return self._change(participant_id, command)

    def open_link(self, token: str) -> tuple[LinkRef, dict[str, Any]]:
        """What a personal link shows: the person's consents in the study's words."""
        ref = self.links.find(token)
        if ref is None:
            raise LinkNotFound("no such link")
        p = self._participant(ref.participant_id)
        p.check_link(ref.link_id, self.clock())
        view = my_consents_view(p, self._study(), self.clock())
        view["link_expires_at"] = p.link.expires_at if p.link is not None else None
        return ref, view

    def withdraw_by_link(self, token: str, scopes: list[str]) -> dict[str, list[str]]:
        """Withdraw the given scopes for the link's owner, all in one save; scopes already
        withdrawn are reported, not withdrawn again."""
        ref = self.links.find(token)
        if ref is None:
            raise LinkNotFound("no such link")
        by = f"participant:link:{ref.link_id.hex[:12]}"

        def command(p: Participant, s: Study) -> dict[str, list[str]]:
            return p.withdraw_through_link(ref.link_id, [s.scope(name) for name in scopes],
                                           at=self.clock(), by=by)
        return self._change(ref.participant_id, command)

    def consent_receipt(self, token: str) -> dict[str, Any]:
        """The person's consents as a machine-readable receipt: Kantara consent receipt fields,
        and ``consent_records`` in ISO/IEC TS 27560 shape (the same records as the subject
        access export, without the person's own words for a withdrawal)."""
        ref = self.links.find(token)
        if ref is None:
            raise LinkNotFound("no such link")
        from .export import consent_records

        p = self._participant(ref.participant_id)
        p.check_link(ref.link_id, self.clock())
        study = self._study()
        view = participant_view(p, [self._payment(pid) for pid in p.payment_ids()],
                                self._revealer())
        return {**consent_receipt(p, study, issued_at=self.clock()),
                "consent_records": consent_records(view, study_view(study), for_receipt=True)}

    # -- consent -----------------------------------------------------------------------------

    def request_consent(self, participant_id: UUID, scope: str, form_version: str, *,
                        by: str) -> None:
        """Record that consent for a scope was asked for."""
        self._change(participant_id, lambda p, s: p.request_consent(
            s.scope(scope), s.form(form_version), at=self.clock(), by=by))

    def grant_consent(
        self, participant_id: UUID, scope: str, form_version: str, method: object,
        attribution: object = None, *, by: str, idempotent: IdempotentRequest | None = None,
    ) -> dict[str, Any]:
        """Record consent given for a scope; returns where that scope now stands."""
        def command(p: Participant, s: Study) -> dict[str, Any]:
            p.grant_consent(s.scope(scope), s.form(form_version), method, attribution,
                            at=self.clock(), by=by)
            return consent_view(p.consent(scope), self._revealer())
        return self._change(participant_id, command, idempotent)

    def refuse_consent(self, participant_id: UUID, scope: str, *, by: str) -> None:
        """Record that a requested consent was refused."""
        self._change(participant_id, lambda p, s: p.refuse_consent(
            s.scope(scope), at=self.clock(), by=by))

    def expire_consent(self, participant_id: UUID, scope: str, *, by: str) -> None:
        """Record that a consent lapsed."""
        self._change(participant_id, lambda p, s: p.expire_consent(
            s.scope(scope), at=self.clock(), by=by))

    def withdraw_consent(
        self, participant_id: UUID, scope: str, channel: object, reason: object = None, *,
        by: str, idempotent: IdempotentRequest | None = None,
    ) -> dict[str, Any]:
        """Withdraw consent for a scope; returns whether it was late and the obligations opened."""
        def command(p: Participant, s: Study) -> dict[str, Any]:
            sc = s.scope(scope)
            obligations = p.withdraw_consent(sc, channel, reason, at=self.clock(), by=by)
            return {
                "scope": sc.name,
                "past_deadline": p.consents[sc.name].history[-1]["past_deadline"],
                "obligations": [{"id": o.id, "kind": o.kind} for o in obligations],
            }
        return self._change(participant_id, command, idempotent)

    def discharge_obligation(self, participant_id: UUID, obligation_id: UUID,
                             note: object = None, *, by: str,
                             idempotent: IdempotentRequest | None = None) -> dict[str, Any]:
        """Mark a follow-up obligation done."""
        def command(p: Participant, s: Study) -> dict[str, Any]:
            p.discharge_obligation(obligation_id, note, at=self.clock(), by=by)
            o = p.obligations[obligation_id]
            return {"id": o.id, "scope": o.scope, "kind": o.kind, "opened_at": o.opened_at,
                    "done_at": o.done_at}
        return self._change(participant_id, command, idempotent)

    def record_use(self, participant_id: UUID, scope: str, purpose: object,
                   attribution: object = None, *, by: str,
                   idempotent: IdempotentRequest | None = None) -> dict[str, Any]:
        """Record a use of the person's story under ``scope`` (naming them or not, for a scope
        that quotes them); never refused for want of consent (it is a fact), but the answer
        and the reports say whether the consent it needed was given."""
        def command(p: Participant, s: Study) -> dict[str, Any]:
            u = p.record_use(s.scope(scope), purpose, attribution, at=self.clock(), by=by)
            return {"scope": scope, "consent_state": u["consent_state"], "at": u["at"],
                    "attribution": u["attribution"],
                    "consented_attribution": u["consented_attribution"],
                    "without_consent": use_standing(
                        u["consent_state"], u["attribution"],
                        u["consented_attribution"]) != CONSENTED}
        return self._change(participant_id, command, idempotent)

    # -- access needs ------------------------------------------------------------------------

    def request_access_need(self, participant_id: UUID, category: object, detail: object, *,
                            by: str, idempotent: IdempotentRequest | None = None) -> UUID:
        """Record an access need; returns its ``need_id``."""
        need_id = uuid4()

        def command(p: Participant, s: Study) -> UUID:
            p.request_access_need(need_id, category, detail, at=self.clock(), by=by)
            return need_id
        return self._change(participant_id, command, idempotent)

    def record_access_outcome(self, participant_id: UUID, need_id: UUID, outcome: object,
                              note: object = None, *, by: str,
                              idempotent: IdempotentRequest | None = None) -> dict[str, Any]:
        """Record whether an access need was met; returns the need."""
        def command(p: Participant, s: Study) -> dict[str, Any]:
            p.record_access_outcome(need_id, outcome, note, at=self.clock(), by=by)
            return need_view(p.needs[need_id], self._revealer())
        return self._change(participant_id, command, idempotent)

    # -- remuneration ------------------------------------------------------------------------

    def arrange_payment(self, participant_id: UUID, activity: str, method: object, payee: object,
                        benefits_advice_offered: object, *, by: str,
                        idempotent: IdempotentRequest | None = None) -> dict[str, Any]:
        """Record the payment method and payee agreed with the person."""
        def command(p: Participant, s: Study) -> dict[str, Any]:
            a = s.activity(activity)
            p.arrange_payment(a, method, payee, benefits_advice_offered, at=self.clock(), by=by)
            return arrangement_view(p.arrangement(a.name), self._revealer())
        return self._change(participant_id, command, idempotent)

    def decline_payment(self, participant_id: UUID, activity: str, reason: object = None, *,
                        by: str, idempotent: IdempotentRequest | None = None) -> dict[str, Any]:
        """Record that the person declined payment for an activity."""
        def command(p: Participant, s: Study) -> dict[str, Any]:
            a = s.activity(activity)
            p.decline_payment(a, reason, at=self.clock(), by=by)
            return arrangement_view(p.arrangement(a.name), self._revealer())
        return self._change(participant_id, command, idempotent)

    def reduce_payment(self, participant_id: UUID, activity: str, amount: object,
                       reason: object, *, by: str,
                       idempotent: IdempotentRequest | None = None) -> dict[str, Any]:
        """Record that the person asked to be paid less than the rate."""
        pence = parse_pence(amount)

        def command(p: Participant, s: Study) -> dict[str, Any]:
            a = s.activity(activity)
            p.reduce_payment(a, pence, reason, at=self.clock(), by=by)
            return arrangement_view(p.arrangement(a.name), self._revealer())
        return self._change(participant_id, command, idempotent)

    def record_expense(self, participant_id: UUID, activity: str, amount: object, method: object,
                       description: object, *, by: str,
                       idempotent: IdempotentRequest | None = None) -> UUID:
        """Record an expense line, separate from the fee; returns its id."""
        pence, expense_id = parse_pence(amount), uuid4()

        def command(p: Participant, s: Study) -> UUID:
            p.record_expense(expense_id, s.activity(activity), pence, method, description,
                             at=self.clock(), by=by)
            return expense_id
        return self._change(participant_id, command, idempotent)

    def record_payment(
        self, participant_id: UUID, activity: str, amount: object, method: object, *,
        currency: object = "GBP", reference: object = None, reason: object = None, by: str,
        idempotent: IdempotentRequest | None = None,
    ) -> dict[str, Any]:
        """Record a payment; at most one per participant and activity unless reversed.

        With ``idempotent``, the rendered response is kept under its key in the same
        transaction as the payment.

        The Payment is saved with a note on the participant in one atomic save: decline, reduce
        and erase are decided against that note, and the Payment's id is derived from
        (participant, activity, slot) so the store's primary key admits one payment per slot
        whatever happens above it. A writer that loses a race gets ``PaymentAlreadyRecorded``.
        """
        pence = parse_pence(amount)

        def command(p: Participant, s: Study) -> Also[dict[str, Any]]:
            payment = p.pay(s.activity(activity), pence, currency, method, reference, reason,
                            at=self.clock(), by=by)
            view = payment_view(payment, erased=False, reveal=self._revealer())
            return Also(view, (payment,))
        return self._change(participant_id, command, idempotent)

    def reverse_payment(self, participant_id: UUID, payment_id: UUID, reason: object, *,
                        by: str, idempotent: IdempotentRequest | None = None) -> dict[str, Any]:
        """Reverse a payment, with a reason."""
        def command(p: Participant, s: Study) -> Also[dict[str, Any]]:
            payment = self._payment(payment_id, fresh=False)
            p.reverse_payment(payment, reason, at=self.clock(), by=by)
            view = payment_view(payment, erased=False, reveal=self._revealer())
            return Also(view, (payment,))
        return self._change(participant_id, command, idempotent)
