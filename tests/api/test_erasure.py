"""Erasure through the API: a signed receipt an auditor can check with the public key alone,
the receipt again on request, and refusal while the study's finance retention keeps payments."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest

from ledger.audit.checkpoints import (
    check_signature,
    checkpoint_message,
    load_public_key,
    signed_json,
)
from ledger.audit.merkle import verify_inclusion

from .conftest import bearer

NAME = "Ottoline Erasuretest"


@pytest.fixture
def admin(tokens):
    return bearer(tokens["admin"])


@pytest.fixture
def person(client, staff):
    pid = client.post("/api/v1/participants", headers=staff,
                      json={"name": NAME, "email": "ottoline@example.invalid"}).json["id"]
    client.post(f"/api/v1/participants/{pid}/consents", headers=staff,
                json={"scope": "record", "form_version": "1.0", "method": "online"})
    return pid


def _pay(client, staff, pid):
    response = client.post(f"/api/v1/participants/{pid}/payments",
                           headers={**staff, "Idempotency-Key": str(uuid.uuid4())},
                           json={"activity": "conversation", "amount": "25.00",
                                 "method": "bank_transfer"})
    assert response.status_code == 201
    return response.json["id"]


def _check_receipt(receipt, public_pem, pid):
    key = load_public_key(public_pem)
    assert check_signature(key, signed_json(receipt), receipt["signature"])
    cp = receipt["checkpoint"]
    assert check_signature(key, checkpoint_message(cp["size"], cp["root"], cp["time"]),
                           cp["signature"])
    event = receipt["event"]
    assert verify_inclusion(bytes.fromhex(event["leaf_hash"]), event["position"] - 1, cp["size"],
                            [bytes.fromhex(h) for h in receipt["audit_path"]],
                            bytes.fromhex(cp["root"]))
    assert receipt["participant_id"] == pid and receipt["data_key_destroyed"] is True
    assert receipt["erased_by"].startswith("admin:")


def test_an_erasure_answers_with_a_signed_receipt_that_proves_it_is_in_the_log(
        client, admin, tokens, person, api_ledger):
    response = client.post(f"/api/v1/participants/{person}/erasure", headers=admin,
                           json={"reason": "asked to be forgotten"})

    assert response.status_code == 200, response.json
    receipt = response.json["receipt"]
    _check_receipt(receipt, api_ledger.merkle.public_key, person)
    # the proved leaf is the erasure event's own, recomputed from the event as stored
    proof = client.get(f"/api/v1/audit/proofs/inclusion?position={receipt['event']['position']}",
                       headers=bearer(tokens["auditor"])).json
    assert proof["event"]["topic"] == "ledger:Participant.Erased"
    assert proof["event"]["aggregate_id"] == person
    assert proof["leaf_hash"] == receipt["event"]["leaf_hash"]
    assert NAME not in response.get_data(as_text=True)
    # a receipt altered in any field no longer verifies
    forged = {**receipt, "erased_at": "2020-01-01T00:00:00+00:00"}
    assert not check_signature(load_public_key(api_ledger.merkle.public_key),
                               signed_json(forged), receipt["signature"])


def test_the_receipt_can_be_asked_for_again_and_only_for_an_erased_person(
        client, admin, person, api_ledger):
    first = client.post(f"/api/v1/participants/{person}/erasure", headers=admin,
                        json={"reason": "asked"}).json["receipt"]
    other = client.post("/api/v1/participants", headers=bearer(
        api_ledger.tokens.create("staff", "s")[1]), json={"name": "Kept Person"}).json["id"]

    again = client.get(f"/api/v1/participants/{person}/erasure", headers=admin)
    not_erased = client.get(f"/api/v1/participants/{other}/erasure", headers=admin)
    unknown = client.get(f"/api/v1/participants/{uuid.uuid4()}/erasure", headers=admin)

    assert again.status_code == 200
    _check_receipt(again.json, api_ledger.merkle.public_key, person)
    assert {k: again.json[k] for k in ("erased_at", "event", "erased_by")} == \
        {k: first[k] for k in ("erased_at", "event", "erased_by")}
    assert not_erased.status_code == 404 and not_erased.json["code"] == "NotErased"
    assert unknown.status_code == 404
    assert not_erased.content_type == "application/problem+json"


def test_finance_retention_refuses_erasure_until_the_payment_records_may_drop_the_payee(
        client, admin, staff, person, api_ledger, clock):
    api_ledger.set_finance_retention(2190, by="test")  # six years
    assert client.get("/api/v1/study", headers=staff).json["finance_retention_days"] == 2190
    paid_on = clock.now
    _pay(client, staff, person)
    before = api_ledger.recorder.max_notification_id()

    refused = client.post(f"/api/v1/participants/{person}/erasure", headers=admin,
                          json={"reason": "asked"})

    assert refused.status_code == 409, refused.json
    assert refused.json["code"] == "ErasureRefused"
    until = (paid_on + timedelta(days=2190)).date().isoformat()
    assert "finance retention" in refused.json["detail"] and until in refused.json["detail"]
    assert api_ledger.recorder.max_notification_id() == before  # nothing written
    assert api_ledger.keys.exists(uuid.UUID(person))  # the key is untouched
    assert client.get(f"/api/v1/participants/{person}", headers=staff).json["name"] == NAME

    clock.now = paid_on + timedelta(days=2190, seconds=1)
    allowed = client.post(f"/api/v1/participants/{person}/erasure", headers=admin,
                          json={"reason": "asked"})

    assert allowed.status_code == 200
    view = client.get(f"/api/v1/participants/{person}", headers=staff).json
    assert view["name"] == "[erased]"
    assert [(p["amount"], p["status"]) for p in view["payments"]] == [("25.00", "paid")]


def test_a_reversed_payment_is_a_finance_record_too(client, admin, staff, person, api_ledger):
    api_ledger.set_finance_retention(30, by="test")
    payment = _pay(client, staff, person)
    client.post(f"/api/v1/participants/{person}/payments/{payment}/reversal", headers=staff,
                json={"reason": "paid twice by the bank"})

    refused = client.post(f"/api/v1/participants/{person}/erasure", headers=admin,
                          json={"reason": "asked"})

    assert refused.status_code == 409 and refused.json["code"] == "ErasureRefused"


def test_an_expense_paid_back_is_a_finance_record_too(client, admin, staff, person, api_ledger,
                                                       clock):
    api_ledger.set_finance_retention(30, by="test")
    spent = client.post(f"/api/v1/participants/{person}/expenses", headers=staff, json={
        "activity": "workshop", "amount": "7.40", "method": "cash", "description": "Bus fare"})
    before = api_ledger.recorder.max_notification_id()

    refused = client.post(f"/api/v1/participants/{person}/erasure", headers=admin,
                          json={"reason": "asked"})
    unchanged = api_ledger.recorder.max_notification_id()
    clock.now += timedelta(days=31)
    allowed = client.post(f"/api/v1/participants/{person}/erasure", headers=admin,
                          json={"reason": "asked"})

    assert spent.status_code == 201
    assert refused.status_code == 409 and refused.json["code"] == "ErasureRefused"
    assert "expense" in refused.json["detail"] and unchanged == before
    assert allowed.status_code == 200


def test_without_payments_or_retention_erasure_goes_ahead(client, admin, staff, person,
                                                          api_ledger):
    api_ledger.set_finance_retention(2190, by="test")
    unpaid = client.post(f"/api/v1/participants/{person}/erasure", headers=admin,
                         json={"reason": "asked"})
    api_ledger.set_finance_retention(0, by="test")
    paid = client.post("/api/v1/participants", headers=staff, json={"name": "Paid Person"}).json
    _pay(client, staff, paid["id"])
    paid_erased = client.post(f"/api/v1/participants/{paid['id']}/erasure", headers=admin,
                              json={"reason": "asked"})

    assert unpaid.status_code == 200 and paid_erased.status_code == 200


@pytest.mark.parametrize("days", [-1, 7301, True, "30", 1.5])
def test_a_finance_retention_out_of_range_is_refused(api_ledger, days):
    from ledger.domain.errors import InvalidInput

    with pytest.raises(InvalidInput) as refused:
        api_ledger.set_finance_retention(days, by="test")

    assert refused.value.field == "days"
    assert api_ledger._study().finance_retention_days == 0


def test_a_list_page_opens_each_living_person_with_their_own_key_and_shows_the_erased_as_erased(
        client, admin, staff, api_ledger):
    names = [f"Listed Person {i}" for i in range(6)]
    pids = [client.post("/api/v1/participants", headers=staff, json={"name": n}).json["id"]
            for n in names]
    for pid in pids[1::2]:
        assert client.post(f"/api/v1/participants/{pid}/erasure", headers=admin,
                           json={"reason": "asked"}).status_code == 200

    page = client.get("/api/v1/participants?limit=200", headers=staff).json["items"]

    shown = {item["id"]: item for item in page}
    for i, pid in enumerate(pids):
        assert shown[pid]["erased"] is bool(i % 2)
        assert shown[pid]["name"] == ("[erased]" if i % 2 else names[i])
    # the page's keys come in one query: a destroyed key is None, the rest unwrap
    assert api_ledger.mapper.keys.get_many([]) == {}
    got = api_ledger.mapper.keys.get_many([uuid.UUID(p) for p in pids])
    assert [got[uuid.UUID(p)] is None for p in pids] == [bool(i % 2) for i in range(6)]


def test_the_receipt_says_how_consent_was_given_is_kept_as_it_is(client, admin, staff, person,
                                                                  api_ledger):
    """A consent given in BSL stays in the views as a fact after erasure (a report counts it);
    the receipt says so rather than implying only scope and dates are kept."""
    client.post(f"/api/v1/participants/{person}/consents", headers=staff,
                json={"scope": "take_part", "form_version": "1.0", "method": "bsl"})

    erased = client.post(f"/api/v1/participants/{person}/erasure", headers=admin,
                         json={"reason": "asked"}).json
    api_ledger.views_at_least()
    methods = {r["method"] for r in api_ledger.sql.query(
        "SELECT method FROM ledger_view_grants WHERE participant_id = %s", (person,))}

    assert "bsl" in methods
    assert "how it was given" in erased["receipt"]["kept"] and "BSL" in erased["receipt"]["kept"]
