"""Faults in the store at the worst moments, on both stores: a COMMIT that fails (PostgreSQL: a
deferred trigger raising disk_full at COMMIT; SQLite: COMMIT raising and leaving the transaction
open), a COMMIT whose reply is lost after the server committed, a statement the store refuses,
and the thread leading a shared commit stopped mid-way. Nothing may be acknowledged that was not
stored, nothing stored may be reported failed where a retry would record it twice or lose a key,
and the ledger must go on without a restart."""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from typing import Any
from uuid import UUID, uuid4

import pytest

from ledger.application import Ledger
from ledger.privacy.keystore import TABLE as KEYS
from tests.concurrency import race
from tests.conftest import PG_URL


@contextmanager
def _commits_fail(ledger: Ledger) -> Iterator[None]:
    """Every COMMIT of events fails, as when the disk fills or fails at that moment.

    PostgreSQL: a deferred constraint trigger on the events table raises disk_full, which the
    server reports at COMMIT, as it would a real one. SQLite has no deferred triggers, so its
    connection's commit raises instead when the transaction wrote events, leaving the transaction
    open, as SQLite may after a COMMIT that failed with SQLITE_FULL or SQLITE_IOERR (it then asks
    for a ROLLBACK)."""
    if ledger.sql.is_postgres:
        import psycopg

        schema = ledger.recorder.datastore.schema
        table = f'"{schema}".{ledger.recorder.events_table_name}'
        with psycopg.connect(PG_URL.split("?")[0], autocommit=True) as conn:
            conn.execute(f"""CREATE FUNCTION "{schema}".refuse_commit() RETURNS trigger
                             LANGUAGE plpgsql AS $$ BEGIN
                             RAISE EXCEPTION 'could not extend file' USING ERRCODE = 'disk_full';
                             END $$""")
            conn.execute(f"""CREATE CONSTRAINT TRIGGER refuse_commit AFTER INSERT ON {table}
                             DEFERRABLE INITIALLY DEFERRED FOR EACH ROW
                             EXECUTE FUNCTION "{schema}".refuse_commit()""")
            try:
                yield
            finally:
                conn.execute(f"DROP TRIGGER refuse_commit ON {table}")
        return
    import sqlite3

    from eventsourcing.sqlite import SQLiteConnection

    recorder, commit = ledger.recorder, SQLiteConnection.commit
    insert, inserted = recorder._insert_events, threading.local()

    def insert_events(c: object, *args: object, **kwargs: object) -> object:
        inserted.events = True  # (committed by the same thread, on the same connection)
        return insert(c, *args, **kwargs)

    def refuse(self: SQLiteConnection) -> None:
        if not getattr(inserted, "events", False):
            return commit(self)  # other commits (tokens, idempotency purge...) go through
        inserted.events = False
        raise sqlite3.OperationalError("database or disk is full")

    recorder._insert_events = insert_events
    SQLiteConnection.commit = refuse  # type: ignore[method-assign]
    try:
        yield
    finally:
        SQLiteConnection.commit = commit  # type: ignore[method-assign]
        del recorder._insert_events


def _payments(ledger: Ledger) -> list[str]:
    return [str(n.originator_id) for n in ledger.recorder.select_notifications(start=1, limit=10_000)
            if n.topic == "ledger:Payment.Recorded"]


def test_saves_whose_commit_fails_are_not_acknowledged_and_the_store_stays_writable(store_env):
    """Sixteen payments at once, on threads sharing commits, while every commit fails: each one
    raises the store's error (none is acknowledged) and none is kept. Then, the fault gone, the
    same payments succeed at once, in this process and in another ledger on the same store (a
    second worker): no transaction or lock was left behind. Before, on SQLite, the writer kept
    the failed transaction open, holding SQLite's write lock: every later write, in every
    worker, failed until the server restarted."""
    from eventsourcing.persistence import OperationalError

    ledger = Ledger({**store_env, "LEDGER_PROJECTIONS": "external"})
    ledger.init_study(by="t")
    people = [ledger.register_participant("Failing Commit Person", by="t")["id"]
              for _ in range(16)]

    def pay(lg: Ledger, pid: object) -> object:
        return lg.record_payment(pid, "conversation", "25.00", "cash", by="t")

    with _commits_fail(ledger):
        failed = race([lambda pid=pid: pay(ledger, pid) for pid in people])
    kept_after_the_fault = _payments(ledger)
    other = Ledger({**store_env, "LEDGER_PROJECTIONS": "external"})
    try:
        elsewhere = pay(other, people[0])
        here = race([lambda pid=pid: pay(ledger, pid) for pid in people[1:]])
        stored = _payments(ledger)
    finally:
        other.close()
        ledger.close()

    assert all(isinstance(o, OperationalError) for o in failed), failed
    assert kept_after_the_fault == []
    assert isinstance(elsewhere, dict) and all(isinstance(o, dict) for o in here), here
    assert sorted(stored) == sorted(str(o["id"]) for o in [elsewhere, *here])  # type: ignore[index]


def test_a_payment_whose_commit_fails_gets_a_500_and_its_key_is_not_kept(store_env):
    """Through the API: the request is answered 500 (problem+json, saying nothing of the store),
    nothing is written, and its Idempotency-Key is not kept, so the client's retry with the same
    key and body, once the store is back, records the payment once."""
    from ledger.api import create_app

    ledger = Ledger(store_env)
    ledger.init_study(by="t")
    staff = {"Authorization": f"Bearer {ledger.tokens.create('staff', 'commit test')[1]}",
             "Idempotency-Key": "retry-me"}
    client = create_app({"LEDGER": ledger, "TESTING": True}).test_client()
    pid = client.post("/api/v1/participants", headers=staff, json={"name": "Failing Commit"}).json["id"]
    body = {"activity": "conversation", "amount": "25.00", "method": "cash"}
    try:
        with _commits_fail(ledger):
            refused = client.post(f"/api/v1/participants/{pid}/payments", headers=staff, json=body)
        retried = client.post(f"/api/v1/participants/{pid}/payments", headers=staff, json=body)
        again = client.post(f"/api/v1/participants/{pid}/payments", headers=staff, json=body)
        stored = _payments(ledger)
    finally:
        ledger.close()

    assert refused.status_code == 500 and refused.content_type == "application/problem+json"
    assert not {"disk", "full", "extend", "sql", "insert", "traceback"} & set(
        refused.get_data(as_text=True).lower().replace('"', " ").replace(".", " ").split())
    assert retried.status_code == 201 and again.get_data() == retried.get_data()
    assert stored == [str(retried.json["id"])]


@contextmanager
def _refused(ledger: Ledger, table: str, operation: str) -> Iterator[None]:
    """The store refuses every ``operation`` (INSERT, DELETE) on ``table``, by a trigger in the
    database itself (disk_full on PostgreSQL; RAISE(ABORT) on SQLite)."""
    if ledger.sql.is_postgres:
        import psycopg

        schema = ledger.recorder.datastore.schema
        with psycopg.connect(PG_URL.split("?")[0], autocommit=True) as conn:
            conn.execute(f"""CREATE FUNCTION "{schema}".refuse() RETURNS trigger
                             LANGUAGE plpgsql AS $$ BEGIN
                             RAISE EXCEPTION 'could not extend file' USING ERRCODE = 'disk_full';
                             END $$""")
            conn.execute(f'CREATE TRIGGER refuse BEFORE {operation} ON "{schema}".{table} '
                         f'FOR EACH ROW EXECUTE FUNCTION "{schema}".refuse()')
            try:
                yield
            finally:
                conn.execute(f'DROP TRIGGER refuse ON "{schema}".{table}')
                conn.execute(f'DROP FUNCTION "{schema}".refuse()')
        return
    conn = sqlite3.connect(ledger.settings.sqlite_path, isolation_level=None)
    try:
        conn.execute(f"CREATE TRIGGER refuse BEFORE {operation} ON {table} "
                     "BEGIN SELECT RAISE(ABORT, 'database or disk is full'); END")
        try:
            yield
        finally:
            conn.execute("DROP TRIGGER refuse")
    finally:
        conn.close()


def _keys(ledger: Ledger) -> int:
    return int(ledger.sql.query(f"SELECT COUNT(*) AS n FROM {{t}}{KEYS}")[0]["n"])


def _client(ledger: Ledger, *roles: str) -> tuple[Any, dict[str, dict[str, str]]]:
    from ledger.api import create_app

    return (create_app({"LEDGER": ledger, "TESTING": True}).test_client(),
            {role: {"Authorization": f"Bearer {ledger.tokens.create(role, 'faults')[1]}"}
             for role in roles})


def _one_person(store_env: dict[str, str]) -> tuple[Ledger, Any, dict[str, dict[str, str]], str]:
    """A ledger with one person registered through the API, and staff and admin tokens."""
    ledger = Ledger(store_env)
    ledger.init_study(by="t")
    client, tokens = _client(ledger, "staff", "admin")
    pid = client.post("/api/v1/participants", headers=tokens["staff"],
                      json={"name": "Zelda Fakename"}).json["id"]
    return ledger, client, tokens, pid


@contextmanager
def _reply_lost(ledger: Ledger, *, committed: bool) -> Iterator[None]:
    """Each save the store takes alone ends with the connection lost: after its COMMIT went
    through (``committed``), or before the store could do anything."""
    from eventsourcing.persistence import OperationalError

    alone = ledger.recorder._insert_alone

    def lost(save: object) -> object:
        if committed:
            alone(save)
        raise OperationalError("server closed the connection unexpectedly")

    ledger.recorder._insert_alone = lost
    try:
        yield
    finally:
        del ledger.recorder._insert_alone


@pytest.mark.parametrize("fault", ["reply lost after the commit", "follower not started"])
def test_a_registration_stored_despite_an_error_keeps_its_key_and_is_answered_201(store_env,
                                                                                   fault):
    """The registration's COMMIT went through but the store's reply was lost (a PostgreSQL
    connection dropped after the server committed), or a step after the save failed (no thread
    could be started for the views' follower). The person is registered, so the answer is 201
    and their data key stays. Before, the key was deleted and the answer was 500: the person's
    name could never be read again, nothing personal could be recorded for them, they could
    not be erased, and the client's retry registered them twice."""
    ledger = Ledger(store_env)
    ledger.init_study(by="t")
    client, tokens = _client(ledger, "staff", "admin")

    def no_thread() -> None:
        raise RuntimeError("can't start new thread")

    if fault == "follower not started":
        ledger._follower.wake = no_thread  # type: ignore[method-assign]
    try:
        with (_reply_lost(ledger, committed=True) if fault == "reply lost after the commit"
              else nullcontext()):
            response = client.post("/api/v1/participants", headers=tokens["staff"],
                                   json={"name": "Zelda Fakename"})
    finally:
        ledger._follower.__dict__.pop("wake", None)
    try:
        registered = ledger.participant_ids()
        pid = UUID(response.json["id"])
        need = client.post(f"/api/v1/participants/{pid}/access-needs", headers=tokens["staff"],
                           json={"category": "step-free access", "detail": "a ramp"})
        name = ledger.participant(pid)["name"]
        erased = client.post(f"/api/v1/participants/{pid}/erasure", headers=tokens["admin"],
                             json={"reason": "asked"})
    finally:
        ledger.close()

    assert response.status_code == 201 and registered == [pid]
    assert int(response.headers["Ledger-Position"]) >= 1  # read-your-writes still works
    assert name == "Zelda Fakename" and need.status_code == 201
    assert erased.status_code == 200 and erased.json["receipt"]["data_key_destroyed"] is True


def test_a_stored_registration_whose_reply_was_lost_is_answered_201_if_the_log_s_end_cannot_be_read(
        store_env):
    """As above, and the end of the log cannot be read just then either (the answer's
    Ledger-Position comes from it). It is answered 201 without that header: a 500 would have
    the client register the person twice."""
    from eventsourcing.persistence import OperationalError

    ledger = Ledger(store_env)
    ledger.init_study(by="t")
    client, tokens = _client(ledger, "staff")

    def unreadable() -> int:
        raise OperationalError("server closed the connection unexpectedly")

    try:
        with _reply_lost(ledger, committed=True):
            ledger.recorder.max_notification_id = unreadable  # type: ignore[method-assign]
            try:
                response = client.post("/api/v1/participants", headers=tokens["staff"],
                                       json={"name": "Zelda Fakename"})
            finally:
                del ledger.recorder.max_notification_id
        registered = ledger.participant_ids()
        name = ledger.participant(UUID(response.json["id"]))["name"]
    finally:
        ledger.close()

    assert response.status_code == 201 and "Ledger-Position" not in response.headers
    assert registered == [UUID(response.json["id"])] and name == "Zelda Fakename"


def test_a_registration_the_store_refuses_leaves_no_key(store_env):
    ledger = Ledger(store_env)
    ledger.init_study(by="t")
    client, tokens = _client(ledger, "staff")
    keys = _keys(ledger)
    try:
        with _commits_fail(ledger):
            refused = client.post("/api/v1/participants", headers=tokens["staff"],
                                  json={"name": "Zelda Fakename"})
        after = (ledger.participant_ids(), _keys(ledger))
    finally:
        ledger.close()

    assert refused.status_code == 500 and "Zelda" not in refused.get_data(as_text=True)
    assert after == ([], keys)


def _erased_while_deletes_are_refused(ledger: Ledger, client: Any, tokens: dict[str, Any],
                                     pid: str, meanwhile: Any = None) -> tuple[Any, bool, bool]:
    """Erase ``pid`` while the store refuses to delete data keys (for 2.5 s, in which the
    retries are refused too); then wait up to 15 s. Returns the answer, whether the key was
    still there while refused, and whether it was gone after."""
    with _refused(ledger, KEYS, "DELETE"):
        erased = client.post(f"/api/v1/participants/{pid}/erasure", headers=tokens["admin"],
                             json={"reason": "asked"})
        if meanwhile is not None:
            meanwhile()
        time.sleep(2.5)
        kept = ledger.keys.exists(UUID(pid))
    deadline = time.monotonic() + 15
    while ledger.keys.exists(UUID(pid)) and time.monotonic() < deadline:
        time.sleep(0.1)
    return erased, kept, not ledger.keys.exists(UUID(pid))


def test_an_erasure_whose_key_cannot_be_destroyed_yet_stands_and_the_key_goes_soon(store_env,
                                                                                   monkeypatch):
    """The erasure is recorded, then the store refuses to delete the data key. The erasure
    stands (200, the person shown erased, the receipt saying the key is not yet destroyed),
    and once the store takes deletes again the key goes within seconds, with no other request
    (the follower retries). Before, the erasure was answered 500 and the key kept until the
    process restarted or the admin retried."""
    monkeypatch.setattr("ledger.application.SCRUB_RETRY_S", 1.0)  # (30 s in service)
    ledger, client, tokens, pid = _one_person(store_env)
    shown: list[Any] = []

    def look() -> None:  # while the key is still there
        shown.append(client.get(f"/api/v1/participants/{pid}", headers=tokens["staff"]).json)

    try:
        erased, kept, gone = _erased_while_deletes_are_refused(ledger, client, tokens, pid, look)
        receipt = client.get(f"/api/v1/participants/{pid}/erasure", headers=tokens["admin"]).json
    finally:
        ledger.close()

    assert erased.status_code == 200 and erased.json["erased"] is True
    assert erased.json["receipt"]["data_key_destroyed"] is False and kept
    assert shown[0]["erased"] is True and "Zelda" not in str(shown)
    assert gone and receipt["data_key_destroyed"] is True


def test_with_the_views_kept_externally_a_key_an_erasure_left_goes_soon_too(store_env,
                                                                               monkeypatch):
    """As above, with ``LEDGER_PROJECTIONS=external``: the API's processes have no follower to
    retry, so ``ledger projections run`` looks for people the views show erased whose key is
    still there. Before, the key stayed until a process started or erased someone else."""
    from ledger.projections.runner import run_views

    monkeypatch.setattr("ledger.application.SCRUB_RETRY_S", 1.0)  # (30 s in service)
    ledger, client, tokens, pid = _one_person({**store_env, "LEDGER_PROJECTIONS": "external"})
    stop = threading.Event()
    follower = threading.Thread(target=run_views, args=(store_env,), kwargs={"stop": stop})
    follower.start()
    try:
        erased, kept, gone = _erased_while_deletes_are_refused(ledger, client, tokens, pid)
        others = ledger.keys.exists(UUID(client.post(
            "/api/v1/participants", headers=tokens["staff"], json={"name": "Yvo Fakename"}
        ).json["id"]))
    finally:
        stop.set()
        follower.join(timeout=60)
        ledger.close()

    assert erased.status_code == 200 and erased.json["receipt"]["data_key_destroyed"] is False
    assert kept and gone and others  # (only the erased person's key goes)


def test_a_shared_commit_whose_leader_is_stopped_fails_every_save_in_it(store_env):
    """The thread leading a shared commit is stopped mid-way (KeyboardInterrupt, SystemExit):
    the saves it held for other threads must fail, not return as if committed. Before, they
    returned no error and their commands were acknowledged though nothing was stored."""
    from eventsourcing.persistence import OperationalError, StoredEvent

    from ledger.group_commit import Save

    ledger = Ledger({**store_env, "LEDGER_PROJECTIONS": "external"})
    start = (ledger.recorder.max_notification_id() or 0) + 1
    batch = [Save([StoredEvent(uuid4(), 1, "ledger:Test.Event", bytes([i]))], {})
             for i in range(3)]

    def stopped(_: object) -> None:
        raise KeyboardInterrupt

    ledger.recorder._insert_together = stopped
    try:
        with pytest.raises(KeyboardInterrupt):
            ledger.recorder._commit(batch)  # what the leading thread does with what was queued
    finally:
        del ledger.recorder._insert_together
    stored = ledger.recorder.select_notifications(start=start, limit=10)
    ledger.close()

    assert [s.done for s in batch] == [True] * 3 and stored == []
    assert all(isinstance(s.error, OperationalError) for s in batch), [s.error for s in batch]


def test_a_thread_whose_save_was_in_a_stopped_shared_commit_is_not_acknowledged(store_env):
    """The same through two real threads: the first leads (its commit stopped), the second
    queued behind it; the second's payment raises and nothing is stored."""
    from eventsourcing.persistence import OperationalError

    ledger = Ledger({**store_env, "LEDGER_PROJECTIONS": "external"})
    ledger.init_study(by="t")
    people = [ledger.register_participant("Stopped Commit", by="t")["id"] for _ in range(2)]
    recorder = ledger.recorder

    def stopped(batch: object) -> None:
        raise SystemExit(1)

    outcomes: dict[int, object] = {}

    def pay(i: int) -> None:
        try:
            outcomes[i] = ledger.record_payment(people[i], "conversation", "25.00", "cash",
                                                by="t")
        except BaseException as error:  # noqa: BLE001 - SystemExit in the leader, by design
            outcomes[i] = error

    recorder._insert_together = stopped
    recorder._lead.acquire()  # both saves queue behind this, then one leads the pair
    threads = [threading.Thread(target=pay, args=(i,)) for i in range(2)]
    try:
        for t in threads:
            t.start()
        # (60 s: a run on a machine loaded by other work once took over 10 s to queue both,
        # and the first then led alone, which is not what this test is about)
        deadline = time.monotonic() + 60
        while len(recorder._queue) < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        queued = len(recorder._queue)
        recorder._lead.release()
        for t in threads:
            t.join(30)
    finally:
        del recorder._insert_together
    stored = [n for n in recorder.select_notifications(start=1, limit=1000)
              if n.topic == "ledger:Payment.Recorded"]
    ledger.close()

    kinds = sorted(type(o).__name__ for o in outcomes.values())
    assert queued == 2, "the two saves did not both queue behind the held lead"
    assert kinds == ["OperationalError", "SystemExit"], outcomes
    assert isinstance(next(o for o in outcomes.values() if not isinstance(o, SystemExit)),
                      OperationalError)
    assert stored == []


def test_a_payment_whose_follower_cannot_be_woken_is_still_answered_201(store_env):
    """Once a save's COMMIT went through, nothing after it may turn the answer into a 500 (the
    retry would be refused as already paid, and the staff member left unsure): here no thread
    can be started for the views' follower."""
    ledger, client, tokens, pid = _one_person(store_env)

    def no_thread() -> None:
        raise RuntimeError("can't start new thread")

    ledger._follower.wake = no_thread  # type: ignore[method-assign]
    try:
        paid = client.post(f"/api/v1/participants/{pid}/payments",
                           headers={**tokens["staff"], "Idempotency-Key": "k"},
                           json={"activity": "conversation", "amount": "25.00", "method": "cash"})
    finally:
        del ledger._follower.wake
    try:
        stored = _payments(ledger)
        shown = client.get(f"/api/v1/participants/{pid}", headers=tokens["staff"]).json
    finally:
        ledger.close()

    assert paid.status_code == 201 and stored == [str(paid.json["id"])]
    assert [p["status"] for p in shown["payments"]] == ["paid"]


def test_an_erasure_whose_receipt_cannot_be_issued_now_stands_and_the_receipt_comes_later(
        store_env):
    """The erasure is recorded, its key destroyed, then the receipt cannot be signed (signing a
    checkpoint is a write, which the store refuses). The answer is 200 with `receipt: null`, not
    a 500 that would send the admin to retry (refused: already erased); the receipt is there on
    GET once the store takes writes again."""
    from ledger.audit.checkpoints import CHECKPOINTS

    ledger, client, tokens, pid = _one_person(store_env)
    try:
        with _refused(ledger, CHECKPOINTS, "INSERT"):
            erased = client.post(f"/api/v1/participants/{pid}/erasure",
                                 headers=tokens["admin"], json={"reason": "asked"})
        key_gone = not ledger.keys.exists(UUID(pid))
        receipt = client.get(f"/api/v1/participants/{pid}/erasure", headers=tokens["admin"])
    finally:
        ledger.close()

    assert erased.status_code == 200, erased.json
    assert erased.json["erased"] is True and erased.json["receipt"] is None and key_gone
    assert receipt.status_code == 200 and receipt.json["data_key_destroyed"] is True


def test_a_save_taken_by_a_leader_stopped_before_its_commit_is_not_acknowledged(store_env):
    """A leader takes the queue and is stopped before its commit begins: the saves it took are
    neither committed nor marked. The thread whose save it was must get an error when it next
    leads, not return as if its save had been committed."""
    from eventsourcing.persistence import OperationalError, StoredEvent

    ledger = Ledger({**store_env, "LEDGER_PROJECTIONS": "external"})
    start = (ledger.recorder.max_notification_id() or 0) + 1
    recorder, outcome = ledger.recorder, []

    def save() -> None:
        try:
            outcome.append(recorder.insert_events(
                [StoredEvent(uuid4(), 1, "ledger:Test.Event", b"x")]))
        except OperationalError as error:
            outcome.append(error)

    recorder._lead.acquire()  # the leader, holding the queue's lead
    thread = threading.Thread(target=save)
    thread.start()
    deadline = time.monotonic() + 10
    while not recorder._queue and time.monotonic() < deadline:
        time.sleep(0.01)
    with recorder._queue_lock:
        taken, recorder._queue = recorder._queue, []  # ... takes it, and is stopped there
    recorder._lead.release()
    thread.join(30)
    stored = recorder.select_notifications(start=start, limit=10)
    ledger.close()

    assert len(taken) == 1 and stored == []
    assert len(outcome) == 1 and isinstance(outcome[0], OperationalError), outcome


# -- the participant's withdrawal pages under faults ---------------------------------------------


def _withdrawal_page(store_env: dict[str, str]) -> tuple[Ledger, Any, str, str, dict[str, str]]:
    """A person who gave "record", their personal link's path, and the form a browser posts."""
    import re

    ledger, client, tokens, pid = _one_person(store_env)
    granted = client.post(f"/api/v1/participants/{pid}/consents", headers=tokens["staff"],
                          json={"scope": "record", "form_version": "1.0", "method": "online"})
    assert granted.status_code == 201
    url = client.post(f"/api/v1/participants/{pid}/withdrawal-link", headers=tokens["staff"],
                      json={}).json["url"]
    path = url.removeprefix("https://ledger.example")
    csrf = re.search(r'name="csrf" value="([^"]+)"', client.get(path).get_data(as_text=True))
    assert csrf is not None
    return ledger, client, pid, path, {"csrf": csrf.group(1), "scope": "record"}


def _withdrawals(ledger: Ledger, pid: str) -> int:
    return sum(1 for n in ledger.recorder.select_notifications(start=1, limit=10_000)
               if n.topic == "ledger:Participant.ConsentWithdrawn" and str(n.originator_id) == pid)


def test_a_withdrawal_kept_though_the_store_reported_an_error_shows_it_was_done(store_env):
    """The stop was committed, then the store's reply was lost. The person is shown that it
    was done, not "something went wrong ... nothing was changed" (which sent them to do it
    again, to be told they had already stopped)."""
    ledger, client, pid, path, form = _withdrawal_page(store_env)
    with _reply_lost(ledger, committed=True):
        posted = client.post(f"{path}/withdraw", data=form)
    try:
        shown = client.get(posted.headers.get("Location", path)).get_data(as_text=True)
        stored = _withdrawals(ledger, pid)
    finally:
        ledger.close()

    assert posted.status_code == 303 and "/done?stopped=record" in posted.headers["Location"]
    assert "These are now stopped" in shown and "Record the talk" in shown
    assert stored == 1


def test_a_withdrawal_the_store_refused_says_so_and_the_next_try_works(store_env):
    ledger, client, pid, path, form = _withdrawal_page(store_env)
    try:
        with _commits_fail(ledger):
            refused = client.post(f"{path}/withdraw", data=form)
        before = _withdrawals(ledger, pid)
        again = client.post(f"{path}/withdraw", data=form)
        after = _withdrawals(ledger, pid)
    finally:
        ledger.close()

    page = refused.get_data(as_text=True)
    assert refused.status_code == 503 and "Your choice was not saved" in page
    assert "coproduction@ucl.ac.uk" in page and before == 0
    assert again.status_code == 303 and "stopped=record" in again.headers["Location"]
    assert after == 1


def test_a_withdrawal_whose_answer_was_lost_and_not_yet_seen_says_it_could_not_tell(store_env):
    """The connection was lost before the store answered (no error from the store itself), and
    the stop is not there when the page looks again: it may yet show up (a commit still under
    way), so the page must not say "not saved"; it says it could not tell, and where to look."""
    ledger, client, pid, path, form = _withdrawal_page(store_env)
    with _reply_lost(ledger, committed=False):
        posted = client.post(f"{path}/withdraw", data=form)
    try:
        stored = _withdrawals(ledger, pid)
    finally:
        ledger.close()

    page = posted.get_data(as_text=True)
    assert posted.status_code == 503 and "We could not tell if that worked" in page
    assert "not saved" not in page and "Nothing was changed" not in page
    assert "open your link again" in page and stored == 0


def _store_errors() -> list[tuple[str, BaseException, bool]]:
    import psycopg
    from psycopg import errors

    return [("SQLite: disk I/O error", sqlite3.OperationalError("disk I/O error"), True),
            ("SQLite: locked", sqlite3.OperationalError("database is locked"), True),
            ("PostgreSQL: disk full", errors.DiskFull(), True),
            ("PostgreSQL: lock timeout", errors.LockNotAvailable(), True),
            ("PostgreSQL: clash", errors.UniqueViolation(), True),
            ("PostgreSQL: connection lost", psycopg.OperationalError("server closed the "
                                                                     "connection"), False),
            ("PostgreSQL: connection failure", errors.ConnectionFailure(), False),
            ("PostgreSQL: terminated by an administrator", errors.AdminShutdown(), False),
            ("PostgreSQL: server crashed", errors.CrashShutdown(), False),
            ("something else", RuntimeError("?"), False)]


@pytest.mark.parametrize(("cause", "known"), [case[1:] for case in _store_errors()],
                         ids=[case[0] for case in _store_errors()])
def test_a_write_is_known_not_saved_only_when_the_store_itself_said_so(cause, known):
    """Only then may a person be told "not saved". A session the server ended (an
    administrator's terminate, a crash) is like a lost connection: a COMMIT already sent may
    still land. The library wraps the driver's error in its own, naming it as the cause."""
    from eventsourcing.persistence import OperationalError

    from ledger.store import refused_by_the_store

    wrapped = OperationalError(str(cause))
    wrapped.__cause__ = cause

    assert refused_by_the_store(wrapped) is known
    assert refused_by_the_store(cause) is known


def test_pages_that_cannot_show_after_a_withdrawal_never_say_nothing_was_changed(store_env):
    """The stop went through; then the store fails as the person reads the page after it, or
    their receipt. Those pages must not say "nothing was changed" (read as "your choice was
    lost"), and must still give the address to write to."""
    from eventsourcing.persistence import OperationalError

    ledger, client, pid, path, form = _withdrawal_page(store_env)

    def down(*args: object, **kwargs: object) -> None:
        raise OperationalError("server closed the connection unexpectedly")

    try:
        posted = client.post(f"{path}/withdraw", data=form)
        ledger._reader.get = down  # every read of the record
        ledger.study = down  # type: ignore[method-assign]
        try:
            pages = [client.get(posted.headers["Location"]), client.get(f"{path}/receipt"),
                     client.get(path)]
        finally:
            del ledger._reader.get, ledger.study
        stored = _withdrawals(ledger, pid)
    finally:
        ledger.close()

    for page in pages:
        text = page.get_data(as_text=True)
        assert page.status_code == 503 and "Nothing was changed" not in text, text
        assert "Anything you have already told us is kept" in text
        assert 'href="mailto:coproduction@ucl.ac.uk"' in text
    assert stored == 1


# -- PostgreSQL connections dropped ---------------------------------------------------------------


def _terminate(backends: list[int]) -> None:
    import psycopg

    with psycopg.connect(PG_URL.split("?")[0], autocommit=True) as conn:
        for pid in backends:
            conn.execute("SELECT pg_terminate_backend(%s)", (pid,))


@pytest.mark.postgres
def test_after_the_server_drops_every_connection_one_request_fails_not_one_per_connection(
        pg_schema, tmp_path):
    """Every pooled connection dies at once (a restart, a failover, an administrator ending
    sessions). The first request to meet a dead one fails; it has the pool check the others,
    so the next ones succeed. Before, each pooled connection failed one request in turn."""
    ledger = Ledger({"LEDGER_DATA_DIR": str(tmp_path / "d"),
                     "LEDGER_DATABASE_URL": f"{PG_URL.split('?')[0]}?schema={pg_schema}"})
    ledger.init_study(by="t")
    client, tokens = _client(ledger, "staff")
    race([lambda: [client.get("/api/v1/participants", headers=tokens["staff"])
                   for _ in range(10)] for _ in range(8)])  # the pool grows to several
    pool = ledger.recorder.datastore.pool
    idle = [conn.info.backend_pid for conn in list(pool._pool)]
    _terminate(idle)
    try:
        codes = [client.post("/api/v1/participants", headers=tokens["staff"],
                             json={"name": "Zelda Fakename"}).status_code for _ in range(12)]
        stored = len(ledger.participant_ids())
    finally:
        ledger.close()

    assert len(idle) >= 3, idle  # (else the test would show nothing)
    assert codes.count(201) >= 11 and set(codes) <= {201, 500}, codes
    assert stored == codes.count(201)


@pytest.mark.postgres
def test_a_registration_whose_reply_and_pooled_connections_were_lost_is_answered_201(
        pg_schema, tmp_path):
    """The registration committed; then the connection dropped, and with it every other
    pooled one. Asking the store whether it was kept must not fail on another dead connection
    (which answered 500, and the retry registered the person twice)."""
    from eventsourcing.persistence import OperationalError

    ledger = Ledger({"LEDGER_DATA_DIR": str(tmp_path / "d"),
                     "LEDGER_DATABASE_URL": f"{PG_URL.split('?')[0]}?schema={pg_schema}"})
    ledger.init_study(by="t")
    client, tokens = _client(ledger, "staff")
    client.post("/api/v1/participants", headers=tokens["staff"], json={"name": "Warm Pool"})
    pool, alone = ledger.recorder.datastore.pool, ledger.recorder._insert_alone

    def committed_then_dropped(save: object) -> object:
        alone(save)
        _terminate([conn.info.backend_pid for conn in list(pool._pool)])
        raise OperationalError("server closed the connection unexpectedly")

    ledger.recorder._insert_alone = committed_then_dropped
    try:
        answer = client.post("/api/v1/participants", headers=tokens["staff"],
                             json={"name": "Zelda Fakename"})
    finally:
        del ledger.recorder._insert_alone
    try:
        stored = ledger.participant_ids()
    finally:
        ledger.close()

    assert answer.status_code == 201 and len(stored) == 2
    assert UUID(answer.json["id"]) in stored


@pytest.mark.postgres
def test_an_error_on_a_sound_connection_does_not_renew_the_pool(pg_schema, tmp_path):
    """Only a broken connection renews the pool: a full disk (or a lock timeout) leaves the
    connections sound, and renewing them all on every such error would only add load."""
    ledger = Ledger({"LEDGER_DATA_DIR": str(tmp_path / "d"),
                     "LEDGER_DATABASE_URL": f"{PG_URL.split('?')[0]}?schema={pg_schema}"})
    ledger.init_study(by="t")
    client, tokens = _client(ledger, "staff")
    pool, drains = ledger.recorder.datastore.pool, []
    drain = pool.drain
    pool.drain = lambda: drains.append(1) or drain()
    try:
        with _commits_fail(ledger):
            refused = client.post("/api/v1/participants", headers=tokens["staff"],
                                  json={"name": "Zelda Fakename"})
        after_refusal = len(drains)
        _terminate([conn.info.backend_pid for conn in list(pool._pool)])
        codes = [client.post("/api/v1/participants", headers=tokens["staff"],
                             json={"name": "Zelda Fakename"}).status_code for _ in range(3)]
    finally:
        del pool.drain
        ledger.close()

    assert refused.status_code == 500 and after_refusal == 0
    assert len(drains) >= 1 and codes[-1] == 201, codes


@contextmanager
def _pg_commit_answer_lost(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[int]]:
    """PostgreSQL: the first insert commits, then its answer is lost (as when the connection
    drops between the server's COMMIT and its reply); the recorder retries, as the library
    does. Yields the count of inserts tried."""
    from eventsourcing.persistence import OperationalError

    import ledger.store

    real, tries = ledger.store.PG_INSERT, []

    def answer_lost(recorder: object, events: object, **kwargs: object) -> object:
        tries.append(1)
        ids = real(recorder, events, **kwargs)
        if len(tries) == 1:
            raise OperationalError("server closed the connection unexpectedly")
        return ids

    monkeypatch.setattr(ledger.store, "PG_INSERT", answer_lost)
    yield tries
    monkeypatch.setattr(ledger.store, "PG_INSERT", real)


def _pg_person(pg_schema: str, tmp_path: Any) -> tuple[Ledger, Any, dict[str, dict[str, str]], str]:
    return _one_person({"LEDGER_DATA_DIR": str(tmp_path / "d"),
                        "LEDGER_DATABASE_URL": f"{PG_URL.split('?')[0]}?schema={pg_schema}"})


@pytest.mark.postgres
@pytest.mark.parametrize("write", ["expense", "consent", "payment"])
def test_a_write_whose_commit_answer_was_lost_is_answered_as_done_once(pg_schema, tmp_path,
                                                                       monkeypatch, write):
    """The retry after a lost answer met its own rows (a unique-key clash), which the library
    reported as a clash: the expense was refused as a duplicate id, the consent as already
    given, the payment as already paid (409s for writes that had succeeded, inviting a retry
    that records the expense twice). Now the rows are recognised as the ones sent: 201, once."""
    ledger, client, tokens, pid = _pg_person(pg_schema, tmp_path)
    request = {
        "expense": (f"/api/v1/participants/{pid}/expenses", {
            "activity": "workshop", "amount": "7.40", "method": "cash", "description": "bus"}),
        "consent": (f"/api/v1/participants/{pid}/consents", {
            "scope": "record", "form_version": "1.0", "method": "online"}),
        "payment": (f"/api/v1/participants/{pid}/payments", {
            "activity": "conversation", "amount": "25.00", "method": "cash"}),
    }[write]
    topic = {"expense": "ExpenseRecorded", "consent": "ConsentGranted",
             "payment": "Payment.Recorded"}[write]
    try:
        with _pg_commit_answer_lost(monkeypatch) as tries:
            answer = client.post(request[0], json=request[1],
                                 headers={**tokens["staff"], "Idempotency-Key": "k"})
        stored = [n for n in ledger.recorder.select_notifications(start=1, limit=1000)
                  if n.topic.endswith(topic)]
    finally:
        ledger.close()

    assert len(tries) == 1  # the first committed, its answer lost; seen stored, not retried
    assert answer.status_code == 201, answer.get_data(as_text=True)
    assert len(stored) == 1


@pytest.mark.postgres
def test_a_clash_after_a_lost_answer_with_someone_else_s_rows_is_still_a_clash(pg_schema,
                                                                               tmp_path,
                                                                               monkeypatch):
    """The first try failed without committing, and meanwhile another writer stored other
    rows under the same version: the retry's clash is a real one, and is reported."""
    from eventsourcing.persistence import IntegrityError, OperationalError, StoredEvent

    import ledger.store
    from ledger.group_commit import Save

    ledger_ = Ledger({"LEDGER_DATA_DIR": str(tmp_path / "d"), "LEDGER_PROJECTIONS": "external",
                      "LEDGER_DATABASE_URL": f"{PG_URL.split('?')[0]}?schema={pg_schema}"})
    real, taken = ledger.store.PG_INSERT, uuid4()
    ours = StoredEvent(taken, 1, "ledger:Test.Event", b"ours")

    def lost_before_commit(recorder: object, events: object, **kwargs: object) -> object:
        monkeypatch.setattr(ledger.store, "PG_INSERT", real)
        real(recorder, [StoredEvent(taken, 1, "ledger:Test.Event", b"theirs")])  # another writer
        raise OperationalError("server closed the connection unexpectedly")

    monkeypatch.setattr(ledger.store, "PG_INSERT", lost_before_commit)
    try:
        # (a clash may also surface as the library's "pipeline aborted", an OperationalError)
        with pytest.raises((IntegrityError, OperationalError)):
            ledger_.recorder._insert_alone(Save([ours], {}))
        states = [n.state for n in ledger_.recorder.select_notifications(start=1, limit=100)
                  if n.originator_id == taken]
    finally:
        ledger_.close()

    assert states == [b"theirs"]


@pytest.mark.postgres
def test_a_lost_commit_answer_the_store_cannot_confirm_is_a_500_never_a_refusal(
        pg_schema, tmp_path, monkeypatch):
    """The answer was lost and the store cannot be asked whether the rows are there: the
    outcome is unknown, so a 500 (try again, look first), never the 409 a real clash gets."""
    from eventsourcing.persistence import OperationalError

    from ledger.store import LedgerPostgresApplicationRecorder

    ledger, client, tokens, pid = _pg_person(pg_schema, tmp_path)
    ask = LedgerPostgresApplicationRecorder._ids_if_stored

    @contextmanager
    def down() -> Iterator[None]:
        raise OperationalError("server closed the connection unexpectedly")
        yield

    def cannot_ask(self: Any, events: Any) -> Any:  # the question's connection fails
        self.datastore.get_connection = down
        try:
            return ask(self, events)
        finally:
            del self.datastore.get_connection

    monkeypatch.setattr(LedgerPostgresApplicationRecorder, "_ids_if_stored", cannot_ask)
    try:
        with _pg_commit_answer_lost(monkeypatch):
            answer = client.post(f"/api/v1/participants/{pid}/expenses", json={
                "activity": "workshop", "amount": "7.40", "method": "cash",
                "description": "bus"}, headers=tokens["staff"])
        stored = [n for n in ledger.recorder.select_notifications(start=1, limit=1000)
                  if n.topic.endswith("ExpenseRecorded")]
    finally:
        ledger.close()

    assert answer.status_code == 500, answer.get_data(as_text=True)
    assert len(stored) == 1  # (it was stored: the answer is "unknown", not "refused")
