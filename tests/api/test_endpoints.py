"""Every staff and admin endpoint through the Flask test client, with the state checked after."""

from __future__ import annotations

import uuid

import pytest

from .conftest import bearer


def _get(client, staff, pid):
    return client.get(f"/api/v1/participants/{pid}", headers=staff).json


def test_register_returns_a_random_id_and_a_short_reference(client, staff, pid):
    view = _get(client, staff, pid)

    assert view["name"] == "Ada Example" and view["communities"] == ["Black British"]
    assert view["reference"].startswith("ST-") and len(view["reference"]) == 11
    uuid.UUID(pid)


def test_the_list_is_paginated_in_registration_order(client, staff):
    ids = [client.post("/api/v1/participants", headers=staff, json={"name": f"P{i}"}).json["id"]
           for i in range(5)]

    first = client.get("/api/v1/participants?limit=2", headers=staff).json
    second = client.get(f"/api/v1/participants?limit=2&after={first['next_after']}",
                        headers=staff).json
    last = client.get(f"/api/v1/participants?limit=2&after={second['next_after']}",
                      headers=staff).json

    assert [p["id"] for p in first["items"] + second["items"] + last["items"]] == ids
    assert last["next_after"] is None


@pytest.mark.parametrize("query", ["limit=0", "limit=201", "limit=x", "after=nope",
                                   f"after={uuid.UUID(int=7)}"])
def test_bad_pagination_is_refused(client, staff, query):
    response = client.get(f"/api/v1/participants?{query}", headers=staff)

    assert response.status_code == 422
    assert set(response.json["errors"]) & {"limit", "after"}
    assert response.content_type == "application/problem+json"


def test_consent_grant_and_withdrawal_with_obligations_done(client, staff, pid):
    grant = client.post(f"/api/v1/participants/{pid}/consents", headers=staff, json={
        "scope": "quote", "form_version": "1.0", "method": "bsl", "attribution": "named"})
    withdrawal = client.post(f"/api/v1/participants/{pid}/consents/quote/withdrawal",
                             headers=staff, json={"channel": "email", "reason": "changed mind"})
    [obligation] = withdrawal.json["obligations"]
    done = client.post(f"/api/v1/participants/{pid}/obligations/{obligation['id']}/done",
                       headers=staff, json={"note": "quotes removed from the draft"})
    again = client.post(f"/api/v1/participants/{pid}/consents/quote/withdrawal",
                        headers=staff, json={"channel": "email"})

    assert (grant.status_code, grant.json["state"], grant.json["attribution"]) == (
        201, "given", "named")
    assert withdrawal.status_code == 201 and obligation["kind"] == "remove_quotes"
    assert done.status_code == 200 and done.json["done_at"]
    assert again.status_code == 409 and again.json["code"] == "ConsentAlreadyWithdrawn"
    view = _get(client, staff, pid)
    assert view["consents"]["quote"]["state"] == "withdrawn"
    assert view["obligations"][0]["done_at"] is not None


def test_access_need_and_its_outcome(client, staff, pid):
    need = client.post(f"/api/v1/participants/{pid}/access-needs", headers=staff,
                       json={"category": "BSL interpreter", "detail": "two interpreters"})
    outcome = client.post(
        f"/api/v1/participants/{pid}/access-needs/{need.json['need_id']}/outcome",
        headers=staff, json={"outcome": "met", "note": "booked"})

    assert need.status_code == 201 and outcome.status_code == 201
    assert _get(client, staff, pid)["access_needs"][0]["outcome"] == "met"


def test_arrangement_decline_and_reduction(client, staff, pid):
    arranged = client.post(f"/api/v1/participants/{pid}/payment-arrangements", headers=staff,
                           json={"activity": "conversation", "method": "voucher",
                                 "payee": "self", "benefits_advice_offered": True})
    reduced = client.post(f"/api/v1/participants/{pid}/payment-reductions", headers=staff,
                          json={"activity": "conversation", "amount": "10.00",
                                "reason": "benefits"})
    declined = client.post(f"/api/v1/participants/{pid}/payment-arrangements", headers=staff,
                           json={"activity": "workshop", "declined": True})

    assert arranged.status_code == reduced.status_code == declined.status_code == 201
    assert reduced.json["reduced_to"] == "10.00" and declined.json["declined"] is True
    view = _get(client, staff, pid)
    assert view["arrangements"]["conversation"]["method"] == "voucher"


@pytest.mark.parametrize("body, field", [
    ({"activity": "conversation"}, "method"),
    ({"activity": "conversation", "declined": True, "method": "cash"}, "method"),
])
def test_an_arrangement_is_either_agreed_or_declined(client, staff, pid, body, field):
    response = client.post(f"/api/v1/participants/{pid}/payment-arrangements", headers=staff,
                           json=body)

    assert response.status_code == 422 and field in response.json["errors"]


def test_payment_reversal_and_payment_again(client, staff, pid):
    pay = client.post(f"/api/v1/participants/{pid}/payments",
                      headers={**staff, "Idempotency-Key": "a"},
                      json={"activity": "conversation", "amount": "25.00",
                            "method": "bank_transfer", "reference": "REF-1"})
    reversal = client.post(f"/api/v1/participants/{pid}/payments/{pay.json['id']}/reversal",
                           headers=staff, json={"reason": "bank returned it"})
    again = client.post(f"/api/v1/participants/{pid}/payments",
                        headers={**staff, "Idempotency-Key": "b"},
                        json={"activity": "conversation", "amount": "25.00", "method": "cash"})

    assert pay.status_code == 201 and "reference" not in pay.json
    assert reversal.status_code == 201 and reversal.json["status"] == "reversed"
    assert again.status_code == 201
    assert [p["status"] for p in _get(client, staff, pid)["payments"]] == ["reversed", "paid"]


def test_a_payment_of_another_participant_is_not_found(client, staff, pid):
    other = client.post("/api/v1/participants", headers=staff, json={"name": "Other"}).json["id"]
    pay = client.post(f"/api/v1/participants/{other}/payments",
                      headers={**staff, "Idempotency-Key": "x"},
                      json={"activity": "conversation", "amount": "25.00", "method": "cash"})

    response = client.post(f"/api/v1/participants/{pid}/payments/{pay.json['id']}/reversal",
                           headers=staff, json={"reason": "wrong person"})

    assert response.status_code == 404


def test_expenses_are_separate_lines(client, staff, pid):
    response = client.post(f"/api/v1/participants/{pid}/expenses", headers=staff, json={
        "activity": "workshop", "amount": "7.40", "method": "cash", "description": "bus"})

    assert response.status_code == 201
    assert [(e["amount"], e["currency"]) for e in _get(client, staff, pid)["expenses"]] == [
        ("7.40", "GBP")]
    assert _get(client, staff, pid)["payments"] == []


def test_admin_erasure_then_nothing_more_can_be_recorded(client, staff, tokens, pid):
    erased = client.post(f"/api/v1/participants/{pid}/erasure", headers=bearer(tokens["admin"]),
                         json={"reason": "participant asked"})
    pay = client.post(f"/api/v1/participants/{pid}/payments",
                      headers={**staff, "Idempotency-Key": "e"},
                      json={"activity": "conversation", "amount": "25.00", "method": "cash"})
    twice = client.post(f"/api/v1/participants/{pid}/erasure", headers=bearer(tokens["admin"]),
                        json={"reason": "again"})

    assert erased.status_code == 200 and erased.json["erased"] is True
    assert pay.status_code == 409 and pay.json["code"] == "ParticipantErased"
    assert twice.status_code == 409
    view = _get(client, staff, pid)
    assert view["name"] == "[erased]" and view["email"] == "[erased]"
    assert "Ada" not in str(view)


def test_an_erasure_needs_a_reason(client, tokens, pid):
    response = client.post(f"/api/v1/participants/{pid}/erasure",
                           headers=bearer(tokens["admin"]), json={})

    assert response.status_code == 422 and "reason" in response.json["errors"]


def test_a_list_asked_for_beyond_the_views_is_503_with_retry_after_then_200(tmp_path,
                                                                             monkeypatch):
    """Views kept by another process (``ledger projections run``): a list asked for with a
    write's ``Ledger-Position`` waits for the views, then says 503 and when to ask again; once
    the views have passed the write, the same request lists it."""
    import ledger.application
    from ledger.api import create_app
    from ledger.application import Ledger

    monkeypatch.setattr(ledger.application, "VIEW_WAIT_S", 0.2)
    lg = Ledger({"LEDGER_DATA_DIR": str(tmp_path), "LEDGER_PROJECTIONS": "external"})
    try:
        lg.init_study(by="test")
        staff = bearer(lg.tokens.create("staff", "s")[1])
        client = create_app({"LEDGER": lg, "TESTING": True}).test_client()
        made = client.post("/api/v1/participants", headers=staff, json={"name": "Behind Example"})
        assert made.status_code == 201
        position = int(made.headers["Ledger-Position"])
        url = f"/api/v1/participants?limit=50&min_position={position}"

        behind = client.get(url, headers=staff)
        as_they_stand = client.get("/api/v1/participants?limit=50", headers=staff)

        assert behind.status_code == 503 and behind.headers["Retry-After"] == "1"
        # Not asked to include the write: the views as they stand, at once (not the report's wait)
        assert as_they_stand.status_code == 200 and as_they_stand.json["items"] == []
        assert behind.content_type == "application/problem+json"
        assert behind.json["code"] == "ViewsBehind"
        lg.projector.catch_up()  # what the follower process does
        listed = client.get(url, headers=staff)
        assert listed.status_code == 200
        assert made.json["id"] in {item["id"] for item in listed.json["items"]}
    finally:
        lg.close()


def test_a_use_that_names_someone_needs_their_consent_to_be_named(client, staff, pid):
    """A quote under consent to be quoted anonymously is in order; the same quote naming the
    person is flagged, in the answer and in their record, and so is a use that says neither."""
    base = f"/api/v1/participants/{pid}"
    assert client.post(f"{base}/consents", headers=staff, json={
        "scope": "quote", "form_version": "1.0", "method": "online",
        "attribution": "anonymous"}).status_code == 201

    answers = [client.post(f"{base}/uses", headers=staff, json={
        "scope": "quote", "purpose": "the workshop summary", **extra})
        for extra in ({"attribution": "anonymous"}, {"attribution": "named"}, {})]

    assert [a.status_code for a in answers] == [201] * 3
    assert [(a.json["attribution"], a.json["consented_attribution"], a.json["without_consent"])
            for a in answers] == [("anonymous", "anonymous", False),
                                  ("named", "anonymous", True), (None, "anonymous", False)]
    assert [(u["attribution"], u["consented_attribution"]) for u in _get(client, staff, pid)[
        "uses"]] == [("anonymous", "anonymous"), ("named", "anonymous"), (None, "anonymous")]
    page = client.get(f"{base}/export?format=html", headers=staff).data.decode()
    assert page.count("This use named you") == 1 and page.count("This use did not name you") == 1


@pytest.mark.parametrize("body", [{"scope": "record", "attribution": "named"},
                                  {"scope": "quote", "attribution": "by name"},
                                  {"scope": "quote", "attribution": 1}])
def test_a_use_with_an_attribution_that_does_not_apply_is_refused(client, staff, pid, body):
    before = _get(client, staff, pid)["uses"]

    r = client.post(f"/api/v1/participants/{pid}/uses", headers=staff,
                    json={"purpose": "the report", **body})

    assert r.status_code == 422 and r.content_type == "application/problem+json"
    assert "attribution" in str(r.json)
    assert _get(client, staff, pid)["uses"] == before


def test_after_a_decline_is_undone_the_reduction_s_reason_stands_not_the_decline_s(client,
                                                                                    staff, pid):
    base = f"/api/v1/participants/{pid}"
    steps = [("payment-reductions", {"activity": "workshop", "amount": "10.00",
                                     "reason": "benefits limit"}),
             ("payment-arrangements", {"activity": "workshop", "declined": True,
                                       "reason": "does not want paying"}),
             ("payment-arrangements", {"activity": "workshop", "method": "bank_transfer",
                                       "payee": "self", "benefits_advice_offered": True}),
             ("payment-arrangements", {"activity": "conversation", "declined": True,
                                       "reason": "not this time"}),
             ("payment-arrangements", {"activity": "conversation", "method": "cash",
                                       "payee": "self", "benefits_advice_offered": False})]
    assert [client.post(f"{base}/{path}", headers=staff, json=body).status_code
            for path, body in steps] == [201] * 5

    arrangements = _get(client, staff, pid)["arrangements"]

    assert (arrangements["workshop"]["declined"], arrangements["workshop"]["reduced_to"],
            arrangements["workshop"]["reason"]) == (False, "10.00", "benefits limit")
    assert (arrangements["conversation"]["declined"],
            arrangements["conversation"]["reason"]) == (False, None)


def test_a_rate_lowered_below_a_reduction_is_what_is_due(client, staff, pid, api_ledger):
    """Someone asked for £20 of a £25 fee; the fee then became £15: £15 is due, and paying the
    £20 needs a reason, as any amount other than what is due does."""
    base = f"/api/v1/participants/{pid}"
    assert client.post(f"{base}/payment-reductions", headers=staff, json={
        "activity": "workshop", "amount": "20.00", "reason": "benefits"}).status_code == 201
    api_ledger.set_rate("workshop", "15.00", by="t")

    too_much = client.post(f"{base}/payments", headers={**staff, "Idempotency-Key": "k1"},
                           json={"activity": "workshop", "amount": "20.00", "method": "cash"})
    due = client.post(f"{base}/payments", headers={**staff, "Idempotency-Key": "k2"},
                      json={"activity": "workshop", "amount": "15.00", "method": "cash"})

    assert too_much.status_code == 422 and "reason" in too_much.json["errors"]
    assert due.status_code == 201
    assert [(p["amount"], p["expected"]) for p in _get(client, staff, pid)["payments"]] == [
        ("15.00", "15.00")]
