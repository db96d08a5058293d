"""Idempotency-Key on POST payments: required, replayed byte for byte, tied to the body."""

from __future__ import annotations

import threading

import pytest

from .conftest import bearer

BODY = {"activity": "conversation", "amount": "25.00", "method": "voucher"}


def _pay(client, headers, pid, body=BODY, key="key-1"):
    h = dict(headers)
    if key is not None:
        h["Idempotency-Key"] = key
    return client.post(f"/api/v1/participants/{pid}/payments", headers=h, json=body)


def _events(api_ledger):
    return api_ledger.recorder.max_notification_id()


@pytest.mark.parametrize("key", [None, "", "x" * 201, "caf\u00e9", "tab\there", "k1, k2"])
def test_a_payment_without_a_usable_key_is_400_and_writes_nothing(client, staff, pid,
                                                                   api_ledger, key):
    before = _events(api_ledger)

    response = _pay(client, staff, pid, key=key)

    assert response.status_code == 400
    assert "Idempotency-Key" in response.json["errors"]
    assert _events(api_ledger) == before


def test_the_same_key_and_body_replays_the_first_response_byte_for_byte(client, staff, pid,
                                                                        api_ledger):
    first = _pay(client, staff, pid)
    after_first = _events(api_ledger)

    second = _pay(client, staff, pid)
    reordered = _pay(client, staff, pid, body=dict(reversed(list(BODY.items()))))

    assert first.status_code == second.status_code == reordered.status_code == 201
    assert first.data == second.data == reordered.data
    assert _events(api_ledger) == after_first


def test_the_same_key_with_a_different_body_is_422_and_writes_nothing(client, staff, pid,
                                                                      api_ledger):
    _pay(client, staff, pid)
    before = _events(api_ledger)

    response = _pay(client, staff, pid, body={**BODY, "amount": "20.00", "reason": "part"})

    assert response.status_code == 422 and "Idempotency-Key" in response.json["errors"]
    assert _events(api_ledger) == before


def test_a_second_payment_with_a_new_key_is_409(client, staff, pid):
    _pay(client, staff, pid, key="one")

    response = _pay(client, staff, pid, key="two")

    assert response.status_code == 409 and response.json["code"] == "PaymentAlreadyRecorded"


def test_keys_belong_to_the_token_that_used_them(client, api_ledger, staff, pid):
    _, other = api_ledger.tokens.create("staff", "second desk")
    _pay(client, staff, pid, key="shared")

    response = _pay(client, bearer(other), pid, key="shared")

    assert response.status_code == 409  # its own attempt, not the first token's replay


def test_a_refusal_keeps_nothing_not_even_its_key(client, staff, pid, api_ledger):
    first = _pay(client, staff, pid, body={**BODY, "activity": "lunch"}, key="bad")

    rows = api_ledger.sql.query("SELECT COUNT(*) AS n FROM ledger_idempotency")[0]["n"]

    assert first.status_code == 422 and rows == 0


def test_a_refused_key_succeeds_once_the_world_has_changed(client, staff, pid):
    paid = _pay(client, staff, pid, key="first")
    refused = _pay(client, staff, pid, key="second")
    client.post(f"/api/v1/participants/{pid}/payments/{paid.json['id']}/reversal",
                headers=staff, json={"reason": "bounced"})

    retried = _pay(client, staff, pid, key="second")

    assert refused.status_code == 409 and retried.status_code == 201


def test_equivalent_requests_with_one_key_match(client, staff, pid):
    first = _pay(client, staff, pid, key="eq")

    explicit = _pay(client, staff, pid.upper(), body={**BODY, "currency": "GBP"}, key="eq")

    assert explicit.status_code == 201 and explicit.data == first.data


def test_a_missing_key_is_400_even_when_the_body_is_bad_too(client, staff, pid):
    response = _pay(client, staff, pid, body={"amount": 7}, key=None)

    assert response.status_code == 400 and "Idempotency-Key" in response.json["errors"]


def test_keys_are_kept_in_the_same_database_as_the_events(client, staff, pid, api_ledger):
    _pay(client, staff, pid, key="kept")

    rows = api_ledger.sql.query("SELECT idem_key, status FROM ledger_idempotency")

    assert [(r["idem_key"], r["status"]) for r in rows] == [
        (api_ledger.idempotency.stored_key("kept"), 201)]


def test_a_key_is_kept_as_a_keyed_digest_never_as_its_text(client, staff, pid, api_ledger):
    """A key is the client's own text and could hold a name; it outlives an erasure by up to
    48 hours."""
    key = "Quarrington-payment-1"
    first = _pay(client, staff, pid, key=key)
    again = _pay(client, staff, pid, key=key)

    kept = api_ledger.sql.query("SELECT idem_key FROM ledger_idempotency")
    assert first.status_code == 201 and again.data == first.data  # still replayed
    assert [r["idem_key"] for r in kept] == [api_ledger.idempotency.stored_key(key)]
    assert key not in kept[0]["idem_key"] and len(kept[0]["idem_key"]) == 67
    if not api_ledger.sql.is_postgres:
        data_dir = api_ledger.settings.sqlite_path.parent
        for file in data_dir.iterdir():
            if file.is_file():
                assert b"Quarrington" not in file.read_bytes(), file.name


def test_concurrent_requests_with_one_key_write_once_and_agree(app, staff, pid, api_ledger):
    before = _events(api_ledger)
    barrier = threading.Barrier(12)
    responses = []

    def pay():
        client = app.test_client()
        barrier.wait()
        responses.append(_pay(client, staff, pid, key="racing"))

    threads = [threading.Thread(target=pay) for _ in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)

    assert {r.status_code for r in responses} == {201}
    assert len({r.data for r in responses}) == 1
    new = api_ledger.recorder.select_notifications(start=before + 1, limit=100)
    assert sorted(n.topic for n in new) == ["ledger:Participant.PaymentNoted",
                                            "ledger:Payment.Recorded"]


def test_a_replay_carries_a_position_that_includes_the_payment(client, staff, pid, api_ledger):
    """A client whose first answer was lost still gets read-your-writes from the replay."""
    first = _pay(client, staff, pid)
    paid_at = int(first.headers["Ledger-Position"])
    client.post("/api/v1/participants", headers=staff, json={"name": "Someone Later"})

    replay = _pay(client, staff, pid)

    assert replay.status_code == 201 and replay.data == first.data
    position = int(replay.headers["Ledger-Position"])
    assert position >= paid_at
    assert position == api_ledger.recorder.max_notification_id()
    listed = client.get(f"/api/v1/participants?min_position={position}", headers=staff)
    assert listed.status_code == 200
