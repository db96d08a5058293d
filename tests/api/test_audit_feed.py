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


def test_amounts_in_the_feed_are_also_strings_in_pounds_as_everywhere_in_the_api(
        client, auditor, history, staff):
    """The contract: "Amounts are strings in pounds ("25.00")". The feed showed the stored
    integer pence alone (``amount_pence: 2500``); each such amount now has its pounds beside it,
    nested ones (the study's rates) too, and the pence stay for scripts that read them."""
    reduction = client.post(f"/api/v1/participants/{history}/payment-reductions",
                            headers=staff,
                            json={"activity": "workshop", "amount": "10.50", "reason": "b"})
    assert reduction.status_code == 201, reduction.json
    items = client.get("/api/v1/audit/events?limit=1000", headers=auditor).json["items"]

    paid = next(e["data"] for e in items if e["topic"] == "ledger:Payment.Recorded")
    reduced = next(e["data"] for e in items if e["topic"].endswith("PaymentReduced"))
    study = next(e["data"] for e in items if e["topic"] == "ledger:Study.Created")
    assert (paid["amount"], paid["expected"], paid["amount_pence"]) == ("25.00", "25.00", 2500)
    assert (reduced["amount"], reduced["amount_pence"]) == ("10.50", 1050)
    rates = [a for a in _dicts(study) if "rate_pence" in a]
    assert rates and all(a["rate"] == f"{a['rate_pence'] // 100}.{a['rate_pence'] % 100:02d}"
                         for a in rates)


def _dicts(value):
    if isinstance(value, dict):
        yield value
        for v in value.values():
            yield from _dicts(v)
    elif isinstance(value, list):
        for v in value:
            yield from _dicts(v)


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


@pytest.mark.parametrize("change", ["flip", "null"])
def test_an_event_changed_in_the_database_is_named_by_the_feed_and_the_proof(
        client, auditor, history, api_ledger, caplog, change):
    """The feed and the inclusion proof read stored events: one changed after it was written is
    a 500 that names its position (the next step is `ledger verify`), not a bare one."""
    api_ledger.merkle.checkpoint()
    table = api_ledger.recorder.events_table_name
    row = api_ledger.sql.query(f"SELECT rowid, state FROM {{t}}{table} WHERE topic = %s",
                               ("ledger:Participant.AccessNeedRequested",))[0]
    state = bytearray(row["state"])
    state[-1] ^= 1
    api_ledger.sql.execute(f"UPDATE {{t}}{table} SET state = %s WHERE rowid = %s",
                           (bytes(state) if change == "flip" else None, row["rowid"]))

    feed = client.get("/api/v1/audit/events?limit=1000", headers=auditor)
    proof = client.get(f"/api/v1/audit/proofs/inclusion?position={row['rowid']}",
                       headers=auditor)

    answers = [feed] if change == "flip" else [feed, proof]  # (a proof shows bytes as stored)
    for answer in answers:
        assert answer.status_code == 500, answer.json
        assert answer.json["code"] == "UnreadableEvent"
        assert f"the event at position {row['rowid']} cannot be read" in answer.json["detail"]
    if change == "flip":
        assert proof.status_code == 200  # the bytes as stored, whose leaf no longer matches
    text = feed.get_data(as_text=True) + proof.get_data(as_text=True) + caplog.text
    assert not [s for s in SECRETS if s in text]
