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


@pytest.fixture
def world(client, tokens, api_ledger):
    """A participant with something for every endpoint to act on: consents given (one
    withdrawn, leaving an obligation), an access need, a payment and a live personal link."""
    staff = {"Authorization": f"Bearer {tokens['staff']}"}

    def post(path, body, **headers):
        r = client.post(f"/api/v1/participants{path}", headers={**staff, **headers}, json=body)
        assert r.status_code in (200, 201), (path, r.json)
        return r.json

    pid = post("", {"name": "Matrix Person"})["id"]
    for scope in ("take_part", "record", "analyse"):
        post(f"/{pid}/consents", {"scope": scope, "form_version": "1.0", "method": "online"})
    obligation = post(f"/{pid}/consents/analyse/withdrawal", {"channel": "phone"})
    need = post(f"/{pid}/access-needs", {"category": "captions"})
    payment = post(f"/{pid}/payments", {"activity": "conversation", "amount": "25.00",
                                        "method": "cash"}, **{"Idempotency-Key": "seed"})
    post(f"/{pid}/withdrawal-link", {})
    admin = {"Authorization": f"Bearer {tokens['admin']}"}
    erased = post("", {"name": "Matrix Erased"})["id"]  # for the erasure receipt
    assert client.post(f"/api/v1/participants/{erased}/erasure", headers=admin,
                       json={"reason": "asked"}).status_code in (200, 201)
    api_ledger.views_at_least()
    return {"erased": erased, "pid": pid, "obligation": obligation["obligations"][0]["id"],
            "need": need["need_id"], "payment": payment["id"]}


def _request(method: str, path: str, world: dict[str, str]) -> tuple[str, dict | None]:
    """The route with real ids, and a body (or query) that the allowed role gets a 2xx for."""
    if (method, path) == ("GET", "/api/v1/participants/{id}/erasure"):  # the receipt
        return path.replace("{id}", world["erased"]), None
    second = {"obligations": "obligation", "access-needs": "need", "payments": "payment"}
    parts, url = path.split("/"), []
    for i, part in enumerate(parts):
        if part == "{id}":
            part = world[second[parts[i - 1]]] if parts[i - 1] in second else world["pid"]
        url.append("record" if part == "{scope}" else str(part))
    url_text = "/".join(url)
    bodies = {
        "/participants": {"name": "Another Person"},
        "/consents": {"scope": "store", "form_version": "1.0", "method": "online"},
        "/withdrawal": {"channel": "phone"},
        "/done": {},
        "/access-needs": {"category": "breaks"},
        "/outcome": {"outcome": "met"},
        "/payment-arrangements": {"activity": "workshop", "method": "cash", "payee": "self",
                                  "benefits_advice_offered": True},
        "/payment-reductions": {"activity": "workshop", "amount": "10.00", "reason": "asked"},
        "/payments": {"activity": "workshop", "amount": "25.00", "method": "cash"},
        "/reversal": {"reason": "paid by mistake"},
        "/expenses": {"activity": "workshop", "amount": "3.20", "method": "cash",
                      "description": "bus"},
        "/uses": {"scope": "record", "purpose": "quoted in the report"},
        "/erasure": {"reason": "asked to be forgotten"},
        "/withdrawal-link": {}, "/revocation": {},
    }
    queries = {"/inclusion": "?position=1", "/consistency": "?first=1"}
    tail = "/" + url_text.rsplit("/", 1)[1]
    return url_text + queries.get(tail, ""), bodies.get(tail)


@pytest.mark.parametrize("method, path", sorted(MATRIX))
@pytest.mark.parametrize("caller", CALLERS)
def test_role_matrix(client, api_ledger, callers, world, method, path, caller):
    """Each request is one the allowed role succeeds with (real ids, a valid body), so a wrong
    caller's refusal is a refusal, and "nothing written" means something."""
    url, body = _request(method, path, world)
    headers = {"Idempotency-Key": str(uuid.uuid4())}
    if callers[caller]:
        headers["Authorization"] = callers[caller]
    before = api_ledger.recorder.max_notification_id()

    response = client.open(url, method=method, json=body if method == "POST" else None,
                           headers=headers)

    assert response.content_type in ("application/json", "application/problem+json")
    if caller in MATRIX[(method, path)]:
        assert 200 <= response.status_code < 300, (response.status_code, response.json)
        return
    if caller in ("staff", "auditor", "admin"):
        assert response.status_code == 403
    else:
        assert response.status_code == 401
        assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert api_ledger.recorder.max_notification_id() == before
