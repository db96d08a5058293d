"""The idempotency row is written in the same transaction as the payment, on both stores."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from uuid import UUID, uuid4

import pytest
from eventsourcing.persistence import IntegrityError as PersistenceIntegrityError
from eventsourcing.persistence import StoredEvent

from ledger.application import Ledger
from ledger.domain.errors import IdempotencyKeyUsed, PaymentAlreadyRecorded
from ledger.idempotency import KEEP, PURGE, IdempotentRequest
from tests.conftest import PG_URL


def _request(key: str) -> IdempotentRequest:
    return IdempotentRequest(token_id="tok", key=key, request_hash="h", status=201,
                             render=lambda result: f"paid {result['amount']}".encode())


def test_a_payment_and_its_key_are_written_together(ledger):
    pid = ledger.register_participant("Idem Store", by="t")["id"]
    once = _request("k1")

    ledger.record_payment(pid, "conversation", "25.00", "cash", by="t", idempotent=once)

    kept = ledger.idempotency.lookup("tok", "k1")
    assert kept is not None and kept.status == 201 and once.body == b"paid 25.00"
    assert b"paid" not in kept.body  # sealed with the person's data key
    assert ledger.idempotency.opened(kept, "tok", "k1") == b"paid 25.00"


def test_when_the_payment_is_refused_its_key_is_not_written(ledger):
    pid = ledger.register_participant("Idem Refused", by="t")["id"]
    ledger.record_payment(pid, "conversation", "25.00", "cash", by="t")

    with pytest.raises(PaymentAlreadyRecorded):
        ledger.record_payment(pid, "conversation", "25.00", "cash", by="t",
                              idempotent=_request("k2"))

    assert ledger.idempotency.lookup("tok", "k2") is None


def test_a_key_already_kept_makes_the_whole_save_fail_and_write_nothing(ledger):
    pid = ledger.register_participant("Idem Clash", by="t")["id"]
    other = ledger.register_participant("Idem Clash 2", by="t")["id"]
    ledger.record_payment(pid, "conversation", "25.00", "cash", by="t",
                          idempotent=_request("same"))
    before = ledger.recorder.max_notification_id()

    with pytest.raises(IdempotencyKeyUsed):
        # The same key reused for another payment: the events' transaction must roll back.
        ledger.record_payment(other, "conversation", "25.00", "cash", by="t",
                              idempotent=_request("same"))

    assert ledger.recorder.max_notification_id() == before
    assert ledger.participant(other)["payments"] == []


def test_keys_kept_longer_than_48_hours_are_forgotten_and_newer_ones_kept(ledger):
    # Literal ages, not the module's KEEP: the issue asks for at least 24 hours, the README
    # promises 48, and a shorter KEEP must fail here.
    ages = {"old": timedelta(hours=48, minutes=1), "almost": timedelta(hours=47, minutes=59),
            "day": timedelta(hours=25), "new": timedelta(0)}
    for key, age in ages.items():
        pid = ledger.register_participant(f"Idem {key}", by="t")["id"]
        ledger.record_payment(pid, "conversation", "25.00", "cash", by="t",
                              idempotent=_request(key))
        ledger.sql.execute("UPDATE {t}ledger_idempotency SET created_at = %s "
                           "WHERE idem_key = %s", ((datetime.now(UTC) - age).isoformat(), key))

    ledger.idempotency.purge()

    assert ledger.idempotency.lookup("tok", "old") is None
    for key in ("almost", "day", "new"):
        assert ledger.idempotency.lookup("tok", key) is not None, key


def test_the_purge_finds_old_keys_by_index_not_by_reading_every_key(ledger):
    cutoff = ((datetime.now(UTC) - KEEP).isoformat(),)
    with ledger.sql.transaction() as c:
        if ledger.sql.is_postgres:  # a small table: ask for the plan a large one would get
            c.execute("SET LOCAL enable_seqscan = off")
            c.execute("EXPLAIN " + PURGE, cutoff)
        else:
            c.execute("EXPLAIN QUERY PLAN " + PURGE, cutoff)
        plan = " ".join(str(value) for row in c.fetchall() for value in dict(row).values())

    assert "ledger_idempotency_created" in plan, plan


def test_a_retry_s_clash_on_its_kept_key_is_reported_as_a_clash_at_once(ledger, monkeypatch):
    """A keyed write sent again (an expense: nothing in the domain refuses a second one) makes
    the save clash only on the kept key. On PostgreSQL that clash surfaced mostly as the
    library's "pipeline aborted", taken for a lost connection: each replay slept and tried
    again, up to ten times, then a 500. Each try must see the clash itself, at once."""
    from ledger import store

    pid = ledger.register_participant("Idem Replay", by="t")["id"]

    def expense() -> object:
        return ledger.record_expense(pid, "workshop", "7.40", "cash", "bus", by="t",
                                     idempotent=IdempotentRequest(
                                         token_id="tok", key="again", request_hash="h",
                                         status=201, render=lambda result: str(result).encode()))

    expense()
    failures: list[str] = []
    if ledger.sql.is_postgres:
        real = store.PG_INSERT

        def watched(recorder: object, events: object, **kwargs: object) -> object:
            try:
                return real(recorder, events, **kwargs)
            except Exception as error:
                failures.append(type(error.__cause__).__name__)
                raise

        monkeypatch.setattr(store, "PG_INSERT", watched)
    before = ledger.recorder.max_notification_id()

    for _ in range(20):
        with pytest.raises(IdempotencyKeyUsed):
            expense()

    assert ledger.recorder.max_notification_id() == before
    if ledger.sql.is_postgres:
        assert failures == ["UniqueViolation"] * 20


def _pg_ledger(pg_schema: str, tmp_path: object) -> Ledger:
    return Ledger({"LEDGER_DATA_DIR": str(tmp_path), "LEDGER_PROJECTIONS": "external",
                   "LEDGER_DATABASE_URL": f"{PG_URL.split('?')[0]}?schema={pg_schema}"})


def _event(originator: UUID, state: bytes) -> StoredEvent:
    return StoredEvent(originator, 1, "ledger:Test.Event", state)


def _row(key: str) -> tuple[object, ...]:
    return ("tok", key, "h", 201, b"kept", datetime.now(UTC).isoformat())


@pytest.mark.postgres
@pytest.mark.parametrize("clash", ["events, with a key", "the first of two keys"])
def test_a_clash_in_a_save_with_keys_is_read_as_itself_on_postgresql(pg_schema, tmp_path, clash):
    """In the library's pipeline, an error psycopg reads while later statements are still being
    sent is lost, and raised as "pipeline aborted": an events clash followed by the key's own
    INSERT was (31 of 50), and a clash on a batch's first key followed by the next (3 of 50).
    With the keys in the events' statement, each try sees the unique-key violation itself."""
    from ledger import store

    lg = _pg_ledger(pg_schema, tmp_path)
    taken = uuid4()
    try:
        store.PG_INSERT(lg.recorder, [_event(taken, b"first")], idempotency=_row("kept"))
        causes = []
        for i in range(30):
            if clash == "events, with a key":
                events, rows = [_event(taken, b"again")], [_row(f"new-{i}")]
            else:
                events, rows = [_event(uuid4(), b"a"), _event(uuid4(), b"b")], [
                    _row("kept"), _row(f"new-{i}")]
            with pytest.raises(PersistenceIntegrityError) as raised:
                store.PG_INSERT(lg.recorder, events, idempotency_rows=rows)
            causes.append(type(raised.value.__cause__).__name__)
        kept = lg.sql.query("SELECT COUNT(*) AS n FROM {t}ledger_idempotency")[0]["n"]
    finally:
        lg.close()

    assert causes == ["UniqueViolation"] * 30
    assert kept == 1


@pytest.mark.postgres
def test_a_try_the_library_reports_as_pipeline_aborted_is_tried_again_at_once(pg_schema,
                                                                             tmp_path,
                                                                             monkeypatch):
    """"Pipeline aborted" means the server refused a statement and the COMMIT was never sent:
    nothing was committed. So the try is made again at once, without the pause and the check
    for rows a lost connection needs (which, with a clash, cost 0.2 s a try, and a 500 after
    ten)."""
    import psycopg
    from eventsourcing.persistence import OperationalError

    from ledger import store
    from ledger.group_commit import Save

    lg = _pg_ledger(pg_schema, tmp_path)
    taken, real, tries, asked = uuid4(), store.PG_INSERT, [], []

    def aborted_once(recorder: object, events: object, **kwargs: object) -> object:
        tries.append(1)
        if len(tries) == 1:
            raise OperationalError("pipeline aborted") from psycopg.errors.PipelineAborted()
        return real(recorder, events, **kwargs)

    def ids_if_stored(events: object) -> None:
        asked.append(events)

    try:
        real(lg.recorder, [_event(taken, b"theirs")])
        monkeypatch.setattr(store, "PG_INSERT", aborted_once)
        monkeypatch.setattr(lg.recorder, "_ids_if_stored", ids_if_stored)
        started = time.monotonic()
        with pytest.raises(PersistenceIntegrityError):
            lg.recorder._insert_alone(Save([_event(taken, b"ours")], {}))
        took = time.monotonic() - started
    finally:
        lg.close()

    assert len(tries) == 2 and asked == []
    assert took < 0.2  # (no pause: a lost connection's retry waits 0.2 s)
