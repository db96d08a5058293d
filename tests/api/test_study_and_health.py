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


def test_openapi_document_and_local_swagger_ui_are_served(client):
    spec = client.get("/api/v1/openapi.json")
    docs = client.get("/api/v1/docs")
    asset = client.get("/api/v1/docs/static/swagger-ui-bundle.js")

    asset.close()
    assert spec.status_code == docs.status_code == asset.status_code == 200
    assert "/api/v1/study" in spec.json["paths"]
    assert b"/api/v1/docs/static/swagger-ui-bundle.js" in docs.data


def test_health_and_readiness(client):
    assert client.get("/healthz").json == {"status": "ok"}
    assert client.get("/readyz").json == {"status": "ready"}


def test_tokens_are_stored_only_as_keyed_hashes(api_ledger):
    info, token = api_ledger.tokens.create("staff", "hash check")

    rows = repr([tuple(r) for r in api_ledger.sql.query("SELECT * FROM ledger_tokens")])

    assert token not in rows and info.id in rows
    assert len(token) >= 43 and api_ledger.tokens.lookup(token).role == "staff"
