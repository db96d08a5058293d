"""Personal data never reaches the database files, a table dump, or a log line; erasure is final.

The names below are recognisable fakes: the test searches for them byte by byte.
"""

from __future__ import annotations

import base64
import logging
import pickle
import time
from pathlib import Path
from uuid import UUID

import pytest

from ledger.application import Ledger

NAME = "Zephyrine Quillfeather-Testcase"
EMAIL = "zephyrine.quill@example.invalid"
PHONE = "+44 7700 900417"
COMMUNITY = "Quillfeatherian Test Community"
NEED = "Quillfeather sign interpreter"
REFERENCE = "QUILL-REF-77813"
REASON = "Quillfeather private reason"
SECRETS = [NAME, EMAIL, PHONE, COMMUNITY, NEED, REFERENCE, REASON, "Quillfeather"]


def scrub_when_possible(ledger: Ledger) -> bool:
    """The erasure's scrub, retried for up to 10 s as the ledger itself retries it: any snapshot
    older than the erasure holds it back (another reader's, or on PostgreSQL an autovacuum
    worker's, which this suite's many schemas attract)."""
    return any(ledger.keys.scrub_if_pending() or time.sleep(0.5) for _ in range(20))


def _seed(ledger: Ledger):
    pid = ledger.register_participant(NAME, EMAIL, PHONE, [COMMUNITY], "phone", by="t")["id"]
    ledger.grant_consent(pid, "record", "1.0", "online", by="t")
    ledger.withdraw_consent(pid, "record", "phone", REASON, by="t")
    ledger.request_access_need(pid, "BSL interpreter", NEED, by="t")
    ledger.record_payment(pid, "conversation", "25.00", "bank_transfer", reference=REFERENCE,
                          by="t")
    return pid


def _forms(secret: str) -> list[bytes]:
    """The secret as it could sit in a file: raw, hex, UTF-16 and JSON-escaped, and in base64
    (standard and URL-safe) at each of the three alignments it can start at within a longer
    encoded value (the characters that do not depend on its neighbours)."""
    raw = secret.encode()
    forms = [raw, raw.hex().encode(), raw.hex().upper().encode(), secret.encode("utf-16-le"),
             secret.encode("utf-16-be")]
    for skip in (0, 1, 2):
        for encode in (base64.b64encode, base64.urlsafe_b64encode):
            forms.append(encode(raw[skip:])[:-4])
    assert all(len(f) >= 8 for f in forms)
    return forms


def _occurrences(blob: bytes) -> list[str]:
    return [s for s in SECRETS if any(form in blob for form in _forms(s))]


def test_the_scan_finds_a_secret_however_it_is_encoded_and_aligned():
    for s in SECRETS:
        for before in (b"", b"x", b"xy", b'{"name": "', b"\x00" * 12):
            whole = before + s.encode() + b'"}'
            for blob in (whole, base64.b64encode(whole), base64.urlsafe_b64encode(whole),
                         whole.hex().encode()):
                assert _occurrences(b"..." + blob + b"...") == [
                    x for x in SECRETS if x in s], (s, before)


def _sqlite_files(data_dir: Path) -> bytes:
    return b"".join(p.read_bytes() for p in sorted(data_dir.glob("ledger.sqlite3*")))


def _postgres_dump(ledger: Ledger) -> bytes:
    """Every row of every table in the ledger's schema, as text (bytea shows as hex)."""
    schema = ledger.factory.datastore.schema
    tables = [r["tablename"] for r in ledger.sql.query(
        "SELECT tablename FROM pg_tables WHERE schemaname = %s", (schema,))]
    assert tables
    dump = []
    for t in tables:
        for row in ledger.sql.query(f'SELECT t::text AS row FROM "{schema}"."{t}" t'):
            dump.append(row["row"])
    return "\n".join(dump).encode()


def _postgres_key_pages(ledger: Ledger, table: str = "ledger_data_keys") -> bytes:
    """The raw heap pages of a table (the keys table unless named), dead tuples included
    (pageinspect)."""
    schema = ledger.factory.datastore.schema
    ledger.sql.execute("CREATE EXTENSION IF NOT EXISTS pageinspect")
    pages = ledger.sql.query(
        "SELECT pg_relation_size(%s) / current_setting('block_size')::int AS n",
        (f'"{schema}".{table}',))[0]["n"]
    raw = b""
    for i in range(pages):
        raw += bytes(ledger.sql.query(
            "SELECT get_raw_page(%s, %s) AS page", (f'"{schema}".{table}', i)
        )[0]["page"])
    return raw


def _raw_store(ledger: Ledger, store_env) -> bytes:
    if "LEDGER_DATABASE_URL" in store_env:
        return (_postgres_dump(ledger) + _postgres_key_pages(ledger)
                + _postgres_key_pages(ledger, "ledger_idempotency"))
    return _sqlite_files(Path(store_env["LEDGER_DATA_DIR"]))


def test_personal_data_is_not_in_the_database_files_or_logs(ledger, store_env, caplog):
    caplog.set_level(logging.DEBUG)

    pid = _seed(ledger)
    ledger.views_at_least()  # the views (same database) hold this person's rows too
    listed = ledger.participants_page(limit=10, after=None)["items"]
    raw = _raw_store(ledger, store_env)

    assert [p["name"] for p in listed if p["id"] == pid] == [NAME]  # sealed in the view, opened here
    assert len(raw) > 10_000  # the scan really read the store (and, on SQLite, its WAL)
    assert _occurrences(raw) == []
    assert _occurrences(caplog.text.encode()) == []


def test_what_staff_send_through_the_api_stays_out_of_files_logs_and_error_bodies(
        ledger, store_env, caplog):
    """The same through the HTTP API, which alone fills some tables (the kept payment responses
    and their fingerprints) and alone answers refusals: a duplicate payment, a withdrawal of a
    choice never given, a key reused for another body and invalid input each carry personal
    data in their request, and none of it is in their answers, the store or the log."""
    from ledger.api import create_app

    caplog.set_level(logging.DEBUG)
    client = create_app({"LEDGER": ledger, "TESTING": True}).test_client()
    staff = {"Authorization": "Bearer " + ledger.tokens.create("staff", "privacy")[1]}
    refusals: list[tuple[int, bytes]] = []

    def post(path, body, key=None):
        headers = {**staff, **({"Idempotency-Key": key} if key else {})}
        r = client.post(f"/api/v1{path}", headers=headers, json=body)
        if r.status_code >= 400:
            refusals.append((r.status_code, r.get_data()))
        return r

    pid = post("/participants", {"name": NAME, "email": EMAIL, "phone": PHONE,
                                 "communities": [COMMUNITY]}).json["id"]
    post(f"/participants/{pid}/access-needs", {"category": "breaks", "detail": NEED})
    post(f"/participants/{pid}/consents", {"scope": "record", "form_version": "1.0",
                                           "method": "online"})
    post(f"/participants/{pid}/consents/record/withdrawal", {"channel": "phone",
                                                             "reason": REASON})
    pay = {"activity": "conversation", "amount": "25.00", "method": "bank_transfer",
           "reference": REFERENCE}
    paid = [post(f"/participants/{pid}/payments", pay, key).status_code
            for key in ("first", "first", "second")]
    post(f"/participants/{pid}/consents/store/withdrawal", {"channel": "phone",
                                                            "reason": REASON})
    post(f"/participants/{pid}/payments", {**pay, "reason": REASON}, "first")
    post("/participants", {"name": NAME, "email": f"{NAME} has no at sign"})
    ledger.views_at_least()
    raw = _raw_store(ledger, store_env)

    assert paid == [201, 201, 409]  # the same again, then another key for the same payment
    assert [status for status, _ in refusals] == [409, 409, 422, 422]
    assert _occurrences(b"\n".join(body for _, body in refusals)) == []
    assert len(raw) > 10_000 and _occurrences(raw) == []
    assert _occurrences(caplog.text.encode()) == []


def test_the_sqlite_wal_is_scanned_while_it_holds_the_latest_writes(tmp_path):
    ledger = Ledger({"LEDGER_DATA_DIR": str(tmp_path)})
    ledger.init_study()
    _seed(ledger)

    wal = tmp_path / "ledger.sqlite3-wal"

    assert wal.exists() and wal.stat().st_size > 0
    assert _occurrences(wal.read_bytes()) == []
    ledger.close()


def test_backups_and_what_a_restore_keeps_hold_no_personal_data_in_the_clear(tmp_path):
    """A backup, and the database a restore sets aside, are copies of the store: every file
    under the directory, once both have been made, is searched."""
    from tests.integration.test_backup import _run

    data = tmp_path / "data"
    assert _run(data, "init").returncode == 0
    ledger = Ledger({"LEDGER_DATA_DIR": str(data)})
    _seed(ledger)
    ledger.close()
    assert _run(data, "backup", str(tmp_path / "copy.sqlite3")).returncode == 0
    assert _run(data, "restore", str(tmp_path / "copy.sqlite3")).returncode == 0

    files = sorted(p for p in tmp_path.rglob("*") if p.is_file())
    names = {p.name for p in files}
    assert "copy.sqlite3" in names and any(n.startswith("ledger.sqlite3.before-restore-")
                                           for n in names)
    assert {p.name: _occurrences(p.read_bytes()) for p in files
            if _occurrences(p.read_bytes())} == {}


def test_after_erasure_the_name_cannot_be_recovered_even_with_the_master_key(ledger, store_env):
    pid = _seed(ledger)
    wrapped = bytes(ledger.sql.query(
        "SELECT wrapped FROM {t}ledger_data_keys WHERE participant_id = %s", (pid.hex,)
    )[0]["wrapped"])
    data_key = ledger.keys.get(pid)

    ledger.erase(pid, "participant asked", by="admin")
    scrubbed = scrub_when_possible(ledger)

    # 1. The data key is gone: not in the table, not in the raw store (files or dump).
    assert scrubbed and ledger.keys.get(pid) is None
    raw = _raw_store(ledger, store_env)
    for form in (wrapped, wrapped.hex().encode(), data_key, data_key.hex().encode()):
        assert form not in raw
    # 2. With the master key, the at-rest layer opens, but what is inside stays sealed.
    cipher = ledger.mapper.cipher
    opened = b"".join(cipher.decrypt(n.state)
                      for n in ledger.recorder.select_notifications(start=1, limit=1000))
    assert b"sealed" in opened
    assert _occurrences(opened) == []
    # 3. Reading gives the redaction marker, never the data and never an exception.
    assert ledger.participant(pid)["name"] == "[erased]"


def test_after_erasure_no_fingerprint_of_what_the_person_said_is_left_in_the_store(
        ledger, store_env):
    """A keyed request's fingerprint is a keyed digest of its body: for a registration, of the
    name, email and phone alone, so whoever holds the database and the master key could test
    whether a named person was here. Erasure drops them; on PostgreSQL the UPDATE that does it
    left the old row versions in the table's pages until the scrub rewrote that table too."""
    from ledger.api import create_app

    client = create_app({"LEDGER": ledger, "TESTING": True}).test_client()
    staff = {"Authorization": "Bearer " + ledger.tokens.create("staff", "privacy")[1]}
    pid = client.post("/api/v1/participants", headers={**staff, "Idempotency-Key": "reg-1"},
                      json={"name": NAME, "email": EMAIL, "phone": PHONE}).json["id"]
    assert client.post(f"/api/v1/participants/{pid}/access-needs",
                       headers={**staff, "Idempotency-Key": "need-1"},
                       json={"category": "breaks", "detail": NEED}).status_code == 201
    prints = [r["request_hash"] for r in ledger.sql.query(
        "SELECT request_hash FROM {t}ledger_idempotency")]  # (the keys are stored keyed)
    assert len(prints) == 2 and all(len(h) >= 32 for h in prints)
    assert all(h.encode() in _raw_store(ledger, store_env) for h in prints)  # (the scan sees them)

    ledger.erase(UUID(pid), "participant asked", by="admin")

    assert scrub_when_possible(ledger)
    raw = _raw_store(ledger, store_env)
    assert [h for h in prints if h.encode() in raw or bytes.fromhex(h) in raw] == []


def test_other_participants_are_untouched_by_an_erasure(ledger):
    keep = ledger.register_participant("Kept Person", "kept@example.invalid", by="t")["id"]
    gone = _seed(ledger)

    ledger.erase(gone, "asked", by="admin")

    assert ledger.participant(keep)["name"] == "Kept Person"
    assert ledger.participant(keep)["email"] == "kept@example.invalid"


@pytest.mark.parametrize("field", ["name", "email"])
def test_error_messages_never_repeat_personal_input(ledger, field):
    from ledger.domain.errors import InvalidText

    bad = {"name": "Quillfeather " * 30, "email": "Quillfeather no at sign"}[field]
    kwargs = {"name": NAME, "email": None, field: bad}

    with pytest.raises(InvalidText) as e:
        ledger.register_participant(kwargs["name"], kwargs["email"], by="t")

    assert "Quillfeather" not in str(e.value) and e.value.field == field


EVERY_FIELD = {
    "name": NAME, "email": EMAIL, "phone": PHONE, "community": COMMUNITY,
    "preferred": "Quillfeather-contact-by-owl", "need_category": "Quillfeather-category",
    "need_detail": NEED, "outcome_note": "Quillfeather-outcome-note",
    "withdraw_reason": REASON, "obligation_note": "Quillfeather-obligation-note",
    "decline_reason": "Quillfeather-decline-reason", "reduce_reason": "Quillfeather-reduce-why",
    "expense": "Quillfeather-expense-description", "reference": REFERENCE,
    "pay_reason": "Quillfeather-pay-reason", "reversal": "Quillfeather-reversal-reason",
    "erasure_reason": "Quillfeather-erasure-reason", "use_purpose": "Quillfeather-use-purpose",
}


def _seed_every_personal_field(ledger: Ledger):
    f = EVERY_FIELD
    pid = ledger.register_participant(f["name"], f["email"], f["phone"], [f["community"]],
                                      f["preferred"], by="t")["id"]
    need = ledger.request_access_need(pid, f["need_category"], f["need_detail"], by="t")
    ledger.record_access_outcome(pid, need, "partly_met", f["outcome_note"], by="t")
    ledger.grant_consent(pid, "record", "1.0", "online", by="t")
    withdrawal = ledger.withdraw_consent(pid, "record", "phone", f["withdraw_reason"], by="t")
    ledger.discharge_obligation(pid, withdrawal["obligations"][0]["id"], f["obligation_note"],
                                by="t")
    ledger.decline_payment(pid, "workshop", f["decline_reason"], by="t")
    ledger.reduce_payment(pid, "conversation", "10.00", f["reduce_reason"], by="t")
    ledger.record_expense(pid, "conversation", "3.20", "cash", f["expense"], by="t")
    pay = ledger.record_payment(pid, "conversation", "9.00", "cash", reference=f["reference"],
                                reason=f["pay_reason"], by="t")
    ledger.reverse_payment(pid, pay["id"], f["reversal"], by="t")
    ledger.record_use(pid, "record", f["use_purpose"], by="t")
    return pid


def _opened_states(ledger: Ledger) -> bytes:
    """Every event's state with the at-rest layer removed, as the master key allows."""
    return b"".join(ledger.mapper.cipher.decrypt(n.state)
                    for n in ledger.recorder.select_notifications(start=1, limit=10_000))


def test_every_personal_field_is_sealed_under_the_at_rest_layer(ledger):
    pid = _seed_every_personal_field(ledger)
    ledger.erase(pid, EVERY_FIELD["erasure_reason"], by="admin")

    opened = _opened_states(ledger)

    assert [k for k, v in EVERY_FIELD.items() if v.encode() in opened] == []


def test_every_personal_field_reads_back_until_erasure(ledger):
    pid = _seed_every_personal_field(ledger)

    text = repr(ledger.participant(pid))

    missing = [k for k, v in EVERY_FIELD.items() if k != "erasure_reason" and v not in text]
    assert missing == []


def test_the_declared_personal_fields_are_exactly_these():
    from ledger.domain import Participant, Payment
    from ledger.domain.base import personal_fields

    declared = {f"{cls.__qualname__}": personal_fields(cls).fields
                for agg in (Participant, Payment) for cls in vars(agg).values()
                if isinstance(cls, type) and personal_fields(cls) is not None}

    assert declared == {
        "Participant.Registered": ("name", "email", "phone", "communities", "preferred_contact"),
        "Participant.ConsentWithdrawn": ("reason",),
        "Participant.ObligationDischarged": ("note",),
        "Participant.AccessNeedRequested": ("category", "detail"),
        "Participant.AccessNeedOutcomeRecorded": ("note",),
        "Participant.PaymentDeclined": ("reason",),
        "Participant.PaymentReduced": ("reason",),
        "Participant.ExpenseRecorded": ("description",),
        "Participant.Erased": ("reason",),
        "Participant.StoryUsed": ("purpose",),
        "Payment.Recorded": ("reference", "reason"),
        "Payment.Reversed": ("reason",),
    }


def test_the_at_rest_layer_opens_only_with_this_master_key(ledger):
    import base64

    from eventsourcing.cryptography import AESCipher
    from eventsourcing.utils import Environment

    ledger.register_participant("Key Check", by="t")
    state = ledger.recorder.select_notifications(start=1, limit=1)[0].state
    wrong = AESCipher(Environment(env={"CIPHER_KEY": base64.b64encode(b"k" * 32).decode()}))

    assert ledger.mapper.cipher.decrypt(state).startswith(b"{")
    with pytest.raises(ValueError):
        wrong.decrypt(state)


def test_an_erasure_with_a_reader_open_finishes_its_scrub_once_the_reader_leaves(tmp_path):
    import sqlite3

    ledger = Ledger({"LEDGER_DATA_DIR": str(tmp_path)})
    ledger.init_study()
    pid = _seed(ledger)
    wrapped = bytes(ledger.sql.query(
        "SELECT wrapped FROM ledger_data_keys WHERE participant_id = %s", (pid.hex,)
    )[0]["wrapped"])
    reader = sqlite3.connect(tmp_path / "ledger.sqlite3", isolation_level=None)
    reader.execute("BEGIN")
    reader.execute("SELECT COUNT(*) FROM stored_events").fetchall()  # holds a snapshot open

    ledger.erase(pid, "asked", by="admin")
    pending = ledger.sql.query("SELECT name FROM ledger_meta WHERE name = %s",
                               ("erasure_scrub_pending",))
    reader.execute("COMMIT")
    reader.close()
    finished = scrub_when_possible(ledger)

    assert pending and finished
    assert wrapped not in _sqlite_files(tmp_path)
    ledger.close()


def test_a_scrub_left_pending_by_a_reader_finishes_on_its_own_once_the_reader_leaves(
        store_env, tmp_path, monkeypatch):
    """No further erasure, restart or call needed: the views' follower retries the scrub."""
    import sqlite3

    import psycopg

    import ledger.application
    from tests.conftest import PG_URL

    monkeypatch.setattr(ledger.application, "SCRUB_RETRY_S", 0.3)
    lg = Ledger(store_env)
    lg.init_study()
    pid = _seed(lg)
    postgres = "LEDGER_DATABASE_URL" in store_env
    keys = "{t}ledger_data_keys"
    wrapped = bytes(lg.sql.query(f"SELECT wrapped FROM {keys} WHERE participant_id = %s",
                                 (pid.hex,))[0]["wrapped"])
    if postgres:
        reader = psycopg.connect(PG_URL.split("?")[0])
        reader.execute(f"SELECT COUNT(*) FROM {lg.sql.prefix}ledger_data_keys").fetchall()
    else:
        reader = sqlite3.connect(tmp_path / "data" / "ledger.sqlite3", isolation_level=None)
        reader.execute("BEGIN")
        reader.execute("SELECT COUNT(*) FROM stored_events").fetchall()
    try:
        lg.erase(pid, "asked", by="admin")
        pending = bool(lg.sql.query("SELECT name FROM {t}ledger_meta WHERE name = %s",
                                    ("erasure_scrub_pending",)))
    finally:
        reader.rollback() if postgres else reader.execute("COMMIT")
        reader.close()
    deadline = time.monotonic() + 20
    while lg.sql.query("SELECT name FROM {t}ledger_meta WHERE name = %s",
                       ("erasure_scrub_pending",)) and time.monotonic() < deadline:
        time.sleep(0.1)
    left = lg.sql.query("SELECT name FROM {t}ledger_meta WHERE name = %s",
                        ("erasure_scrub_pending",))

    try:
        assert pending and not left
        on_disk = _postgres_key_pages(lg) if postgres else _sqlite_files(tmp_path / "data")
        assert wrapped not in on_disk
    finally:
        lg.close()


@pytest.mark.postgres
def test_a_postgres_erasure_does_not_hang_behind_a_reader_and_scrubs_later(pg_schema, tmp_path):
    import time

    import psycopg

    from tests.conftest import PG_URL

    env = {"LEDGER_DATA_DIR": str(tmp_path),
           "LEDGER_DATABASE_URL": f"{PG_URL.split('?')[0]}?schema={pg_schema}"}
    ledger = Ledger(env)
    ledger.init_study()
    pid = _seed(ledger)
    wrapped = bytes(ledger.sql.query(
        "SELECT wrapped FROM {t}ledger_data_keys WHERE participant_id = %s", (pid.hex,)
    )[0]["wrapped"])
    with psycopg.connect(PG_URL.split("?")[0]) as reader:
        reader.execute(f'SELECT COUNT(*) FROM "{pg_schema}".ledger_data_keys').fetchall()
        started = time.monotonic()
        ledger.erase(pid, "asked", by="admin")  # the reader's transaction is still open
        took = time.monotonic() - started
        pending = not ledger.keys.scrub_if_pending()
    finished = scrub_when_possible(ledger)

    assert took < 10 and pending and finished
    assert wrapped not in _postgres_key_pages(ledger)
    ledger.close()


def _held_in_memory(ledger: Ledger) -> bytes:
    """Every aggregate the process keeps in its command and read caches, pickled."""
    blobs = []
    for repository in (ledger.repository, ledger._reader):
        for link in list(repository.cache.cache.values()):  # LRUCache: [prev, next, key, value]
            blobs.append(pickle.dumps(link[3]))
    return b"".join(blobs)


def test_no_cached_aggregate_keeps_personal_data_in_plaintext(ledger):
    """The library caches the aggregate a command changed; given a name or a reason in
    plaintext, that copy would keep it in the process (past an erasure made by another)."""
    pid = _seed(ledger)
    ledger.participant(pid)  # a read opens the fields for its answer, not for the cache

    held = _held_in_memory(ledger)

    assert b"Participant" in held  # the caches do hold the person, sealed
    assert _occurrences(held) == []


def test_the_erasure_receipt_names_the_copies_beyond_the_ledgers_reach(ledger):
    """On PostgreSQL the server's write-ahead log keeps the wrapped key's bytes (found in the
    security review: read back from pg_wal after the erasure and its VACUUM FULL), as do its
    archive and replicas: the receipt says so, as it says so of backups."""
    pid = ledger.register_participant("Receipt Person", by="t")["id"]

    erased = ledger.erase(pid, "asked", by="admin")["receipt"]["erased"]

    assert "Backups taken before the erasure still hold the key" in erased
    assert ("write-ahead log" in erased) == ledger.sql.is_postgres
