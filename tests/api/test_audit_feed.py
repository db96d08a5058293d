"""GET /audit/events: the ordered log for auditors, with personal data redacted."""

from __future__ import annotations

import pytest

from .conftest import bearer

SECRETS = ["Quillon Auditfeed", "quillon@example.invalid", "Quillon-community",
           "Quillon needs", "QUILLON-REF", "Quillon reason"]


@pytest.fixture
def auditor(tokens):
    return bearer(tokens["auditor"])


@pytest.fixture
def history(client, staff):
    pid = client.post("/api/v1/participants", headers=staff, json={
        "name": SECRETS[0], "email": SECRETS[1], "communities": [SECRETS[2]]}).json["id"]
    client.post(f"/api/v1/participants/{pid}/access-needs", headers=staff,
                json={"category": "breaks", "detail": SECRETS[3]})
    client.post(f"/api/v1/participants/{pid}/consents", headers=staff,
                json={"scope": "record", "form_version": "1.0", "method": "online"})
    client.post(f"/api/v1/participants/{pid}/consents/record/withdrawal", headers=staff,
                json={"channel": "phone", "reason": SECRETS[5]})
    client.post(f"/api/v1/participants/{pid}/payments", headers={**staff, "Idempotency-Key": "k"},
                json={"activity": "conversation", "amount": "25.00", "method": "cash",
                      "reference": SECRETS[4]})
    return pid


def test_the_feed_lists_every_event_in_order_with_time_and_actor(client, auditor, history,
                                                                 api_ledger):
    feed = client.get("/api/v1/audit/events?limit=1000", headers=auditor).json

    ids = [e["id"] for e in feed["items"]]
    assert ids == sorted(ids) and len(ids) == api_ledger.recorder.max_notification_id()
    withdrawn = [e for e in feed["items"] if e["topic"] == "ledger:Participant.ConsentWithdrawn"]
    assert withdrawn[0]["actor"].startswith("staff:") and withdrawn[0]["recorded_at"]
    assert withdrawn[0]["data"]["scope"] == "record"
    assert withdrawn[0]["data"]["channel"] == "phone"
    assert withdrawn[0]["data"]["reason"] == "[personal data]"
    assert feed["next_after"] is None


def test_the_feed_holds_no_personal_data(client, auditor, history):
    text = client.get("/api/v1/audit/events?limit=1000", headers=auditor).get_data(as_text=True)

    assert [s for s in SECRETS if s in text] == []
    assert "[personal data]" in text


def test_the_feed_pages_by_id(client, auditor, history):
    first = client.get("/api/v1/audit/events?limit=3", headers=auditor).json
    second = client.get(f"/api/v1/audit/events?limit=3&after={first['next_after']}",
                        headers=auditor).json

    assert [e["id"] for e in first["items"]] == [1, 2, 3]
    assert second["items"][0]["id"] == 4


@pytest.mark.parametrize("query", ["after=-1", "after=x", "limit=0", "limit=1001", "limit=2.5"])
def test_bad_paging_is_a_clear_422(client, auditor, query):
    response = client.get(f"/api/v1/audit/events?{query}", headers=auditor)

    assert response.status_code == 422
    assert set(response.json["errors"]) & {"after", "limit"}


def test_staff_cannot_read_the_feed(client, staff):
    assert client.get("/api/v1/audit/events", headers=staff).status_code == 403
