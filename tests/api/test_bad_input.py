"""Hostile and malformed input: a clear 4xx problem+json naming what is wrong, and nothing written."""

from __future__ import annotations

import uuid

import pytest

PAY = {"activity": "conversation", "amount": "25.00", "method": "cash"}


def _written(api_ledger) -> tuple[int, ...]:
    """Everything a request could write: events, data keys, idempotency rows, links."""
    counts = [api_ledger.recorder.max_notification_id()]
    for table in ("ledger_data_keys", "ledger_idempotency", "ledger_links"):
        counts.append(api_ledger.sql.query(f"SELECT COUNT(*) AS n FROM {table}")[0]["n"])
    return tuple(counts)
CASES = [
    # (name, path, body or raw bytes, expected status, field named)
    ("malformed json", "/participants", b'{"name": ', 400, "json"),
    ("non-utf8 bytes", "/participants", b'{"name": "\xff\xfe"}', 400, "json"),
    ("json array", "/participants", b"[1, 2]", 422, None),
    ("wrong type", "/participants", {"name": 42}, 422, "name"),
    ("missing field", "/participants", {}, 422, "name"),
    ("unknown field", "/participants", {"name": "A", "admin": True}, 422, "admin"),
    ("oversized string", "/participants", {"name": "x" * 201}, 422, "name"),
    ("html in a name", "/participants", {"name": "<script>alert(1)</script>"}, 422, "name"),
    ("control characters", "/participants", {"name": "A\x00B"}, 422, "name"),
    ("lone surrogate", "/participants", b'{"name": "\\ud800"}', 422, "name"),
    ("surrogate in a reference", "/participants/{pid}/payments",
     b'{"activity": "conversation", "amount": "25.00", "method": "cash", '
     b'"reference": "\\udfff"}', 422, "reference"),
    ("bidi override", "/participants", {"name": "abc\u202edef"}, 422, "name"),
    ("only a byte-order mark", "/participants", {"name": "\ufeff"}, 422, "name"),
    ("bad email", "/participants", {"name": "A", "email": "not an email"}, 422, "email"),
    ("communities not a list", "/participants", {"name": "A", "communities": "x"}, 422,
     "communities"),
    ("a reason with an arrangement", "/participants/{pid}/payment-arrangements",
     {"activity": "conversation", "method": "cash", "payee": "self",
      "benefits_advice_offered": True, "reason": "would be dropped"}, 422, "reason"),
    ("amount 25.001", "/participants/{pid}/payments", {**PAY, "amount": "25.001"}, 422, "amount"),
    ("amount -1", "/participants/{pid}/payments", {**PAY, "amount": "-1"}, 422, "amount"),
    ("amount 1e3", "/participants/{pid}/payments", {**PAY, "amount": "1e3"}, 422, "amount"),
    ("amount GBP 25", "/participants/{pid}/payments", {**PAY, "amount": "GBP 25"}, 422, "amount"),
    ("amount as a number", "/participants/{pid}/payments", {**PAY, "amount": 25}, 422, "amount"),
    ("currency USD", "/participants/{pid}/payments", {**PAY, "currency": "USD"}, 422, "currency"),
    ("unknown activity", "/participants/{pid}/payments", {**PAY, "activity": "lunch"}, 422,
     "activity"),
    ("unknown method", "/participants/{pid}/payments", {**PAY, "method": "bitcoin"}, 422,
     "method"),
    ("html in a reference", "/participants/{pid}/payments", {**PAY, "reference": "<b>x</b>"},
     422, "reference"),
    ("unknown scope", "/participants/{pid}/consents",
     {"scope": "tweet", "form_version": "1.0", "method": "online"}, 422, "scope"),
    ("unregistered form", "/participants/{pid}/consents",
     {"scope": "record", "form_version": "9", "method": "online"}, 422, "form_version"),
    ("withdraw never given", "/participants/{pid}/consents/publish/withdrawal",
     {"channel": "phone"}, 409, "scope"),
    ("participant link channel by staff", "/participants/{pid}/consents/record/withdrawal",
     {"channel": "participant_link"}, 422, "channel"),
    ("long access need category", "/participants/{pid}/access-needs",
     {"category": "c" * 81, "detail": ""}, 422, "category"),
    ("long access need detail", "/participants/{pid}/access-needs",
     {"category": "breaks", "detail": "d" * 2001}, 422, "detail"),
    ("unknown participant", f"/participants/{uuid.uuid4()}/consents",
     {"scope": "record", "form_version": "1.0", "method": "online"}, 404, None),
    ("id of the wrong shape", "/participants/not-a-uuid/consents",
     {"scope": "record", "form_version": "1.0", "method": "online"}, 404, None),
    ("unknown need", f"/participants/{{pid}}/access-needs/{uuid.uuid4()}/outcome",
     {"outcome": "met"}, 404, None),
    ("unknown payment", f"/participants/{{pid}}/payments/{uuid.uuid4()}/reversal",
     {"reason": "x"}, 404, None),
]


@pytest.mark.parametrize("name, path, body, status, field", CASES, ids=[c[0] for c in CASES])
def test_bad_input_gets_a_clear_problem_and_writes_nothing(client, staff, pid, api_ledger,
                                                           name, path, body, status, field):
    url = "/api/v1" + path.replace("{pid}", pid)
    headers = {**staff, "Idempotency-Key": str(uuid.uuid4()), "Content-Type": "application/json"}
    before = _written(api_ledger)

    if isinstance(body, bytes):
        response = client.post(url, data=body, headers=headers)
    else:
        response = client.post(url, json=body, headers=headers)

    assert response.status_code == status, response.json
    assert response.content_type == "application/problem+json"
    assert response.json["status"] == status and response.json["title"]
    if field:
        assert field in response.json["errors"], response.json
    assert "Traceback" not in response.get_data(as_text=True)
    assert _written(api_ledger) == before


def test_a_body_over_the_size_limit_is_413(client, staff, api_ledger):
    before = api_ledger.recorder.max_notification_id()

    response = client.post("/api/v1/participants", headers=staff,
                           data=b'{"name": "' + b"x" * 70_000 + b'"}',
                           content_type="application/json")

    assert response.status_code == 413
    assert response.content_type == "application/problem+json"
    assert api_ledger.recorder.max_notification_id() == before


def test_sql_looking_text_is_stored_as_written_and_harms_nothing(client, staff, api_ledger):
    name = "Robert'); DROP TABLE stored_events;--"

    response = client.post("/api/v1/participants", headers=staff, json={"name": name})

    assert response.status_code == 201
    assert client.get(f"/api/v1/participants/{response.json['id']}",
                      headers=staff).json["name"] == name
    assert api_ledger.recorder.max_notification_id() > 0


def test_error_bodies_never_echo_personal_input(client, staff):
    response = client.post("/api/v1/participants", headers=staff,
                           json={"name": "Quillfeather <b>Secretname</b>"})

    assert response.status_code == 422
    assert "Secretname" not in response.get_data(as_text=True)
