"""Hostile and malformed input: a clear 4xx problem+json naming what is wrong, and nothing written."""

from __future__ import annotations

import json
import uuid

import pytest

PAY = {"activity": "conversation", "amount": "25.00", "method": "cash"}


def _written(api_ledger) -> tuple[int, ...]:
    """Everything a request could write: events, data keys, idempotency rows, links."""
    counts = [api_ledger.recorder.max_notification_id()]
    for table in ("ledger_data_keys", "ledger_idempotency", "ledger_links"):
        counts.append(api_ledger.sql.query(f"SELECT COUNT(*) AS n FROM {table}")[0]["n"])
    return tuple(counts)
# Amounts the domain could read but the published pattern (^[0-9]{1,9}(\.[0-9]{1,2})?$) refuses.
LOOSE_AMOUNTS = [" 25", "25 ", "\u00a025", "\t25", "25\n", "25.0000", "00000000025", "+25"]
CASES = [
    # (name, path, body or raw bytes, expected status, field named)
    ("malformed json", "/participants", b'{"name": ', 400, "json"),
    ("non-utf8 bytes", "/participants", b'{"name": "\xff\xfe"}', 400, "json"),
    ("a key given twice", "/participants", b'{"name": "Ada", "name": "Bo"}', 400, "json"),
    ("a key given twice, in a consent", "/participants/{pid}/consents",
     b'{"scope": "take_part", "form_version": "1.0", "method": "online", "method": "bsl"}', 400,
     "json"),
    ("NaN", "/participants", b'{"name": NaN}', 400, "json"),
    ("Infinity as an amount", "/participants/{pid}/payments",
     b'{"activity": "conversation", "amount": Infinity, "method": "cash"}', 400, "json"),
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
    ("an integer too long to convert", "/participants", b'{"name": ' + b"1" * 4301 + b"}", 400,
     "json"),
    ("an unknown field named with a sentence", "/participants",
     {"name": "A", "Zebedee Quarrington lives at 1 High St": 1}, 422, "_unknown_fields"),
    ("declined as a string", "/participants/{pid}/payment-arrangements",
     {"activity": "conversation", "declined": "yes"}, 422, "declined"),
    ("advice offered as a number", "/participants/{pid}/payment-arrangements",
     {"activity": "conversation", "method": "cash", "payee": "self",
      "benefits_advice_offered": 1}, 422, "benefits_advice_offered"),
    *[(f"amount {amount!r}", "/participants/{pid}/payments", {**PAY, "amount": amount}, 422,
       "amount") for amount in LOOSE_AMOUNTS],
    *[(f"expense amount {amount!r}", "/participants/{pid}/expenses",
       {"activity": "conversation", "amount": amount, "method": "cash", "description": "bus"},
       422, "amount") for amount in LOOSE_AMOUNTS],
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
    assert response.json["code"], response.json
    if field:
        assert field in response.json["errors"], response.json
    assert "Traceback" not in response.get_data(as_text=True)
    assert _written(api_ledger) == before


@pytest.mark.parametrize("body, said", [
    (b'{"name": "Ada", "name": "Bo"}', "a key is given more than once in one object"),
    (b'{"name": -Infinity}', "-Infinity is not JSON"),
    (b'{"name": "Ada",}', "Invalid JSON body."),
])
def test_json_python_would_take_but_that_is_ambiguous_says_why(client, staff, body, said):
    response = client.post("/api/v1/participants", headers=staff, data=body,
                           content_type="application/json")

    assert response.status_code == 400 and response.json["errors"] == {"json": [said]}
    assert b"Bo" not in response.data


def test_every_problem_has_a_code(client, staff, tokens, pid):
    """The README promises each problem its ``code``, not only the domain's errors."""
    auditor = {"Authorization": f"Bearer {tokens['auditor']}"}
    pay = f"/api/v1/participants/{pid}/payments"
    body = {"activity": "conversation", "amount": "25.00", "method": "cash"}
    client.post(f"/api/v1/participants/{pid}/payment-arrangements", headers=staff, json={
        "activity": "conversation", "method": "cash", "payee": "self",
        "benefits_advice_offered": True})
    assert client.post(pay, headers={**staff, "Idempotency-Key": "k1"}, json=body).status_code \
        == 201
    answers = {
        "AuthenticationRequired": client.get("/api/v1/study"),
        "RoleNotAllowed": client.get("/api/v1/participants", headers=auditor),
        "ParticipantNotFound": client.get(f"/api/v1/participants/{uuid.uuid4()}",
                                          headers=staff),
        "NotFound": client.get("/api/v1/nowhere", headers=staff),
        "MethodNotAllowed": client.delete(f"/api/v1/participants/{pid}", headers=staff),
        "IdempotencyKeyRequired": client.post(pay, headers=staff, json=body),
        "IdempotencyKeyReused": client.post(pay, headers={**staff, "Idempotency-Key": "k1"},
                                            json={**body, "amount": "20.00"}),
        "InvalidInput": client.post("/api/v1/participants", headers=staff,
                                    json={"name": "x", "extra": 1}),
        "UnsupportedMediaType": client.post("/api/v1/participants", headers=staff,
                                            data="name=x", content_type="text/plain"),
        "RequestTooLarge": client.post("/api/v1/participants", headers=staff,
                                       data=b'{"name": "' + b"x" * 70_000 + b'"}',
                                       content_type="application/json"),
    }
    for _ in range(200):
        answers["TooManyRequests"] = client.get("/api/v1/study",
                                                headers={"Authorization": "Bearer wrong"})
        if answers["TooManyRequests"].status_code == 429:
            break

    got = {code: (r.status_code, r.content_type, r.json.get("code")) for code, r in answers.items()}
    assert all(ct == "application/problem+json" and c == code
               for code, (_, ct, c) in got.items()), got
    assert got["TooManyRequests"][0] == 429


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


@pytest.mark.parametrize("name", [
    "Quillfeather <b>Secretname</b>",  # markup
    "Quillfeather Secretname \x07",  # a control character
    "Quillfeather Secretname \u202e",  # a bidirectional override
    "Quillfeather Secretname \ud800",  # a lone surrogate (JSON can carry one escaped)
    "Quillfeather Secretname " * 40,  # too long
], ids=["markup", "control", "bidi", "surrogate", "too-long"])
def test_error_bodies_never_echo_personal_input(client, staff, api_ledger, name):
    """Every way a text field is refused names the field and the rule, never the text."""
    body = json.dumps({"name": name, "email": "Secretname@example.invalid"})
    before = api_ledger.recorder.max_notification_id()

    response = client.post("/api/v1/participants", headers=staff, data=body,
                           content_type="application/json")

    assert response.status_code == 422 and list(response.json["errors"]) == ["name"]
    text = response.get_data(as_text=True)
    assert "Secretname" not in text and "Quillfeather" not in text
    assert api_ledger.recorder.max_notification_id() == before  # nothing written


def test_a_sentence_used_as_a_field_name_is_not_repeated(client, staff):
    response = client.post("/api/v1/participants", headers=staff,
                           json={"name": "A", "Zebedee Quarrington lives at 1 High St": 1,
                                 "nmae": "B"})

    assert response.status_code == 422
    assert "Quarrington" not in response.get_data(as_text=True)
    assert response.json["errors"]["nmae"] == ["Unknown field."]  # a field name is still named
    assert response.json["errors"]["_unknown_fields"]


@pytest.fixture
def obligation(client, staff, pid) -> str:
    """The id of the follow-up work a withdrawal opened (its /done takes an optional note)."""
    opened = client.post(f"/api/v1/participants/{pid}/consents", headers=staff, json={
        "scope": "record", "form_version": "1.0", "method": "online"})
    assert opened.status_code == 201
    withdrawn = client.post(f"/api/v1/participants/{pid}/consents/record/withdrawal",
                            headers=staff, json={"channel": "phone"})
    return withdrawn.json["obligations"][0]["id"]


def test_a_body_that_is_not_declared_as_json_is_415_not_ignored(client, staff, pid, obligation,
                                                                 api_ledger):
    """curl -d sends application/x-www-form-urlencoded: the body must not be read as empty."""
    before = _written(api_ledger)

    for content_type in ("application/x-www-form-urlencoded", "text/plain", None):
        response = client.post(f"/api/v1/participants/{pid}/obligations/{obligation}/done",
                               headers=staff, data=b'{"note": "deleted from the cloud"}',
                               content_type=content_type)

        assert response.status_code == 415, (content_type, response.json)
        assert response.content_type == "application/problem+json"
        assert "Content-Type" in response.json["errors"]
    assert _written(api_ledger) == before
    done = client.post(f"/api/v1/participants/{pid}/obligations/{obligation}/done",
                       headers=staff, json={"note": "deleted from the cloud"})
    assert done.status_code == 200


def test_an_empty_body_needs_no_content_type(client, staff, pid, obligation):
    response = client.post(f"/api/v1/participants/{pid}/obligations/{obligation}/done",
                           headers=staff)

    assert response.status_code == 200, response.json


def test_a_doubled_slash_is_404_not_a_redirect_built_from_the_host(client, staff, pid):
    response = client.post(f"/api/v1//participants/{pid}/consents", headers={
        **staff, "Host": "evil.example"}, json={
        "scope": "record", "form_version": "1.0", "method": "online"})

    assert response.status_code == 404
    assert response.content_type == "application/problem+json"
    assert "Location" not in response.headers


@pytest.mark.parametrize("query", [
    "limit=%EF%BC%95", "limit=%2B5", "limit=5_0", "limit=%205", "limit=5.0", "cursor=x",
    "min_position=999999999", "min_position=9223372036854775808", "limit=5&limit=7"])
def test_list_query_parameters_are_read_strictly(client, staff, pid, query):
    response = client.get(f"/api/v1/participants?{query}", headers=staff)

    assert response.status_code == 422, response.json
    assert response.content_type == "application/problem+json"
    assert query.split("=")[0] in response.json["errors"]


@pytest.mark.parametrize("query", [
    "after=9223372036854775807", "after=99999999999999999999999", "after=%EF%BC%91",
    "limit=10&since=1"])
def test_audit_feed_positions_beyond_a_bigint_are_422(client, tokens, query):
    response = client.get(f"/api/v1/audit/events?{query}",
                          headers={"Authorization": f"Bearer {tokens['auditor']}"})

    assert response.status_code == 422, response.json
    assert response.content_type == "application/problem+json"


def test_the_largest_position_is_still_an_answer(client, tokens):
    response = client.get("/api/v1/audit/events?after=9223372036854775806",
                          headers={"Authorization": f"Bearer {tokens['auditor']}"})

    assert response.status_code == 200
    assert response.json["items"] == [] and response.json["next_after"] is None


@pytest.mark.parametrize("method, path", [
    ("post", "/participants?name=Zebedee%20Quarrington"),
    ("post", "/participants/{pid}/withdrawal-link?x=1"),
    ("post", "/participants/{pid}/consents?x=1"),
    ("get", "/study?x=1"),
    ("get", "/participants/{pid}?x=1"),
    ("get", "/participants/{pid}/export?format=json&x=1"),
])
def test_an_undocumented_query_parameter_is_422_on_every_operation(client, staff, pid, api_ledger,
                                                                   method, path):
    before = _written(api_ledger)
    body = ({"scope": "record", "form_version": "1.0", "method": "online"} if "consents" in path
            else {"name": "Someone"} if path.startswith("/participants?") else None)

    response = getattr(client, method)("/api/v1" + path.replace("{pid}", pid), headers=staff,
                                       json=body)

    assert response.status_code == 422, response.json
    assert response.content_type == "application/problem+json"
    assert "Quarrington" not in response.get_data(as_text=True)
    assert set(response.json["errors"]) & {"x", "name", "_unknown_fields"}
    assert _written(api_ledger) == before


@pytest.mark.parametrize("path", [
    "/participants?limit=5", "/participants/{pid}/export?format=json", "/study"])
def test_documented_query_parameters_still_work(client, staff, pid, path):
    response = client.get("/api/v1" + path.replace("{pid}", pid), headers=staff)

    assert response.status_code == 200


def test_an_unknown_query_parameter_is_only_told_to_a_caller_who_may_call(client, pid):
    response = client.get(f"/api/v1/participants/{pid}?x=1")

    assert response.status_code == 401
