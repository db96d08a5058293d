"""Tamper evidence: `ledger verify` holds the stored events against the leaves recorded when each
was first seen and against every signed checkpoint, on each store; every way of altering the
record is caught and named by its first bad position, every time."""

from __future__ import annotations

import base64
import json
from uuid import UUID

import pytest
from cryptography.hazmat.primitives import serialization

from ledger.application import Ledger
from ledger.audit.checkpoints import CHECKPOINTS, checkpoint_message

from .test_cli import _run


def _history(store_env) -> tuple[Ledger, int]:
    """A small log with checkpoints signed along the way; returns the ledger and its size."""
    lg = Ledger({**store_env, "LEDGER_PROJECTIONS": "external"})
    lg.init_study(by="t")
    for i in range(6):
        pid = lg.register_participant(f"Verify Person {i}", by="t")["id"]
        lg.grant_consent(pid, "take_part", "1.0", "online", by="t")
        if i % 2:
            lg.merkle.checkpoint()
    lg.record_payment(pid, "conversation", "25.00", "cash", by="t")
    cp = lg.merkle.checkpoint()
    return lg, cp["size"]


def _events(lg: Ledger) -> str:
    return lg.recorder.events_table_name


def _column(lg: Ledger) -> str:
    return "notification_id" if lg.sql.is_postgres else "rowid"


def _rows(lg: Ledger) -> list[tuple]:
    col = _column(lg)
    rows = lg.sql.query(f"SELECT {col}, originator_id, originator_version, topic, state "
                        f"FROM {{t}}{_events(lg)} ORDER BY {col}")
    return [tuple(r.values()) if isinstance(r, dict) else tuple(r) for r in rows]


def _verify(store_env):
    result = _run(store_env, "verify")
    return result.returncode, result.stdout + result.stderr


def test_an_untouched_log_verifies(store_env):
    lg, size = _history(store_env)
    lg.close()

    code, out = _verify(store_env)

    assert code == 0, out
    assert f"OK: {size} events" in out


def _flip_a_byte(lg: Ledger, position: int) -> None:
    ident, *_, state = _rows(lg)[position - 1]
    state = bytearray(state)
    state[len(state) // 2] ^= 0x01
    lg.sql.execute(f"UPDATE {{t}}{_events(lg)} SET state = %s WHERE {_column(lg)} = %s",
                   (bytes(state), ident))


def _delete(lg: Ledger, position: int) -> None:
    ident = _rows(lg)[position - 1][0]
    lg.sql.execute(f"DELETE FROM {{t}}{_events(lg)} WHERE {_column(lg)} = %s", (ident,))


def _swap(lg: Ledger, position: int) -> None:
    """Exchange the contents of the events at ``position`` and the one after it."""
    rows = _rows(lg)
    a, b = rows[position - 1], rows[position]
    col = _column(lg)
    with lg.sql.transaction() as c:
        c.execute(f"UPDATE {{t}}{_events(lg)} SET originator_version = -1 WHERE {col} = %s",
                  (a[0],))
        c.execute(f"UPDATE {{t}}{_events(lg)} SET originator_id = %s, originator_version = %s, "
                  f"topic = %s, state = %s WHERE {col} = %s", (*a[1:], b[0]))
        c.execute(f"UPDATE {{t}}{_events(lg)} SET originator_id = %s, originator_version = %s, "
                  f"topic = %s, state = %s WHERE {col} = %s", (*b[1:], a[0]))


def _truncate(lg: Ledger, position: int) -> None:
    ident = _rows(lg)[position - 1][0]
    lg.sql.execute(f"DELETE FROM {{t}}{_events(lg)} WHERE {_column(lg)} >= %s", (ident,))


@pytest.mark.parametrize(("tamper", "position"), [
    (_flip_a_byte, 1), (_flip_a_byte, 9), (_delete, 5), (_delete, 1), (_swap, 3), (_swap, 12),
    (_truncate, 10),
])
def test_every_change_to_the_stored_events_is_caught_at_its_position(store_env, tamper, position):
    lg, size = _history(store_env)
    tamper(lg, position)
    lg.close()

    code, out = _verify(store_env)

    assert code == 1, out
    assert f"first bad position {position} " in out


@pytest.mark.parametrize(("tamper", "position"), [
    (_flip_a_byte, 1), (_flip_a_byte, 9), (_flip_a_byte, 14), (_delete, 5), (_delete, 11),
    (_swap, 3), (_swap, 12), (_truncate, 10),
])
def test_a_change_is_caught_at_its_position_on_any_page(store_env, monkeypatch, tamper,
                                                        position):
    """The same, reading the log four events a page, as a large log is read: a change beyond
    the first page is still named exactly."""
    import ledger.audit.checkpoints as checkpoints

    lg, size = _history(store_env)
    assert size > 12
    tamper(lg, position)
    monkeypatch.setattr(checkpoints, "PAGE", 4)
    try:
        verdict = checkpoints.verify(lg.merkle)
    finally:
        lg.close()

    assert not verdict.ok and verdict.first_bad_position == position, verdict.problems


def test_an_event_changed_together_with_its_recorded_leaf_is_caught_by_the_checkpoints(store_env):
    lg, size = _history(store_env)
    changed = 7
    _flip_a_byte(lg, changed)
    from ledger.audit.checkpoints import _leaf

    n = lg.recorder.select_notifications(start=_rows(lg)[changed - 1][0], limit=1)[0]
    lg.sql.execute("UPDATE {t}ledger_merkle_leaves SET hash = %s WHERE idx = %s",
                   (_leaf(n).hex(), changed - 1))
    cps = [cp["size"] for cp in lg.merkle.checkpoints()]
    lg.close()

    code, out = _verify(store_env)

    held = max(s for s in cps if s < changed)  # the last checkpoint before still holds
    covering = min(s for s in cps if s >= changed)
    assert code == 1, out
    assert f"first bad position {held + 1} " in out
    assert f"checkpoint at size {covering}: the log's root differs; an event in positions " \
           f"{held + 1} to {covering} was changed" in out


def _cut_everything_after(lg: Ledger, keep: int) -> None:
    """What someone with write access to the database could do: cut the log short together
    with the leaves and the signed checkpoints recorded for what was cut."""
    _truncate(lg, keep + 1)
    lg.sql.execute("DELETE FROM {t}ledger_merkle_leaves WHERE idx >= %s", (keep,))
    lg.sql.execute(f"DELETE FROM {{t}}{CHECKPOINTS} WHERE size > %s", (keep,))
    lg.sql.execute("DELETE FROM {t}ledger_verifications WHERE size > %s", (keep,))
    lg.sql.execute("UPDATE {t}ledger_merkle_tracking SET size = %s, last_id = %s, stack = %s",
                   (keep, _rows(lg)[-1][0], _stack_at(lg, keep)))


def _stack_at(lg: Ledger, size: int) -> str:
    from ledger.audit.checkpoints import _leaf
    from ledger.audit.merkle import RootBuilder

    builder = RootBuilder()
    for n in lg.recorder.select_notifications(start=1, limit=size):
        builder.append(_leaf(n))
    return builder.state()[1].hex()


def test_a_log_cut_short_with_its_checkpoints_is_caught_by_a_checkpoint_kept_outside(
        store_env, tmp_path):
    lg, size = _history(store_env)
    kept = tmp_path / "checkpoint.json"
    kept.write_text(json.dumps(lg.merkle.checkpoint()))  # what an auditor took home
    _cut_everything_after(lg, size - 3)
    lg.close()

    alone = _verify(store_env)
    held = _run(store_env, "verify", "--checkpoint", str(kept))
    lg = Ledger({**store_env, "LEDGER_PROJECTIONS": "external"})
    last_held = max(cp["size"] for cp in lg.merkle.checkpoints())  # (the cut end, signed since)
    lg.close()

    assert alone[0] == 0, alone[1]  # inside the database nothing is left to disagree
    assert held.returncode == 1, held.stdout + held.stderr
    # Cut short and an event taken out of the middle look alike from here: the first bad
    # position is the first after the last signed point that held.
    assert f"first bad position {last_held + 1} " in held.stderr
    assert (f"a signed checkpoint covers {size}: an event in positions {last_held + 1} to "
            f"{size} was removed or changed") in held.stderr


def _take_out_and_rehash(lg: Ledger, position: int) -> None:
    """What someone with write access to the database, and no key, could do: delete one event
    from the middle of the log, hash the log again as it now is, and delete the signed
    checkpoints from that position on (which no longer hold)."""
    _delete(lg, position)
    lg.sql.execute("DELETE FROM {t}ledger_merkle_leaves")
    lg.sql.execute("UPDATE {t}ledger_merkle_tracking SET size = 0, last_id = 0, stack = ''")
    lg.sql.execute(f"DELETE FROM {{t}}{CHECKPOINTS} WHERE size >= %s", (position,))
    lg.merkle.catch_up()


def test_an_event_taken_out_of_the_middle_is_caught_by_an_earlier_verifications_record(
        store_env):
    """The signed record of a verification that passed says what the log's root was at its size:
    with the checkpoints after the change deleted and the leaves hashed again, it is what is
    left to disagree, also once the ledger has signed a checkpoint over the altered log."""
    lg, size = _history(store_env)
    lg.close()
    assert _verify(store_env)[0] == 0  # (recorded, signed, at the full size)
    lg = Ledger({**store_env, "LEDGER_PROJECTIONS": "external"})
    taken = size - 4
    _take_out_and_rehash(lg, taken)
    last_held = max(cp["size"] for cp in lg.merkle.checkpoints())
    lg.close()

    code, out = _verify(store_env)

    assert code == 1, out
    assert f"first bad position {last_held + 1} " in out
    assert (f"a signed verification record covers {size}: an event in positions "
            f"{last_held + 1} to {size} was removed or changed") in out

    lg = Ledger({**store_env, "LEDGER_PROJECTIONS": "external"})
    try:
        pid = lg.register_participant("After The Change", by="t")["id"]
        lg.grant_consent(pid, "take_part", "1.0", "online", by="t")  # the log is longer again
        lg.merkle.checkpoint()  # and signed over, as a running server would
    finally:
        lg.close()

    code, out = _verify(store_env)

    assert code == 1, out
    assert "the verification at " in out and f"at size {size}: the log's root differs" in out


def test_a_forged_verification_record_fails_verify(store_env):
    lg, size = _history(store_env)
    lg.close()
    assert _verify(store_env)[0] == 0
    lg = Ledger({**store_env, "LEDGER_PROJECTIONS": "external"})
    lg.sql.execute("UPDATE {t}ledger_verifications SET root = %s", ("00" * 32,))
    lg.close()

    code, out = _verify(store_env)

    assert code == 1, out
    assert "the record of the verification at " in out and "signature does not match" in out


GOOD_ROOT, GOOD_SIG = "ab" * 32, base64.b64encode(b"\x01" * 64).decode()


@pytest.mark.parametrize("content", [
    "not json", "[]", '{"size": "7"}',
    json.dumps({"size": -1, "root": "aa", "time": "x", "signature": "y"}),  # (the review's)
    json.dumps({"size": True, "root": GOOD_ROOT, "time": "2026-12-01T00:00:00+00:00",
                "signature": GOOD_SIG}),
    json.dumps({"size": 3, "root": "aa", "time": "2026-12-01T00:00:00+00:00",
                "signature": GOOD_SIG}),
    json.dumps({"size": 3, "root": GOOD_ROOT, "time": "yesterday", "signature": GOOD_SIG}),
    json.dumps({"size": 3, "root": GOOD_ROOT, "time": "2026-12-01T00:00:00+00:00",
                "signature": "not base64!"})])
def test_a_malformed_kept_checkpoint_is_refused_clearly_and_not_recorded(store_env, tmp_path,
                                                                         content):
    """A file that is plainly not a checkpoint is refused before the log is read (exit 2).
    Before, one with a negative size was checked, failed, and recorded as the ledger's last
    verification: every report showed a sound log as failed until the next clean run."""
    lg = _history(store_env)[0]
    before = lg.merkle.last_verification()
    lg.close()
    kept = tmp_path / "checkpoint.json"
    kept.write_text(content)

    result = _run(store_env, "verify", "--checkpoint", str(kept))

    assert result.returncode == 2 and "--checkpoint" in result.stderr
    assert "Traceback" not in result.stderr
    lg = Ledger({**store_env, "LEDGER_PROJECTIONS": "external"})
    try:
        assert lg.merkle.last_verification() == before
    finally:
        lg.close()


def test_a_kept_checkpoint_that_holds_is_counted(store_env, tmp_path):
    lg, size = _history(store_env)
    kept = tmp_path / "checkpoint.json"
    kept.write_text(json.dumps(lg.merkle.checkpoint()))
    stored = len(list(lg.merkle.checkpoints()))
    lg.close()

    result = _run(store_env, "verify", "--checkpoint", str(kept))

    assert result.returncode == 0, result.stderr
    assert f"{stored + 1} signed checkpoints hold" in result.stdout


@pytest.mark.parametrize("field", ["signature", "root", "time"])
def test_a_kept_checkpoint_whose_signature_does_not_hold_is_refused_as_such(
        store_env, tmp_path, field):
    """A kept checkpoint counts only if this ledger's key signed it: one changed after it was
    kept (its signature, or what the signature covers) fails verify as a bad signature, not
    as a changed log."""
    lg, size = _history(store_env)
    cp = lg.merkle.checkpoint()
    lg.close()
    changed = {"signature": base64.b64encode(b"\x01" * 64).decode(), "root": "00" * 32,
               "time": "2020-01-01T00:00:00+00:00"}[field]
    kept = tmp_path / "checkpoint.json"
    kept.write_text(json.dumps({**cp, field: changed}))

    result = _run(store_env, "verify", "--checkpoint", str(kept))

    out = result.stdout + result.stderr
    assert result.returncode == 1, out
    assert "FAILED: a kept checkpoint is not signed by the key it names" in out
    assert f"kept checkpoint at size {cp['size']}: signature does not match" in out
    assert "an event was changed" not in out
    # The log was not checked against it: the ledger's last verification is not this one (a
    # review found a sound log shown as failed in every report after such a file)
    lg = Ledger({**store_env, "LEDGER_PROJECTIONS": "external"})
    try:
        assert lg.merkle.last_verification() is None
    finally:
        lg.close()


def test_a_kept_checkpoint_of_another_ledger_is_reported_not_recorded(store_env, tmp_path):
    """Validly signed, but with another ledger's key: it cannot be held against this log (a
    review found it failed a sound log as "an event was changed", recorded so that every
    report then showed the log failed)."""
    lg, size = _history(store_env)
    lg.close()
    other_dir = tmp_path / "other"
    other = Ledger({"LEDGER_DATA_DIR": str(other_dir)})
    try:
        other.init_study(by="t")
        kept = tmp_path / "checkpoint.json"
        kept.write_text(json.dumps(other.merkle.checkpoint()))
    finally:
        other.close()

    result = _run(store_env, "verify", "--checkpoint", str(kept))

    out = result.stdout + result.stderr
    assert result.returncode == 1, out
    assert "signed with another key than this ledger's" in out
    assert "was changed" not in out and "The log was not checked against it" in out
    lg = Ledger({**store_env, "LEDGER_PROJECTIONS": "external"})
    try:
        assert lg.merkle.last_verification() is None
    finally:
        lg.close()
    assert _run(store_env, "verify").returncode == 0


@pytest.mark.parametrize("field", ["root", "size", "time", "signature"])
def test_a_tampered_checkpoint_is_caught(store_env, field):
    lg, size = _history(store_env)
    cp = lg.merkle.latest()
    assert cp is not None
    new = {"root": "00" * 32, "size": cp["size"] + 1000, "time": "2020-01-01T00:00:00+00:00",
           "signature": base64.b64encode(b"\x01" * 64).decode()}[field]
    lg.sql.execute(f"UPDATE {{t}}{CHECKPOINTS} SET {field} = %s WHERE size = %s",
                   (new, cp["size"]))
    lg.close()

    code, out = _verify(store_env)

    assert code == 1, out
    assert "FAILED: a signed checkpoint does not hold" in out
    assert "signature does not match" in out


def test_an_auditor_checks_a_checkpoint_with_only_the_public_key(store_env):
    """What the README shows: the exported key and `cryptography` are all it takes."""
    lg, size = _history(store_env)
    cp = lg.merkle.checkpoint()
    lg.close()
    pem = _run(store_env, "verify", "--public-key").stdout

    key = serialization.load_pem_public_key(pem.encode())
    message = json.dumps({"root": cp["root"], "size": cp["size"], "time": cp["time"]},
                         sort_keys=True, separators=(",", ":")).encode()
    key.verify(base64.b64decode(cp["signature"]), message)  # raises if it does not hold
    assert message == checkpoint_message(cp["size"], cp["root"], cp["time"])
    assert cp["size"] == size


def test_checkpoints_are_signed_by_themselves_while_writes_go_on(store_env):
    import time

    lg = Ledger(store_env)  # inline: the follower thread hashes new events and signs
    lg.init_study(by="t")
    pid = lg.register_participant("Auto Checkpoint", by="t")["id"]
    deadline = time.monotonic() + 10
    while (lg.merkle.latest() or {}).get("size", 0) < lg.recorder.max_notification_id() \
            and time.monotonic() < deadline:
        time.sleep(0.05)
    first = lg.merkle.latest()
    lg.grant_consent(pid, "take_part", "1.0", "online", by="t")
    assert first is not None
    while (lg.merkle.latest() or {}).get("size", 0) < first["size"] + 1 \
            and time.monotonic() < deadline + 5:
        time.sleep(0.05)
    second = lg.merkle.latest()
    lg.close()

    assert second is not None
    assert second["size"] == first["size"] + 1  # the later write got its own checkpoint
    assert _verify(store_env)[0] == 0


def test_erasure_leaves_the_log_verifiable(store_env):
    lg, size = _history(store_env)
    pid = lg.participant_ids()[0]
    lg.erase(pid, "asked to be forgotten", by="admin")
    lg.merkle.checkpoint()
    lg.close()

    code, out = _verify(store_env)

    assert code == 0, out
    assert f"OK: {size + 1} events" in out


# (column, value, stores that take it): SQLite keeps any value in any column; PostgreSQL's
# columns keep their types, but the state and the topic may be NULL. The library cannot read
# such a row at all (a TypeError or a ValueError, not a decoding error).
class Expr(str):
    """An SQL expression to set a column to (rather than a value)."""


BOTH, SQLITE = {"sqlite", "postgres"}, {"sqlite"}
REWRITES = [
    pytest.param("state", "tampered as text", SQLITE, id="state-text"),
    pytest.param("state", None, BOTH, id="state-null"),
    pytest.param("topic", None, BOTH, id="topic-null"),
    pytest.param("originator_id", "not an id", SQLITE, id="id-text"),
    pytest.param("originator_version", "seven", SQLITE, id="version-text"),
    pytest.param("originator_version", Expr("-originator_version"), BOTH, id="version-negative"),
    pytest.param("originator_version", 0, BOTH, id="version-zero"),
    # text that is not UTF-8: Python's sqlite3 cannot read the row at all (OperationalError)
    pytest.param("state", Expr("CAST(x'ff00' AS TEXT)"), SQLITE, id="state-not-utf8"),
    pytest.param("topic", Expr("CAST(x'ff' AS TEXT)"), SQLITE, id="topic-not-utf8"),
    # topics the library would resolve (importing what they name) or that do not fit the state
    pytest.param("topic", "ledger:Participant.Nope", BOTH, id="topic-unknown"),
    pytest.param("topic", "", BOTH, id="topic-empty"),
    pytest.param("topic", "ledger:Study.RateSet", BOTH, id="topic-another-class"),
]
# Rows the library reads as if whole: the same UUID, so the same hash; but the aggregate's own
# history is matched by the id's exact text, and no longer holds the event.
SAME_HASH = [
    pytest.param("originator_id", Expr("upper(originator_id)"), SQLITE, id="id-capitals"),
    pytest.param("originator_id", Expr("substr(originator_id, 1, 8) || '-' || "
                                       "substr(originator_id, 9)"), SQLITE, id="id-hyphen"),
]


def _rewrite(lg: Ledger, position: int, column: str, value: object, stores: set[str]) -> None:
    if ("postgres" if lg.sql.is_postgres else "sqlite") not in stores:
        lg.close()
        pytest.skip("this store's column does not take that value")
    ident = _rows(lg)[position - 1][0]
    if isinstance(value, Expr):
        lg.sql.execute(f"UPDATE {{t}}{_events(lg)} SET {column} = {value} "
                       f"WHERE {_column(lg)} = %s", (ident,))
    else:
        lg.sql.execute(f"UPDATE {{t}}{_events(lg)} SET {column} = %s WHERE {_column(lg)} = %s",
                       (value, ident))


@pytest.mark.parametrize(("column", "value", "stores"), REWRITES + SAME_HASH)
def test_an_event_rewritten_with_a_value_the_library_cannot_read_is_caught_at_its_position(
        store_env, column, value, stores):
    """A row the library cannot even read (it raised TypeError or ValueError, and verify failed
    with "unexpected TypeError"), or reads as if whole though the ledger never writes it so, is
    named at its position, like any other change."""
    lg, size = _history(store_env)
    _rewrite(lg, 7, column, value, stores)
    lg.close()

    code, out = _verify(store_env)

    assert code == 1, out
    assert "Traceback" not in out and "unexpected" not in out, out
    assert "first bad position 7 " in out


@pytest.mark.parametrize(("column", "value", "stores"), [
    *REWRITES, pytest.param("flip", None, {"sqlite", "postgres"}, id="state-flipped")])
def test_a_past_report_over_a_changed_event_names_its_position(store_env, column, value, stores):
    """A report of a past moment replays the log: an event it cannot read stops it with the
    position to look at, not "unexpected TypeError"."""
    from datetime import UTC, datetime, timedelta

    lg, size = _history(store_env)
    if column == "flip":
        _flip_a_byte(lg, 7)
    else:
        _rewrite(lg, 7, column, value, stores)
    lg.close()
    moment = (datetime.now(UTC) + timedelta(seconds=1)).isoformat()

    result = _run(store_env, "report", "--as-of", moment)

    assert result.returncode == 1, result.stdout
    assert "Traceback" not in result.stderr and "unexpected" not in result.stderr
    assert "the event at position 7 cannot be read" in result.stderr, result.stderr


@pytest.mark.parametrize(("column", "value", "stores"),
                         [p for p in REWRITES if "utf8" not in str(p.id)])
def test_a_rebuild_by_workers_names_the_position_of_an_event_it_cannot_read(
        store_env, column, value, stores):
    """The workers read their share of the log themselves: a row they could not read failed
    the rebuild as "unexpected WorkerFailed"."""
    lg, size = _history(store_env)
    _rewrite(lg, 7, column, value, stores)
    lg.close()

    result = _run(store_env, "projections", "rebuild", "--workers", "2")

    assert result.returncode == 1, result.stdout
    assert "unexpected" not in result.stderr and "Traceback" not in result.stderr
    assert "position 7" in result.stderr, result.stderr


@pytest.mark.parametrize("change", [
    "topic = 'ledger:Participant.Erased', state = NULL",  # an erasure event that cannot be read
    "originator_version = 99", "originator_version = 0",  # an erased person's own history
    "topic = 'ledger:Participant.Nope'"])
def test_verify_opens_a_ledger_whose_erasure_or_erased_person_was_changed(store_env, change):
    """Opening a ledger finishes interrupted erasures, reading every erasure event and each
    erased person's record: one that cannot be read stopped `ledger verify` itself from
    running ("unexpected OriginatorVersionError")."""
    lg, size = _history(store_env)
    erased = str(_rows(lg)[6][1])
    lg.erase(UUID(erased), "asked to be forgotten", by="admin")
    lg.merkle.checkpoint()
    target = _rows(lg)[6][0] if "Erased" in change else lg.sql.query(
        f"SELECT {_column(lg)} AS id FROM {{t}}{_events(lg)} WHERE originator_id = %s "
        "AND originator_version = 2", (erased if lg.sql.is_postgres else UUID(erased).hex,))[0]["id"]
    lg.sql.execute(f"UPDATE {{t}}{_events(lg)} SET {change} WHERE {_column(lg)} = %s", (target,))
    lg.close()

    code, out = _verify(store_env)

    assert code == 1, out
    assert "unexpected" not in out and f"first bad position {target} " in out, out


@pytest.mark.parametrize("digits", [0xFF10, 0x0660], ids=["fullwidth", "arabic-indic"])
def test_an_id_written_with_other_unicode_digits_is_caught(store_env, digits):
    """Python's UUID reads any Unicode decimal digit: an id with one of its digits rewritten as
    another script's reads as the same UUID and hashes the same, yet drops out of the person's
    history (matched by exact text). SQLite only: PostgreSQL's ids are a uuid column."""
    lg, size = _history(store_env)
    if lg.sql.is_postgres:
        lg.close()
        pytest.skip("a uuid column")
    ident, oid = _rows(lg)[6][:2]
    i = next(i for i, c in enumerate(oid) if c.isdigit())
    changed = oid[:i] + chr(digits + int(oid[i])) + oid[i + 1:]
    assert UUID(changed) == UUID(oid) and changed != oid
    lg.sql.execute(f"UPDATE {{t}}{_events(lg)} SET originator_id = %s WHERE rowid = %s",
                   (changed, ident))
    lg.close()

    code, out = _verify(store_env)

    assert code == 1, out
    assert "first bad position 7 " in out and "form the ledger never writes" in out, out


def test_a_locked_database_is_not_reported_as_an_unreadable_event(store_env, monkeypatch):
    """Reading falls back to the rows as stored only for an error that a row's values can
    cause: a lock (or any other operational error) is raised as it is, even with a changed row
    on the page."""
    import sqlite3

    from eventsourcing.persistence import OperationalError

    lg, size = _history(store_env)
    _rewrite(lg, 7, "state", None, BOTH)

    def locked(*args, **kwargs):
        raise (sqlite3.OperationalError if not lg.sql.is_postgres else OperationalError)(
            "database is locked")

    monkeypatch.setattr(lg.recorder, "select_notifications", locked)
    try:
        with pytest.raises(Exception) as caught:
            lg.sql.read_page(lg.recorder, 1, 100)
    finally:
        monkeypatch.undo()
        lg.close()

    assert "locked" in str(caught.value) and type(caught.value).__name__ == "OperationalError"


def test_a_write_command_leaves_its_events_hashed_and_signed(store_env):
    """`ledger demo` used to exit with its last events neither hashed nor signed, for the next
    process to hash as it then found them (an event deleted meanwhile went unseen for good)."""
    for command in ("init", "demo"):
        assert _run(store_env, command).returncode == 0

    lg = Ledger({**store_env, "LEDGER_PROJECTIONS": "external"})
    size = lg.recorder.max_notification_id()
    hashed = lg.merkle._state()[0]
    latest = lg.merkle.latest()
    lg.close()
    code, out = _verify(store_env)

    assert size and hashed == size and latest is not None and latest["size"] == size
    assert code == 0 and "Not yet under a signed checkpoint" not in out, out


def _more_after_the_last_checkpoint(lg: Ledger) -> int:
    """Two events hashed but under no signed checkpoint; returns the first one's position."""
    first = lg.merkle.latest()["size"] + 1
    pid = lg.register_participant("Unsigned Person", by="t")["id"]
    lg.grant_consent(pid, "take_part", "1.0", "online", by="t")
    lg.merkle.catch_up()
    return first


def test_verify_names_the_events_no_signed_checkpoint_covers_yet(store_env):
    lg, _ = _history(store_env)
    first = _more_after_the_last_checkpoint(lg)
    lg.close()  # (which signs them: a checkpoint deleted since, or never signed, is the case)
    lg = Ledger({**store_env, "LEDGER_PROJECTIONS": "external"})
    lg.sql.execute(f"DELETE FROM {{t}}{CHECKPOINTS} WHERE size >= %s", (first,))
    lg.close()

    code, out = _verify(store_env)

    assert code == 0, out
    assert f"Not yet under a signed checkpoint: events {first} to {first + 1}" in out


def test_an_event_changed_with_its_leaf_after_the_last_checkpoint_is_caught(store_env):
    """No signed checkpoint covers it; the ledger's record of the tree it hashed still does."""
    from ledger.audit.checkpoints import _leaf

    lg, size = _history(store_env)
    changed = _more_after_the_last_checkpoint(lg)
    _flip_a_byte(lg, changed)
    n = lg.recorder.select_notifications(start=_rows(lg)[changed - 1][0], limit=1)[0]
    lg.sql.execute("UPDATE {t}ledger_merkle_leaves SET hash = %s WHERE idx = %s",
                   (_leaf(n).hex(), changed - 1))
    lg.close()

    code, out = _verify(store_env)

    assert code == 1, out
    assert f"first bad position {changed} " in out
    assert f"an event in positions {size + 1} to {changed + 1} was changed" in out


def test_recorded_hashes_deleted_after_the_last_checkpoint_are_caught(store_env):
    lg, _ = _history(store_env)
    first = _more_after_the_last_checkpoint(lg)
    lg.sql.execute("DELETE FROM {t}ledger_merkle_leaves WHERE idx >= %s", (first - 1,))
    lg.close()

    code, out = _verify(store_env)

    assert code == 1, out
    assert f"first bad position {first} " in out and "recorded hash is missing" in out


def test_a_row_hidden_below_the_first_notification_id_is_caught(store_env):
    """A row with notification id 0 (or below) is not in the log the Merkle tree is built
    from, but the aggregate's history reads it: a consent could be slipped in there."""
    lg, size = _history(store_env)
    ident, originator, version, topic, state = _rows(lg)[3]
    last = max(r[2] for r in _rows(lg) if r[1] == originator)
    col = _column(lg)
    lg.sql.execute(f"INSERT INTO {{t}}{_events(lg)} ({col}, originator_id, originator_version, "
                   f"topic, state) VALUES (%s, %s, %s, %s, %s)",
                   (0 if col == "rowid" else -1, originator, last + 1, topic, state))
    lg.close()

    code, out = _verify(store_env)

    assert code == 1, out
    assert "1 row(s) outside the log's order" in out
    assert f"of {size} events in the log" in out


@pytest.mark.parametrize("projections", ["inline", "external"])
def test_a_write_command_signs_with_the_views_external_too(store_env, projections):
    """With the views external nothing wakes the follower: closing signs all the same."""
    assert _run(store_env, "init").returncode == 0
    done = _run({**store_env, "LEDGER_PROJECTIONS": projections}, "study",
                "finance-retention", "30")

    lg = Ledger({**store_env, "LEDGER_PROJECTIONS": "external"})
    size, latest = lg.recorder.max_notification_id(), lg.merkle.latest()
    lg.close()
    assert done.returncode == 0, done.stderr
    assert latest is not None and latest["size"] == size


class _AppendsAfterTheLastPage:
    """The recorder, except that once the walk has read the log's last page, another process
    appends an event and its follower hashes it: what a live ledger does during `verify`."""

    def __init__(self, recorder: object, append: object) -> None:
        self._recorder, self._append = recorder, append

    def select_notifications(self, *args, **kwargs):
        page = self._recorder.select_notifications(*args, **kwargs)
        if len(page) < kwargs["limit"]:
            self._append()
        return page

    def __getattr__(self, name: str) -> object:
        return getattr(self._recorder, name)


@pytest.mark.parametrize("page", [5, 7])
def test_leaves_recorded_while_verify_reads_are_no_false_alarm(store_env, monkeypatch, page):
    """A live follower records leaves for events appended after the walk's last page: they
    were reported as a log cut short (a review saw 5 of 25 runs fail under writes)."""
    import ledger.audit.checkpoints as checkpoints

    lg, _ = _history(store_env)
    other = Ledger({**store_env, "LEDGER_PROJECTIONS": "external"})

    def append() -> None:
        other.register_participant("Meanwhile Person", by="t")
        other.merkle.catch_up()

    monkeypatch.setattr(checkpoints, "PAGE", page)  # pages interleave, as in a large log
    monkeypatch.setattr(lg.merkle, "recorder", _AppendsAfterTheLastPage(lg.recorder, append))
    try:
        verdict = checkpoints.verify(lg.merkle)
    finally:
        monkeypatch.undo()
        other.close()
        lg.close()

    assert verdict.ok, verdict.problems


def test_an_older_event_a_catch_up_fetches_is_named_if_it_cannot_be_read(store_env):
    """Catching the views up to a person's new event reads their older events back (one query
    for a page's people): one of those that cannot be read is named at its position, not
    "the database could not be read"."""
    from uuid import UUID

    from eventsourcing.persistence import StoredEvent

    lg, size = _history(store_env)
    lg.projector.catch_up()
    victim = _rows(lg)[6]
    # (SQLite: text that is not UTF-8, which Python's sqlite3 cannot read; PostgreSQL: NULL)
    _rewrite(lg, 7, "state", None if lg.sql.is_postgres else Expr("CAST(x'ff00' AS TEXT)"), BOTH)
    last = lg.sql.query(f"SELECT originator_version AS v, topic, state FROM {{t}}{_events(lg)} "
                        f"WHERE originator_id = %s ORDER BY originator_version DESC LIMIT 1",
                        (victim[1],))[0]
    oid = victim[1] if lg.sql.is_postgres else UUID(victim[1])
    lg.recorder.insert_events([StoredEvent(  # the person's next event, as another process wrote
        originator_id=oid, originator_version=last["v"] + 1, topic=last["topic"],
        state=bytes(last["state"]))])
    lg.close()
    fresh = Ledger({**store_env, "LEDGER_PROJECTIONS": "external"})  # holds no one yet
    try:
        with pytest.raises(Exception) as caught:
            fresh.projector.catch_up()
    finally:
        fresh.close()

    assert type(caught.value).__name__ == "UnreadableEvent", repr(caught.value)
    assert caught.value.position == victim[0]


# -- the record of past verifications ------------------------------------------------------------


def _verified(store_env) -> Ledger:
    from ledger.audit.checkpoints import verify

    lg, _ = _history(store_env)
    lg.merkle.record_verification(verify(lg.merkle))
    lg.projector.catch_up()  # (its views are external: what `ledger projections run` does)
    return lg


def test_a_recorded_verification_is_signed_and_checks_with_the_public_key_alone(store_env):
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    from ledger.audit.checkpoints import verification_message

    lg = _verified(store_env)
    try:
        v = lg.merkle.last_verification()
        key = serialization.load_pem_public_key(lg.merkle.public_key.encode())
    finally:
        lg.close()

    assert v is not None and v["ok"] is True and v["signature_valid"] is True
    assert isinstance(key, Ed25519PublicKey)
    key.verify(base64.b64decode(v["signature"]),  # raises InvalidSignature if it does not hold
               verification_message(v["at"], v["size"], v["root"], v["ok"], None))


@pytest.mark.parametrize("forgery", ["a passed run added, unsigned", "a failed run turned passed",
                                     "a signature copied onto a later run"])
def test_a_verification_record_added_or_changed_in_the_database_is_not_quoted_as_passed(
        store_env, forgery):
    """Someone with write access to the database alters the log and then records a "passed"
    verification, or turns a failed one into a pass. The report must not say "passed": it says
    the record is not signed by this ledger, in every format."""
    from ledger.audit.checkpoints import VERIFICATIONS, Verdict
    from ledger.reports import report_data
    from ledger.reports.render import _checkpoint_row, verification_text

    lg = _verified(store_env)
    try:
        genuine = lg.merkle.last_verification()
        assert genuine is not None
        later = "9999-01-01T00:00:00+00:00"
        if forgery == "a passed run added, unsigned":
            lg.sql.execute(f"INSERT INTO {{t}}{VERIFICATIONS} (at, size, root, ok) "
                           "VALUES (%s, %s, %s, 1)", (later, genuine["size"], genuine["root"]))
        elif forgery == "a failed run turned passed":
            lg.sql.execute(f"DELETE FROM {{t}}{VERIFICATIONS}")
            lg.merkle.record_verification(Verdict(ok=False, size=genuine["size"],
                                                  root=genuine["root"], checkpoints=0,
                                                  first_bad_position=3))
            assert lg.merkle.last_verification()["signature_valid"] is True  # type: ignore[index]
            lg.sql.execute(f"UPDATE {{t}}{VERIFICATIONS} SET ok = 1, first_bad_position = NULL")
        else:
            lg.sql.execute(f"INSERT INTO {{t}}{VERIFICATIONS} (at, size, root, ok, signature) "
                           "VALUES (%s, %s, %s, 1, %s)",
                           (later, genuine["size"], genuine["root"], genuine["signature"]))
        report = report_data(lg)
    finally:
        lg.close()

    v = report["checkpoint"]["verification"]
    assert v["ok"] is True and v["signature_valid"] is False
    assert verification_text(report["checkpoint"]) == "record not signed by this ledger"
    assert _checkpoint_row(report["checkpoint"])["last_verified_signature_valid"] is False


def test_a_report_over_an_unsigned_verification_record_says_it_cannot_be_trusted(store_env):
    from ledger.audit.checkpoints import VERIFICATIONS
    from ledger.reports import report_data
    from ledger.reports.render import render

    lg = _verified(store_env)
    try:
        lg.sql.execute(f"UPDATE {{t}}{VERIFICATIONS} SET signature = NULL")
        html = render(report_data(lg), "html").decode()
    finally:
        lg.close()

    assert "cannot be trusted" in html and "it passed" not in html


def test_a_verification_table_from_before_signing_gets_the_column_and_its_rows_read_unsigned(
        store_env):
    """A ledger made before verifications were signed: its table has no signature column. The
    next ledger to open adds it; the old row reads as not signed (nothing vouches for it), and
    the next `ledger verify` records a signed one."""
    from ledger.audit.checkpoints import VERIFICATIONS, verify

    lg, _ = _history(store_env)
    lg.sql.execute(f"DROP TABLE {{t}}{VERIFICATIONS}")
    lg.sql.execute(f"CREATE TABLE {{t}}{VERIFICATIONS} (at TEXT NOT NULL, size BIGINT NOT NULL, "
                   "root TEXT NOT NULL, ok INTEGER NOT NULL, first_bad_position BIGINT)")
    lg.sql.execute(f"INSERT INTO {{t}}{VERIFICATIONS} (at, size, root, ok) VALUES "
                   "('2026-01-01T00:00:00+00:00', 1, 'ab', 1)")
    lg.close()

    again = Ledger({**store_env, "LEDGER_PROJECTIONS": "external"})
    try:
        old = again.merkle.last_verification()
        again.merkle.record_verification(verify(again.merkle))
        new = again.merkle.last_verification()
    finally:
        again.close()

    assert old is not None and old["signature"] is None and old["signature_valid"] is False
    assert new is not None and new["ok"] is True and new["signature_valid"] is True


def test_views_edited_in_the_database_are_caught_by_verify_views(store_env):
    """The current report and the staff list read the views, not the log: a row edited there
    (a payment's amount, a withdrawal removed) changes what they say while the log holds.
    `ledger verify --views` holds the views against a replay of the log and names the tables,
    with counts and no rows."""
    lg, size = _history(store_env)
    lg.projector.catch_up()
    lg.close()
    untouched = _run(store_env, "verify", "--views")
    assert untouched.returncode == 0, untouched.stdout + untouched.stderr
    assert "The views agree with the log." in untouched.stdout

    lg = Ledger({**store_env, "LEDGER_PROJECTIONS": "external"})
    lg.sql.execute("UPDATE {t}ledger_view_payments SET amount_pence = 250000")
    lg.sql.execute("DELETE FROM {t}ledger_view_consents WHERE scope = %s AND participant_id IN "
                   "(SELECT participant_id FROM {t}ledger_view_consents LIMIT 1)",
                   ("take_part",))
    lg.close()

    plain = _run(store_env, "verify")
    checked = _run(store_env, "verify", "--views")

    assert plain.returncode == 0  # the log itself holds
    out = checked.stdout + checked.stderr
    assert checked.returncode == 1, out
    assert "the views differ from a replay of its first" in out
    assert "  - payments: 1 row(s) not from the log, 1 row(s) of the log missing" in out
    assert "  - consents: 0 row(s) not from the log, 1 row(s) of the log missing" in out
    assert "Verify Person" not in out and "Traceback" not in out
    assert "ledger projections rebuild" in out
    assert _run(store_env, "projections", "rebuild").returncode == 0
    assert _run(store_env, "verify", "--views").returncode == 0

    lg = Ledger({**store_env, "LEDGER_PROJECTIONS": "external"})
    lg.sql.execute("UPDATE {t}ledger_view_participants SET erased_at = %s, reference = %s "
                   "WHERE seq = (SELECT MIN(seq) FROM {t}ledger_view_participants)",
                   ("2026-01-01T00:00:00+00:00", "ST-FORGED00"))  # (the report's erasures)
    lg.close()
    people = _run(store_env, "verify", "--views")
    assert people.returncode == 1, people.stdout + people.stderr
    assert "  - participants: 1 row(s) not from the log, 1 row(s) of the log missing" in \
        people.stderr


def test_verify_views_catches_a_copied_list_document_and_a_position_past_the_log(store_env):
    """Two edits a review made that ``verify --views`` passed: one person's document (what the
    staff list shows) copied over another's, so the list showed one person twice and the
    other not at all; and the views' position set past the end of the log, so what is written
    next would never show in them."""
    lg, size = _history(store_env)
    lg.projector.catch_up()
    lg.close()
    assert _run(store_env, "verify", "--views").returncode == 0

    lg = Ledger({**store_env, "LEDGER_PROJECTIONS": "external"})
    lg.sql.execute("UPDATE {t}ledger_view_participants SET doc = (SELECT doc FROM "
                   "{t}ledger_view_participants WHERE seq = (SELECT MAX(seq) FROM "
                   "{t}ledger_view_participants)) WHERE seq = (SELECT MIN(seq) FROM "
                   "{t}ledger_view_participants)")
    lg.close()
    copied = _run(store_env, "verify", "--views")
    assert copied.returncode == 1, copied.stdout + copied.stderr
    assert "  - participant documents: 1 row(s) not from the log, 1 row(s) of the log " \
        "missing" in copied.stderr
    assert "Verify Person" not in copied.stdout + copied.stderr
    assert _run(store_env, "projections", "rebuild").returncode == 0
    assert _run(store_env, "verify", "--views").returncode == 0

    lg = Ledger({**store_env, "LEDGER_PROJECTIONS": "external"})
    lg.sql.execute("UPDATE {t}ledger_view_tracking SET position = position + 100")
    lg.close()
    ahead = _run(store_env, "verify", "--views")
    assert ahead.returncode == 1, ahead.stdout + ahead.stderr
    assert f"the views say they hold the log's first {size + 100} events, but it has " \
        f"{size}" in ahead.stderr


def test_a_json_report_kept_outside_serves_as_a_kept_checkpoint(store_env, tmp_path):
    """An auditor who kept signed reports holds the log against the checkpoint each carries
    (which has no public key of its own: this ledger's checks it, as for stored checkpoints)."""
    lg, size = _history(store_env)
    lg.close()
    report = tmp_path / "report.json"
    assert _run(store_env, "report", "-o", str(report)).returncode == 0
    assert "public_key" not in json.loads(report.read_text())["checkpoint"]

    held = _run(store_env, "verify", "--checkpoint", str(report))
    assert held.returncode == 0, held.stdout + held.stderr
    assert "signed checkpoints hold" in held.stdout

    lg = Ledger({**store_env, "LEDGER_PROJECTIONS": "external"})
    _cut_everything_after(lg, size - 3)
    lg.close()
    cut = _run(store_env, "verify", "--checkpoint", str(report))
    assert cut.returncode == 1, cut.stdout + cut.stderr
    assert f"a signed checkpoint covers {size}" in cut.stderr
