"""Idempotency-Key on every staff write, not only payments, on both stores.

Without a key, a client whose answer was lost (a timeout, a dropped connection, a 500 from a
store that could not say whether the write was kept) and who sends the request again records
a second expense, access need, use, outcome or arrangement, or registers the person twice. With
a key, the retry gets the first response, byte for byte, and nothing more is written.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any
from uuid import UUID

import pytest

from ledger.api import create_app
from ledger.application import Ledger

from .conftest import bearer

P = "/api/v1/participants"
Request = tuple[str, dict[str, Any]]


@pytest.fixture
def keyed(store_env) -> Iterator[tuple[Ledger, Any, dict[str, dict[str, str]]]]:
    lg = Ledger(store_env)
    lg.init_study(by="test")
    client = create_app({"LEDGER": lg, "TESTING": True}).test_client()
    tokens = {role: bearer(lg.tokens.create(role, f"test {role}")[1])
              for role in ("staff", "admin")}
    yield lg, client, tokens
    lg.close()


def _ok(response: Any, status: int = 201) -> Any:
    assert response.status_code == status, response.get_data(as_text=True)
    return response.json


def _person(client: Any, staff: dict[str, str]) -> str:
    return _ok(client.post(P, headers=staff, json={"name": "Ada Example"}))["id"]


# Each write, as (path, body), after whatever it needs has been recorded (without keys).
def _register(client: Any, staff: dict[str, str]) -> Request:
    return P, {"name": "Ada Example", "communities": ["Black British"]}


def _consent(client: Any, staff: dict[str, str]) -> Request:
    return (f"{P}/{_person(client, staff)}/consents",
            {"scope": "record", "form_version": "1.0", "method": "online"})


def _withdrawal(client: Any, staff: dict[str, str]) -> Request:
    path, body = _consent(client, staff)
    _ok(client.post(path, headers=staff, json=body))
    return f"{path}/record/withdrawal", {"channel": "phone", "reason": "changed my mind"}


def _done(client: Any, staff: dict[str, str]) -> Request:
    path, body = _withdrawal(client, staff)
    opened = _ok(client.post(path, headers=staff, json=body))["obligations"][0]["id"]
    person = path.split("/")[4]
    return f"{P}/{person}/obligations/{opened}/done", {"note": "recording deleted"}


def _need(client: Any, staff: dict[str, str]) -> Request:
    return (f"{P}/{_person(client, staff)}/access-needs",
            {"category": "step-free access", "detail": "a ramp at the door"})


def _outcome(client: Any, staff: dict[str, str]) -> Request:
    path, body = _need(client, staff)
    need = _ok(client.post(path, headers=staff, json=body))["need_id"]
    return f"{path}/{need}/outcome", {"outcome": "partly_met", "note": "ramp booked"}


def _arrangement(client: Any, staff: dict[str, str]) -> Request:
    return (f"{P}/{_person(client, staff)}/payment-arrangements",
            {"activity": "conversation", "method": "voucher", "payee": "self",
             "benefits_advice_offered": True})


def _decline(client: Any, staff: dict[str, str]) -> Request:
    return (f"{P}/{_person(client, staff)}/payment-arrangements",
            {"activity": "conversation", "declined": True, "reason": "I prefer not to be paid"})


def _reduction(client: Any, staff: dict[str, str]) -> Request:
    return (f"{P}/{_person(client, staff)}/payment-reductions",
            {"activity": "workshop", "amount": "10.00", "reason": "benefits limit"})


def _reversal(client: Any, staff: dict[str, str]) -> Request:
    person = _person(client, staff)
    paid = _ok(client.post(f"{P}/{person}/payments", json={
        "activity": "conversation", "amount": "25.00", "method": "cash"},
        headers={**staff, "Idempotency-Key": "the payment"}))["id"]
    return f"{P}/{person}/payments/{paid}/reversal", {"reason": "the voucher was not received"}


def _expense(client: Any, staff: dict[str, str]) -> Request:
    return (f"{P}/{_person(client, staff)}/expenses",
            {"activity": "workshop", "amount": "7.40", "method": "cash", "description": "bus"})


def _use(client: Any, staff: dict[str, str]) -> Request:
    return f"{P}/{_person(client, staff)}/uses", {"scope": "record", "purpose": "quoted"}


WRITES: dict[str, tuple[Callable[[Any, dict[str, str]], Request], int]] = {
    "register": (_register, 201), "consent": (_consent, 201),
    "withdrawal": (_withdrawal, 201), "obligation done": (_done, 200), "need": (_need, 201),
    "outcome": (_outcome, 201), "arrangement": (_arrangement, 201),
    "decline": (_decline, 201), "reduction": (_reduction, 201),
    "reversal": (_reversal, 201), "expense": (_expense, 201), "use": (_use, 201),
}
# Writes that, sent again without a key, are recorded again (the others are refused as done).
RECORDED_AGAIN = {"register", "need", "outcome", "arrangement", "reduction",
                  "expense", "use"}


def _end(lg: Ledger) -> int:
    return lg.recorder.max_notification_id() or 0


def _keyed(staff: dict[str, str], key: str = "retry-1") -> dict[str, str]:
    return {**staff, "Idempotency-Key": key}


@pytest.mark.parametrize("write", sorted(WRITES))
def test_a_write_sent_again_with_its_key_is_answered_as_before_and_recorded_once(keyed, write):
    lg, client, tokens = keyed
    staff = tokens["staff"]
    setup, status = WRITES[write]
    path, body = setup(client, staff)

    first = client.post(path, headers=_keyed(staff), json=body)
    after_first = _end(lg)
    again = client.post(path, headers=_keyed(staff), json=body)
    reordered = client.post(path, headers=_keyed(staff), json=dict(reversed(body.items())))
    after_replays = _end(lg)
    unkeyed = client.post(path, headers=staff, json=body)

    assert first.status_code == status, first.get_data(as_text=True)
    assert again.status_code == reordered.status_code == status
    assert again.data == reordered.data == first.data
    assert after_replays == after_first
    assert int(again.headers["Ledger-Position"]) >= after_first  # read-your-writes
    # The contrast, which the key is for: without it, the same request writes again or is
    # refused as already done.
    if write in RECORDED_AGAIN:
        assert unkeyed.status_code == status and _end(lg) > after_replays
    else:
        assert unkeyed.status_code == 409 and _end(lg) == after_replays


@pytest.mark.parametrize("write", ["register", "expense", "outcome", "withdrawal"])
def test_a_key_reused_with_another_body_is_422_and_writes_nothing(keyed, write):
    lg, client, tokens = keyed
    staff = tokens["staff"]
    path, body = WRITES[write][0](client, staff)
    _ok(client.post(path, headers=_keyed(staff), json=body), WRITES[write][1])
    changed = {k: (v + " (changed)" if isinstance(v, str) and k in (
        "name", "description", "note", "reason") else v) for k, v in body.items()}
    assert changed != body
    before = _end(lg)

    refused = client.post(path, headers=_keyed(staff), json=changed)

    assert refused.status_code == 422, refused.get_data(as_text=True)
    assert refused.json["code"] == "IdempotencyKeyReused"
    assert "Idempotency-Key" in refused.json["errors"]
    assert _end(lg) == before


def test_each_operation_s_keys_are_its_own(keyed):
    """Before, only payments took a key, and a client may have sent one key with every request:
    its next payment, expense or use is still recorded, not refused as a reused key."""
    lg, client, tokens = keyed
    staff = tokens["staff"]
    person = _ok(client.post(P, headers=_keyed(staff, "same"), json={"name": "Ada Example"}))
    answers = [client.post(f"{P}/{person['id']}/{path}", headers=_keyed(staff, "same"), json=body)
               for path, body in [
                   ("payments", {"activity": "conversation", "amount": "25.00", "method": "cash"}),
                   ("expenses", {"activity": "workshop", "amount": "7.40", "method": "cash",
                                 "description": "bus"}),
                   ("uses", {"scope": "record", "purpose": "quoted"})]]

    assert [a.status_code for a in answers] == [201, 201, 201]
    assert lg.sql.query("SELECT COUNT(*) AS n FROM {t}ledger_idempotency")[0]["n"] == 4


def test_the_same_key_for_the_same_body_on_another_person_is_422(keyed):
    lg, client, tokens = keyed
    staff = tokens["staff"]
    path, body = _expense(client, staff)
    other, _ = _expense(client, staff)
    _ok(client.post(path, headers=_keyed(staff), json=body))
    before = _end(lg)

    response = client.post(other, headers=_keyed(staff), json=body)

    assert response.status_code == 422 and _end(lg) == before


@pytest.mark.parametrize("key", ["", "x" * 201, "caf\u00e9", "tab\there", "k1, k2"])
def test_an_unusable_key_on_any_write_is_400_and_writes_nothing(keyed, key):
    lg, client, tokens = keyed
    staff = tokens["staff"]
    path, body = _expense(client, staff)
    before = _end(lg)

    response = client.post(path, headers={**staff, "Idempotency-Key": key}, json=body)

    assert response.status_code == 400, response.get_data(as_text=True)
    assert response.mimetype == "application/problem+json"
    assert response.json["code"] == "IdempotencyKeyInvalid"  # (optional here: not "Required")
    assert "when given" in response.json["errors"]["Idempotency-Key"][0]
    assert _end(lg) == before


def test_keys_belong_to_the_token_that_used_them(keyed):
    lg, client, tokens = keyed
    staff = tokens["staff"]
    other = bearer(lg.tokens.create("staff", "second desk")[1])
    path, body = _expense(client, staff)

    first = _ok(client.post(path, headers=_keyed(staff, "shared"), json=body))
    second = _ok(client.post(path, headers=_keyed(other, "shared"), json=body))

    assert first != second  # two expenses: each token's own request


@pytest.mark.parametrize("write", ["register", "expense"])
def test_concurrent_requests_with_one_key_write_once_and_agree(keyed, write):
    lg, client, tokens = keyed
    staff = tokens["staff"]
    path, body = WRITES[write][0](client, staff)
    app = client.application
    before = _end(lg)
    barrier, responses = threading.Barrier(10), []

    def send() -> None:
        c = app.test_client()
        barrier.wait()
        responses.append(c.post(path, headers=_keyed(staff, "racing"), json=body))

    threads = [threading.Thread(target=send) for _ in range(10)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)

    assert [r.status_code for r in responses] == [201] * 10, [
        r.get_data(as_text=True) for r in responses if r.status_code != 201]
    assert len({r.data for r in responses}) == 1
    new = [n.topic for n in lg.recorder.select_notifications(start=before + 1, limit=100)]
    assert new == (["ledger:Participant.Registered"] if write == "register"
                   else ["ledger:Participant.ExpenseRecorded"])
    assert lg.sql.query("SELECT COUNT(*) AS n FROM {t}ledger_idempotency WHERE status = 201"
                        )[0]["n"] == 1


@contextmanager
def _reply_lost_after_commit(lg: Ledger) -> Iterator[None]:
    """Each save the store takes alone commits, then the connection is lost before the answer,
    and the store cannot be asked whether it was kept: the request is answered 500."""
    from eventsourcing.persistence import OperationalError

    alone = lg.recorder._insert_alone

    def lost(save: object) -> object:
        alone(save)
        raise OperationalError("server closed the connection unexpectedly")

    lg.recorder._insert_alone = lost
    try:
        yield
    finally:
        del lg.recorder._insert_alone


@pytest.mark.parametrize("write", ["register", "expense", "need", "use"])
def test_a_retry_after_a_500_whose_write_was_kept_records_it_once(keyed, write, monkeypatch):
    """The case the key is for: the write was committed, its answer lost, and the client was
    told 500 (for a registration, the store could not be asked either whether it was kept).
    Its retry with the same key is answered 201 with what was recorded; the same retry without
    a key records it a second time."""
    lg, client, tokens = keyed
    staff = tokens["staff"]
    path, body = WRITES[write][0](client, staff)
    topic = {"register": "Participant.Registered", "expense": "ExpenseRecorded", "need": "NeedRequested",
             "use": "StoryUsed"}[write]

    def recorded() -> int:
        return sum(n.topic.endswith(topic)
                   for n in lg.recorder.select_notifications(start=1, limit=1000))

    before = recorded()
    with _reply_lost_after_commit(lg), monkeypatch.context() as m:
        m.setattr(lg, "_stored", lambda participant_id: None)  # (cannot tell)
        lost = client.post(path, headers=_keyed(staff), json=body)
    retried = client.post(path, headers=_keyed(staff), json=body)
    once, people = recorded(), lg.participant_ids()
    unkeyed = client.post(path, headers=staff, json=body)

    assert lost.status_code == 500 and lost.mimetype == "application/problem+json"
    assert retried.status_code == 201, retried.get_data(as_text=True)
    assert before == 0 and once == 1
    if write == "register":  # the person first registered, readable: their key was kept
        assert people == [UUID(retried.json["id"])]
        assert lg.participant(UUID(retried.json["id"]))["name"] == "Ada Example"
    assert unkeyed.status_code == 201 and recorded() == 2  # what a retry without a key does


def test_a_kept_response_that_holds_what_a_person_said_is_sealed_and_erased_with_them(keyed):
    """An outcome's response holds its note and the need's detail, in the person's words: the
    kept copy is sealed with the person's data key (never plain text in the store), and their
    erasure makes it unreadable, as the rest of their data."""
    lg, client, tokens = keyed
    staff = tokens["staff"]
    person = _person(client, staff)
    need = _ok(client.post(f"{P}/{person}/access-needs", headers=staff, json={
        "category": "Quarrington-category", "detail": "Quarrington-detail"}))["need_id"]
    path = f"{P}/{person}/access-needs/{need}/outcome"
    body = {"outcome": "partly_met", "note": "Quarrington-note"}

    first = client.post(path, headers=_keyed(staff), json=body)
    replay = client.post(path, headers=_keyed(staff), json=body)
    kept = [bytes(r["body"]) for r in lg.sql.query("SELECT body FROM {t}ledger_idempotency")]
    # (on SQLite the database is these files, WAL included; on PostgreSQL the rows above)
    files = b"".join(f.read_bytes() for f in lg.settings.data_dir.rglob("*") if f.is_file())
    erased = client.post(f"{P}/{person}/erasure", headers=tokens["admin"],
                         json={"reason": "asked"})
    after_erasure = client.post(path, headers=_keyed(staff), json=body)

    assert first.status_code == 201 and b"Quarrington-note" in first.data
    assert replay.data == first.data
    assert len(kept) == 1 and b"Quarrington" not in kept[0]
    assert b"Quarrington" not in files
    assert erased.status_code == 200
    assert after_erasure.status_code == 409 and b"Quarrington" not in after_erasure.data
    assert after_erasure.json["code"] == "ParticipantErased"


def test_a_write_without_a_key_is_answered_as_before(keyed):
    lg, client, tokens = keyed
    staff = tokens["staff"]
    path, body = _expense(client, staff)

    response = client.post(path, headers=staff, json=body)

    assert _ok(response)["expense_id"]
    assert lg.sql.query("SELECT COUNT(*) AS n FROM {t}ledger_idempotency")[0]["n"] == 0


def test_the_openapi_document_offers_the_key_on_every_staff_write(keyed):
    _, client, _ = keyed
    doc = client.get("/api/v1/openapi.json").json
    offered = {}
    for path, operations in doc["paths"].items():
        post = operations.get("post")
        if post is None or "/my/" in path:
            continue
        header = [p for p in post.get("parameters", []) if p["name"] == "Idempotency-Key"]
        offered[path] = header[0]["required"] if header else None

    assert offered["/api/v1/participants/{participant_id}/payments"] is True
    keyed_paths = {p for p, required in offered.items() if required is False}
    assert len(keyed_paths) == 11, sorted(offered)
    assert "/api/v1/participants/{participant_id}/erasure" not in keyed_paths


def _outcome_with_words(client: Any, staff: dict[str, str]) -> tuple[str, str, dict[str, Any]]:
    person = _person(client, staff)
    need = _ok(client.post(f"{P}/{person}/access-needs", headers=staff, json={
        "category": "Quarrington-category", "detail": "Quarrington-detail"}))["need_id"]
    return (person, f"{P}/{person}/access-needs/{need}/outcome",
            {"outcome": "partly_met", "note": "Quarrington-note"})


def test_after_an_erasure_a_retry_is_refused_and_the_fingerprints_are_gone(keyed):
    """A retried registration is not a second person, and no kept row of theirs still holds a
    digest of what they said."""
    lg, client, tokens = keyed
    staff = tokens["staff"]
    registered = client.post(P, headers=_keyed(staff, "reg"), json={"name": "Quarrington"})
    person, path, body = _outcome_with_words(client, staff)
    _ok(client.post(path, headers=_keyed(staff, "out"), json=body))
    who = registered.json["id"]
    _ok(client.post(f"{P}/{who}/erasure", headers=tokens["admin"], json={"reason": "asked"}), 200)
    _ok(client.post(f"{P}/{person}/erasure", headers=tokens["admin"], json={"reason": "asked"}),
        200)
    people = len(lg.participant_ids())

    again = client.post(P, headers=_keyed(staff, "reg"), json={"name": "Quarrington"})
    outcome_again = client.post(path, headers=_keyed(staff, "out"), json=body)
    kept = lg.sql.query("SELECT request_hash, body FROM {t}ledger_idempotency")

    assert again.status_code == outcome_again.status_code == 409
    assert again.json["code"] == outcome_again.json["code"] == "ParticipantErased"
    assert len(lg.participant_ids()) == people
    assert sorted(r["request_hash"] for r in kept) == ["erased", "erased"]
    assert not any(b"Quarrington" in bytes(r["body"]) for r in kept)


def test_a_retry_before_an_erased_person_s_key_is_destroyed_gives_nothing_back(keyed,
                                                                              monkeypatch):
    """The erasure is recorded, but the store would not yet let their rows be marked nor their
    key be destroyed (both retried later): a retry meanwhile is refused, not answered with what
    they said."""
    lg, client, tokens = keyed
    staff = tokens["staff"]
    person, path, body = _outcome_with_words(client, staff)
    _ok(client.post(path, headers=_keyed(staff), json=body))

    def refused(participant_id: Any) -> None:
        raise RuntimeError("the store refused")

    monkeypatch.setattr(lg.idempotency, "forget", refused)
    erased = _ok(client.post(f"{P}/{person}/erasure", headers=tokens["admin"],
                             json={"reason": "asked"}), 200)
    retried = client.post(path, headers=_keyed(staff), json=body)

    assert erased["receipt"] is None or erased["receipt"]["data_key_destroyed"] is False
    assert lg.keys.exists(UUID(person))  # (the window this is about)
    assert retried.status_code == 409 and retried.json["code"] == "ParticipantErased"
    assert b"Quarrington" not in retried.data


def test_a_follow_up_marked_done_after_an_erasure_takes_a_key_too(keyed):
    """Marking a withdrawal's follow-up done (the recording deleted) is still recorded for an
    erased person, without a note: with a key, it is answered and replayed as any write."""
    lg, client, tokens = keyed
    staff = tokens["staff"]
    path, _ = _done(client, staff)
    person = path.split("/")[4]
    _ok(client.post(f"{P}/{person}/erasure", headers=tokens["admin"], json={"reason": "asked"}),
        200)

    first = client.post(path, headers=_keyed(staff), json={})
    again = client.post(path, headers=_keyed(staff), json={})

    assert first.status_code == again.status_code == 200, first.get_data(as_text=True)
    assert again.data == first.data
