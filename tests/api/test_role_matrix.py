"""Every endpoint x every kind of caller: the contract's "who" column, enforced server-side."""

from __future__ import annotations

import re
import uuid

import pytest

# From the HTTP contract (ledger.md), plus the extensions listed in the README.
MATRIX = {
    ("GET", "/api/v1/study"): {"staff", "auditor"},
    ("GET", "/api/v1/audit/events"): {"auditor"},
    ("GET", "/api/v1/audit/checkpoint"): {"auditor"},
    ("GET", "/api/v1/audit/proofs/inclusion"): {"auditor"},
    ("GET", "/api/v1/audit/proofs/consistency"): {"auditor"},
    ("GET", "/api/v1/reports/compliance"): {"auditor"},
    ("POST", "/api/v1/participants/{id}/uses"): {"staff"},
    ("GET", "/api/v1/participants"): {"staff"},
    ("POST", "/api/v1/participants"): {"staff"},
    ("GET", "/api/v1/participants/{id}"): {"staff"},
    ("POST", "/api/v1/participants/{id}/consents"): {"staff"},
    ("POST", "/api/v1/participants/{id}/consents/{scope}/withdrawal"): {"staff"},
    ("POST", "/api/v1/participants/{id}/obligations/{id}/done"): {"staff"},
    ("POST", "/api/v1/participants/{id}/access-needs"): {"staff"},
    ("POST", "/api/v1/participants/{id}/access-needs/{id}/outcome"): {"staff"},
    ("POST", "/api/v1/participants/{id}/payment-arrangements"): {"staff"},
    ("POST", "/api/v1/participants/{id}/payment-reductions"): {"staff"},
    ("POST", "/api/v1/participants/{id}/payments"): {"staff"},
    ("POST", "/api/v1/participants/{id}/payments/{id}/reversal"): {"staff"},
    ("POST", "/api/v1/participants/{id}/expenses"): {"staff"},
    ("POST", "/api/v1/participants/{id}/erasure"): {"admin"},
    ("GET", "/api/v1/participants/{id}/erasure"): {"admin"},
    ("GET", "/api/v1/participants/{id}/export"): {"staff"},
    ("POST", "/api/v1/participants/{id}/withdrawal-link"): {"staff"},
    ("POST", "/api/v1/participants/{id}/withdrawal-link/revocation"): {"staff"},
}
CALLERS = ["staff", "auditor", "admin", "no token", "revoked", "malformed", "unknown"]
PUBLIC = {"/api/v1/openapi.json", "/api/v1/docs", "/api/v1/docs/static/<path:filename>",
          "/api/v1/docs/start.js"}


def _normalise(rule: str) -> str:
    rule = re.sub(r"<uuid:\w+>", "{id}", rule)
    return re.sub(r"<(?:string:)?scope>", "{scope}", rule)


def test_the_matrix_covers_every_api_route(app):
    routes = {(m, _normalise(r.rule)) for r in app.url_map.iter_rules()
              if r.rule.startswith("/api/v1") and r.rule not in PUBLIC
              for m in r.methods - {"HEAD", "OPTIONS"}}

    assert routes == set(MATRIX)


@pytest.fixture
def callers(api_ledger, tokens):
    info, revoked = api_ledger.tokens.create("staff", "revoked")
    api_ledger.tokens.revoke(info.id)
    return {
        **{role: f"Bearer {tokens[role]}" for role in ("staff", "auditor", "admin")},
        "no token": None, "revoked": f"Bearer {revoked}",
        "malformed": f"Token {tokens['staff']}", "unknown": "Bearer lgr_" + "x" * 43,
    }


@pytest.mark.parametrize("method, path", sorted(MATRIX))
@pytest.mark.parametrize("caller", CALLERS)
def test_role_matrix(client, api_ledger, callers, method, path, caller):
    url = path.replace("{id}", str(uuid.uuid4())).replace("{scope}", "record")
    headers = {"Idempotency-Key": str(uuid.uuid4())}
    if callers[caller]:
        headers["Authorization"] = callers[caller]
    before = api_ledger.recorder.max_notification_id()

    response = client.open(url, method=method, json={} if method == "POST" else None,
                           headers=headers)

    assert response.status_code < 500
    if caller in MATRIX[(method, path)]:
        assert response.status_code not in (401, 403)
    elif caller in ("staff", "auditor", "admin"):
        assert response.status_code == 403
    else:
        assert response.status_code == 401
        assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert response.content_type in ("application/json", "application/problem+json")
    assert api_ledger.recorder.max_notification_id() == before
