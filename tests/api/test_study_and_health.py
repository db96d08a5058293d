import re

import pytest

from .conftest import bearer


def test_staff_and_auditors_read_the_study_with_rates_as_strings(client, tokens):
    for role in ("staff", "auditor"):
        response = client.get("/api/v1/study", headers=bearer(tokens[role]))

        assert response.status_code == 200
        assert {a["name"]: a["rate"] for a in response.json["activities"]} == {
            "conversation": "25.00", "workshop": "25.00"}
        assert [f["current"] for f in response.json["consent_forms"]] == [True]


@pytest.mark.parametrize("header", [None, "Bearer", "Bearer lgr_notarealtoken", "Basic abc",
                                    "bearer  ", "Token x"])
def test_no_valid_token_is_401_problem_json(client, header):
    headers = {"Authorization": header} if header else {}

    response = client.get("/api/v1/study", headers=headers)

    assert response.status_code == 401
    assert response.content_type == "application/problem+json"
    assert response.json["status"] == 401 and response.headers["WWW-Authenticate"].startswith(
        "Bearer")


def test_a_revoked_token_is_401(client, api_ledger):
    info, token = api_ledger.tokens.create("staff", "leaver")
    api_ledger.tokens.revoke(info.id)

    assert client.get("/api/v1/study", headers=bearer(token)).status_code == 401


def test_the_wrong_role_is_403(client, tokens):
    response = client.get("/api/v1/study", headers=bearer(tokens["admin"]))

    assert response.status_code == 403
    assert response.content_type == "application/problem+json"


def test_every_response_carries_the_security_headers(client, tokens):
    response = client.get("/api/v1/study", headers=bearer(tokens["staff"]))

    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["Cache-Control"] == "no-store"
    assert response.headers["Referrer-Policy"] == "no-referrer"
    assert "frame-ancestors 'none'" in response.headers["Content-Security-Policy"]
    assert response.headers["Strict-Transport-Security"] == "max-age=31536000"  # https links


def test_no_strict_transport_security_when_served_over_plain_http(tmp_path):
    from ledger.api import create_app
    from ledger.application import Ledger

    lg = Ledger({"LEDGER_DATA_DIR": str(tmp_path), "LEDGER_BASE_URL": "http://127.0.0.1:8000"})
    try:
        response = create_app({"LEDGER": lg, "TESTING": True}).test_client().get("/healthz")
    finally:
        lg.close()

    assert response.status_code == 200
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert "Strict-Transport-Security" not in response.headers


def test_openapi_document_and_local_swagger_ui_are_served(client):
    spec = client.get("/api/v1/openapi.json")
    docs = client.get("/api/v1/docs")
    asset = client.get("/api/v1/docs/static/swagger-ui-bundle.js")

    asset.close()
    assert spec.status_code == docs.status_code == asset.status_code == 200
    assert "/api/v1/study" in spec.json["paths"]
    assert b"/api/v1/docs/static/swagger-ui-bundle.js" in docs.data
    start = client.get("/api/v1/docs/start.js")
    assert start.status_code == 200 and b"SwaggerUIBundle" in start.data
    # No inline script: the CSP allows scripts from the ledger's own address only.
    scripts = re.findall(rb"<script[^>]*>", docs.data)
    assert len(scripts) == 3 and all(b" src=" in s for s in scripts), scripts
    assert "'unsafe-inline'" not in docs.headers["Content-Security-Policy"]


def test_every_operation_that_takes_a_body_documents_415(client):
    paths = client.get("/api/v1/openapi.json").json["paths"]
    operations = [(method, path, op) for path, ops in paths.items() for method, op in ops.items()
                  if isinstance(op, dict) and "responses" in op]

    with_body = [(m, p) for m, p, op in operations if "requestBody" in op]
    assert len(with_body) >= 12
    assert [(m, p) for m, p, op in operations if "requestBody" in op
            and "415" not in op["responses"]] == []
    assert [(m, p) for m, p, op in operations if "requestBody" not in op
            and "415" in op["responses"]] == []


def test_health_and_readiness(client):
    assert client.get("/healthz").json == {"status": "ok"}
    assert client.get("/readyz").json == {"status": "ready"}


def test_tokens_are_stored_only_as_keyed_hashes(api_ledger):
    info, token = api_ledger.tokens.create("staff", "hash check")

    rows = repr([tuple(r) for r in api_ledger.sql.query("SELECT * FROM ledger_tokens")])

    assert token not in rows and info.id in rows
    assert len(token) >= 43 and api_ledger.tokens.lookup(token).role == "staff"


def test_repeated_failed_sign_ins_are_slowed_down_with_429(client, tokens):
    from ledger.api.ratelimit import FAILURES

    assert FAILURES == 20  # what the README promises: 20 failures a minute, then 429
    responses = [client.get("/api/v1/study", headers=bearer("lgr_guess"))
                 for _ in range(FAILURES + 3)]
    valid = client.get("/api/v1/study", headers=bearer(tokens["staff"]))

    statuses = [r.status_code for r in responses]
    assert statuses[:FAILURES] == [401] * FAILURES and set(statuses[FAILURES:]) == {429}
    assert int(responses[-1].headers["Retry-After"]) >= 1
    assert responses[-1].content_type == "application/problem+json"
    assert valid.status_code == 200  # someone else's guessing never locks out a real token


def test_the_failure_window_slides(monkeypatch):
    from ledger.api import ratelimit

    clock = [1000.0]
    monkeypatch.setattr(ratelimit.time, "monotonic", lambda: clock[0])
    limiter = ratelimit.FailureLimiter(limit=2, window=10)

    limiter.record("a")
    limiter.record("a")
    blocked = limiter.retry_after("a")
    clock[0] += 11

    assert blocked > 0 and limiter.retry_after("a") == 0 and limiter.retry_after("b") == 0


def test_failures_from_one_ipv6_network_count_together(client, tokens):
    """An IPv6 subscriber holds a whole /64: a new address per guess must not escape the limit."""
    from ledger.api.ratelimit import FAILURES

    statuses = [client.get("/api/v1/study", headers=bearer("lgr_guess"),
                           environ_base={"REMOTE_ADDR": f"2001:db8::{i:x}"}).status_code
                for i in range(FAILURES + 3)]
    elsewhere = client.get("/api/v1/study", headers=bearer("lgr_guess"),
                           environ_base={"REMOTE_ADDR": "2001:db8:0:1::1"})

    assert statuses[:FAILURES] == [401] * FAILURES and set(statuses[FAILURES:]) == {429}
    assert elsewhere.status_code == 401  # another /64 is someone else


@pytest.mark.parametrize("address, key", [
    ("192.0.2.7", "192.0.2.7"), ("::ffff:192.0.2.7", "192.0.2.7"),
    ("2001:db8::1", "2001:db8::/64"), ("2001:db8::ffff:1", "2001:db8::/64"),
    ("2001:db8:0:1::1", "2001:db8:0:1::/64"), ("64:ff9b::c000:207", "192.0.2.7"),
    ("unknown", "unknown")])
def test_a_client_is_an_ipv4_address_or_an_ipv6_network(address, key):
    from ledger.api.ratelimit import client_key

    assert client_key(address) == key


def test_the_limiter_remembers_a_bounded_number_of_clients():
    from ledger.api.ratelimit import FailureLimiter

    limiter = FailureLimiter(limit=2, window=60, max_clients=100)
    limiter.record("192.0.2.1")
    limiter.record("192.0.2.1")
    for i in range(1000):
        limiter.record(f"198.51.{i // 256}.{i % 256}")
        limiter.record("192.0.2.1")  # still failing: stays among the most recent

    assert len(limiter._failures) == 100
    assert limiter.retry_after("192.0.2.1") > 0
    assert limiter.retry_after("198.51.0.0") == 0  # forgotten, as the least recent


def test_asking_about_a_client_remembers_nothing():
    from ledger.api.ratelimit import FailureLimiter

    limiter = FailureLimiter()
    for i in range(100):
        assert limiter.retry_after(f"198.51.100.{i}") == 0

    assert limiter._failures == {}


def test_a_wrong_method_is_405_with_allow(client, tokens):
    response = client.delete("/api/v1/study", headers=bearer(tokens["staff"]))

    assert response.status_code == 405 and "GET" in response.headers["Allow"]


def test_deeply_nested_json_is_a_400_not_a_crash(client, tokens):
    body = '{"name": ' + "[" * 30000 + "]" * 30000 + "}"

    response = client.post("/api/v1/participants", headers=bearer(tokens["staff"]),
                           data=body, content_type="application/json")

    assert response.status_code == 400 and response.content_type == "application/problem+json"


def test_timestamps_in_the_history_are_iso_8601_with_an_offset(client, tokens):
    staff = bearer(tokens["staff"])
    pid = client.post("/api/v1/participants", headers=staff, json={"name": "T"}).json["id"]
    client.post(f"/api/v1/participants/{pid}/consents", headers=staff,
                json={"scope": "record", "form_version": "1.0", "method": "online"})

    at = client.get(f"/api/v1/participants/{pid}", headers=staff).json[
        "consents"]["record"]["history"][0]["at"]

    from datetime import datetime
    assert datetime.fromisoformat(at).utcoffset() is not None
