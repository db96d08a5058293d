"""The event store on SQLite and PostgreSQL: durability settings, topics, keys, bad input."""

from __future__ import annotations

import json
import stat
from pathlib import Path
from uuid import UUID, uuid4

import pytest

from ledger.application import ConfigurationError, Ledger
from ledger.domain import is_redacted
from ledger.domain.errors import (
    ConsentNotGiven,
    InvalidAmount,
    LedgerError,
    ParticipantErased,
    UnknownActivity,
    UnknownScope,
    UnregisteredFormVersion,
    UnsupportedCurrency,
)


def _event_count(ledger: Ledger) -> int:
    return ledger.recorder.max_notification_id() or 0


def _key_count(ledger: Ledger) -> int:
    return ledger.sql.query("SELECT COUNT(*) AS n FROM {t}ledger_data_keys")[0]["n"]


def test_everything_recorded_is_read_back_by_a_new_process(ledger, store_env):
    pid = ledger.register_participant("Rowan Restart", by="t")["id"]
    ledger.grant_consent(pid, "record", "1.0", "online", by="t")
    ledger.record_payment(pid, "conversation", "25.00", "cash", by="t")

    again = Ledger(store_env)
    view = again.participant(pid)
    again.close()

    assert view["name"] == "Rowan Restart"
    assert view["consents"]["record"]["state"] == "given"
    assert [p["amount"] for p in view["payments"]] == ["25.00"]


def test_stored_topics_are_stable_names_not_module_paths(ledger):
    pid = ledger.register_participant("Topic Person", by="t")["id"]
    ledger.grant_consent(pid, "record", "1.0", "online", by="t")

    topics = {n.topic for n in ledger.recorder.select_notifications(start=1, limit=100)}

    assert topics and all(t.startswith("ledger:") for t in topics)
    assert "ledger:Participant.ConsentGranted" in topics


def test_event_state_is_encrypted_at_rest(ledger):
    ledger.register_participant("Cipher Person", by="t")

    for n in ledger.recorder.select_notifications(start=1, limit=100):
        with pytest.raises((UnicodeDecodeError, json.JSONDecodeError)):
            json.loads(n.state)


def test_a_changed_or_foreign_event_is_named_by_its_position_only(ledger):
    """``decoded`` is what every reader of the log (replays, past reports, the audit feed, the
    follower) uses: a stored event it cannot open is ``UnreadableEvent`` at its position."""
    from dataclasses import replace

    from ledger.store import UnreadableEvent, decoded

    pid = ledger.register_participant("Decoy Decoded", by="t")["id"]
    page = ledger.recorder.select_notifications(start=1, limit=100)
    n = next(n for n in page if UUID(str(n.originator_id)) == UUID(str(pid)))
    assert decoded(ledger.mapper, n).originator_id == n.originator_id  # it reads as written

    state = bytearray(n.state)
    state[-1] ^= 1
    for changed in (replace(n, state=bytes(state)), replace(n, topic="os:system")):
        with pytest.raises(UnreadableEvent) as failed:
            decoded(ledger.mapper, changed)
        assert failed.value.position == n.id
        assert failed.value.__cause__ is None and failed.value.__suppress_context__
        assert "Decoy" not in str(failed.value) and str(pid) not in str(failed.value)


def test_sqlite_keeps_wal_and_full_synchronous_commits(tmp_path):
    ledger = Ledger({"LEDGER_DATA_DIR": str(tmp_path)})
    ledger.init_study()

    settings = []
    for commit in (True, False):  # the connection that commits, and a reader
        with ledger.factory.datastore.transaction(commit=commit) as c:
            c.execute("PRAGMA journal_mode")
            journal = c.fetchone()[0]
            c.execute("PRAGMA synchronous")
            settings.append((journal, c.fetchone()[0]))
    ledger.close()

    assert settings == [("wal", 2), ("wal", 2)]  # 2 == FULL


def test_every_commit_waits_for_the_disk(ledger):
    """What the events, the views and the kept responses are written through: SQLite's writer
    at synchronous=FULL, PostgreSQL's at synchronous_commit=on (an acknowledged write survives
    a power cut, not only a killed process, which the crash tests cannot tell apart)."""
    with ledger.sql.transaction() as c:
        if ledger.sql.is_postgres:
            c.execute("SHOW synchronous_commit")
            setting = list(dict(c.fetchone()).values())[0]
        else:
            c.execute("PRAGMA synchronous")
            setting = c.fetchone()[0]

    assert setting == ("on" if ledger.sql.is_postgres else 2)


def test_key_files_and_database_are_readable_by_the_owner_only(tmp_path):
    ledger = Ledger({"LEDGER_DATA_DIR": str(tmp_path)})
    ledger.init_study(by="t")
    ledger.register_participant("Mode Check", by="t")
    ledger.projector.rebuild(workers=1)  # its lock file too
    files = {p.name: stat.S_IMODE(p.stat().st_mode) for p in tmp_path.iterdir() if p.is_file()}
    ledger.close()

    for name in ("master.key", "signing.key", "ledger.sqlite3", "setup.lock"):
        assert name in files
    assert {name: mode for name, mode in files.items() if mode != 0o600} == {}


def test_a_master_key_that_does_not_belong_to_the_database_is_refused(store_env, tmp_path):
    Ledger(store_env).close()
    other_dir = tmp_path / "other"
    other_dir.mkdir()
    if "LEDGER_DATABASE_URL" not in store_env:  # same SQLite file, different key
        Path(store_env["LEDGER_DATA_DIR"], "ledger.sqlite3").rename(other_dir / "ledger.sqlite3")

    with pytest.raises(ConfigurationError):
        Ledger({**store_env, "LEDGER_DATA_DIR": str(other_dir)})


def _bad_inputs(ledger: Ledger, pid, erased_pid):
    return {
        "unknown scope": (UnknownScope, lambda: ledger.grant_consent(
            pid, "tweet", "1.0", "online", by="t")),
        "unregistered form version": (UnregisteredFormVersion, lambda: ledger.grant_consent(
            pid, "record", "9.9", "online", by="t")),
        "fraction of a penny": (InvalidAmount, lambda: ledger.record_payment(
            pid, "conversation", "25.001", "cash", by="t")),
        "negative amount": (InvalidAmount, lambda: ledger.record_payment(
            pid, "conversation", "-25.00", "cash", by="t")),
        "zero amount": (InvalidAmount, lambda: ledger.record_payment(
            pid, "conversation", "0.00", "cash", by="t")),
        "currency": (UnsupportedCurrency, lambda: ledger.record_payment(
            pid, "conversation", "25.00", "cash", currency="USD", by="t")),
        "unknown activity": (UnknownActivity, lambda: ledger.record_payment(
            pid, "lunch", "25.00", "cash", by="t")),
        "withdraw never given": (ConsentNotGiven, lambda: ledger.withdraw_consent(
            pid, "publish", "phone", by="t")),
        "pay erased": (ParticipantErased, lambda: ledger.record_payment(
            erased_pid, "conversation", "25.00", "cash", by="t")),
    }


@pytest.mark.parametrize("case", [
    "unknown scope", "unregistered form version", "fraction of a penny", "negative amount",
    "zero amount", "currency", "unknown activity", "withdraw never given", "pay erased",
])
def test_bad_input_is_refused_by_name_and_writes_nothing(ledger, case):
    pid = ledger.register_participant("Bad Input Person", by="t")["id"]
    erased = ledger.register_participant("Erased Person", by="t")["id"]
    ledger.erase(erased, "asked", by="admin")
    error, command = _bad_inputs(ledger, pid, erased)[case]
    before = (_event_count(ledger), _key_count(ledger))

    with pytest.raises(error) as e:
        command()

    assert isinstance(e.value, LedgerError) and e.value.message
    assert e.value.field or case == "pay erased"
    assert (_event_count(ledger), _key_count(ledger)) == before


def test_replay_after_erasure_reads_redacted_values_and_never_fails(ledger, store_env):
    pid = ledger.register_participant("Erin Erasable", "erin@example.invalid", by="t")["id"]
    need = ledger.request_access_need(pid, "captions", "Erin needs captions", by="t")
    ledger.record_payment(pid, "conversation", "25.00", "cash", reference="ERIN-REF", by="t")
    ledger.erase(pid, "participant asked", by="admin")

    fresh = Ledger(store_env)  # nothing cached: every event decoded from the store
    events = [fresh.mapper.to_domain_event(n)
              for n in fresh.recorder.select_notifications(start=1, limit=1000)]
    reveal = fresh.mapper.revealer()
    registered = [e for e in events if type(e).__name__ == "Registered" and e.originator_id == pid]
    name, email = reveal(registered[0].name), reveal(registered[0].email)
    view = fresh.participant(pid)
    fresh.close()

    assert is_redacted(name) and is_redacted(email)
    assert view["erased"] and view["name"] == "[erased]"
    assert view["access_needs"][0]["id"] == need and view["access_needs"][0]["detail"] == "[erased]"
    assert view["payments"][0]["reference"] == "[erased]"
    assert view["payments"][0]["amount"] == "25.00"  # the facts stay


def test_an_unknown_participant_is_not_found(ledger):
    from ledger.domain.errors import ParticipantNotFound

    with pytest.raises(ParticipantNotFound):
        ledger.participant(uuid4())


def test_personal_fields_stay_sealed_until_a_view_opens_them(ledger, store_env):
    from ledger.privacy.mapper import Sealed

    pid = ledger.register_participant("Sealed Sally", "sally@example.invalid", by="t")["id"]
    fresh = Ledger(store_env)  # rebuilds from the store, as a command in another worker would

    aggregate = fresh._participant(pid, fresh=False)
    view = fresh.participant(pid)
    fresh.close()

    assert isinstance(aggregate.name, Sealed) and "Sally" not in repr(vars(aggregate))
    assert view["name"] == "Sealed Sally" and view["email"] == "sally@example.invalid"


def test_a_ledger_starts_while_other_transactions_write_the_views_and_keys(store_env):
    """A process starting (a restarted worker, a second host) while others write: on
    PostgreSQL, CREATE INDEX IF NOT EXISTS locks its table before it looks, so a start that
    ran it blocked behind any open write to the views, or deadlocked with one (seen in CI)."""
    import threading

    import psycopg

    from tests.conftest import PG_URL

    if "LEDGER_DATABASE_URL" not in store_env:
        pytest.skip("SQLite serialises all writes by design; the lock order is PostgreSQL's")
    first = Ledger(store_env)
    first.init_study(by="t")
    schema = first.factory.datastore.schema
    first.close()
    started: list[Ledger] = []
    with psycopg.connect(PG_URL.split("?")[0]) as writer:  # a write in progress, not committed
        # Every table of the ledger's own. (eventsourcing's events table is created by the
        # library, whose CREATE INDEX IF NOT EXISTS waits for the writes in flight to commit:
        # milliseconds, on one table, so nothing here waits on it in turn.)
        for table in ("ledger_view_consents", "ledger_view_participants", "ledger_idempotency",
                      "ledger_merkle_leaves", "ledger_data_keys", "ledger_tokens", "ledger_links",
                      "ledger_checkpoints", "ledger_meta", "ledger_view_tracking"):
            writer.execute(f'LOCK TABLE "{schema}".{table} IN ROW EXCLUSIVE MODE')
        thread = threading.Thread(target=lambda: started.append(Ledger(store_env)), daemon=True)
        thread.start()
        thread.join(timeout=15)
        blocked = thread.is_alive()
        writer.rollback()
    thread.join(timeout=60)
    for lg in started:
        lg.close()

    assert not blocked, "a starting Ledger waited for another transaction's writes"
    assert len(started) == 1
