"""The OpenAPI document at /api/v1/openapi.json tells the truth about the responses.

Every operation lists the 422 that an unknown query parameter gets; the output schemas say which
fields are always sent (and the real responses have them); the arrangement body's rule (agreed
or declined) is written down; the headers the server sends (Ledger-Position, Retry-After) are
declared; and every operation names the roles that the server's own check allows.
"""

from __future__ import annotations

import copy
import re
import uuid
from typing import Any

import jsonschema_rs
import pytest

from ledger.api.parsing import RULE_VARIABLE

from .conftest import bearer

P = "/api/v1/participants/{participant_id}"


@pytest.fixture
def document(client) -> dict[str, Any]:
    response = client.get("/api/v1/openapi.json")
    assert response.status_code == 200
    return response.json  # type: ignore[no-any-return]


def _operations(document: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    return {(method, path): op for path, ops in document["paths"].items()
            for method, op in ops.items() if isinstance(op, dict) and "responses" in op}


def _resolve(document: dict[str, Any], node: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in node:
        *_, kind, name = node["$ref"].split("/")
        node = document["components"][kind][name]
    return node


def _as_json_schema(node: Any) -> Any:
    """An OpenAPI 3.0 schema as JSON Schema: ``nullable: true`` becomes "or null"."""
    if isinstance(node, list):
        return [_as_json_schema(item) for item in node]
    if not isinstance(node, dict):
        return node
    out = {key: _as_json_schema(value) for key, value in node.items()}
    if out.pop("nullable", False):
        return {"anyOf": [out, {"type": "null"}]}
    return out


def _validator(document: dict[str, Any], schema: dict[str, Any]) -> Any:
    root = {**_as_json_schema(copy.deepcopy(schema)),
            "components": _as_json_schema(copy.deepcopy(document["components"]))}
    return jsonschema_rs.validator_for(root, validate_formats=True)


def _documented_response(document, method, path, status) -> dict[str, Any]:
    responses = _operations(document)[(method, path)]["responses"]
    assert str(status) in responses, (method, path, status)
    return _resolve(document, responses[str(status)])


def _check_body(document, method, path, response) -> None:
    """The body validates against the schema documented for its status and content type, and
    that schema (for an object) says which fields are always there."""
    documented = _documented_response(document, method, path, response.status_code)
    content_type = response.content_type.split(";")[0]
    schema = documented["content"][content_type]["schema"]
    resolved = _resolve(document, schema)
    assert resolved.get("required"), (method, path, response.status_code, "no required fields")
    errors = [f"{e.instance_path}: {e.message}"
              for e in _validator(document, schema).iter_errors(response.json)]
    assert errors == [], (method, path, response.status_code, errors)


# -- 1. 422 on every operation ---------------------------------------------------------------


def test_every_operation_documents_422(document):
    operations = _operations(document)

    assert len(operations) >= 25
    assert [key for key, op in operations.items() if "422" not in op["responses"]] == []


@pytest.mark.parametrize("path, role", [
    ("/api/v1/study", "staff"),
    ("/api/v1/participants/{pid}", "staff"),
    ("/api/v1/audit/checkpoint", "auditor"),
    ("/api/v1/participants/{pid}/erasure", "admin"),
])
def test_an_unknown_query_parameter_is_the_documented_422(client, tokens, pid, document, path,
                                                          role):
    response = client.get(path.replace("{pid}", pid) + "?foo=1", headers=bearer(tokens[role]))

    assert response.status_code == 422
    assert response.content_type == "application/problem+json"
    assert "foo" in response.json["errors"]
    template = path.replace("{pid}", "{participant_id}")
    _check_body(document, "get", template, response)


# -- 2. output schemas say what is always sent, and the responses have it --------------------


def _output_schemas(document: dict[str, Any]) -> set[str]:
    """The component schemas reachable from any response."""
    names: set[str] = set()

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            ref = node.get("$ref", "")
            if ref.startswith("#/components/schemas/"):
                name = ref.rsplit("/", 1)[1]
                if name not in names:
                    names.add(name)
                    walk(document["components"]["schemas"][name])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    for op in _operations(document).values():
        for response in op["responses"].values():
            walk(_resolve(document, response))
    return names


def test_every_output_schema_says_which_fields_are_always_sent(document):
    schemas = document["components"]["schemas"]
    outputs = _output_schemas(document)

    assert {"Problem", "RegisteredOut", "LinkOut", "PaymentOut", "Checkpoint"} <= outputs
    assert sorted(name for name in outputs if not schemas[name].get("required")) == []
    assert {"type", "title", "status", "code"} <= set(schemas["Problem"]["required"])


def test_an_empty_object_is_not_a_valid_response(document):
    for name in ("Problem", "RegisteredOut", "LinkOut", "PaymentOut", "Checkpoint"):
        validator = _validator(document, {"$ref": f"#/components/schemas/{name}"})
        assert not validator.is_valid({}), name


@pytest.fixture
def answers(client, tokens, api_ledger):
    """One real answer of every operation in the document, each a success (with real ids and a
    valid body), plus a few more shapes of the same responses: a declined arrangement, a
    reduction, a reversal, a person with everything recorded, and an erased person."""
    staff, auditor, admin = (bearer(tokens[r]) for r in ("staff", "auditor", "admin"))
    got: list[tuple[str, str, Any]] = []

    def call(method, template, url, body=None, headers=None, **query):
        response = client.open(url, method=method.upper(), query_string=query or None,
                               json=body if method == "post" else None,
                               headers={**(headers or staff),
                                        "Idempotency-Key": str(uuid.uuid4())})
        assert 200 <= response.status_code < 300, (method, url, response.status_code,
                                                   response.get_data(as_text=True))
        got.append((method, template, response))
        return response.json

    call("get", "/api/v1/study", "/api/v1/study")
    call("get", "/api/v1/study", "/api/v1/study", headers=auditor)
    pid = call("post", "/api/v1/participants", "/api/v1/participants", {
        "name": "Ada Example", "email": "ada@example.invalid", "communities": ["Black British"],
        "preferred_contact": "email"})["id"]
    p = P.replace("{participant_id}", pid)
    for scope in ("take_part", "record", "analyse"):
        call("post", f"{P}/consents", f"{p}/consents",
             {"scope": scope, "form_version": "1.0", "method": "online"})
    call("post", f"{P}/consents", f"{p}/consents",
         {"scope": "quote", "form_version": "1.0", "method": "bsl", "attribution": "anonymous"})
    withdrawn = call("post", f"{P}/consents/{{scope}}/withdrawal",
                     f"{p}/consents/analyse/withdrawal", {"channel": "phone", "reason": "asked"})
    obligation = withdrawn["obligations"][0]["id"]
    call("post", f"{P}/obligations/{{obligation_id}}/done",
         f"{p}/obligations/{obligation}/done", {"note": "deleted"})
    call("post", f"{P}/uses", f"{p}/uses", {"scope": "record", "purpose": "a workshop"})
    call("post", f"{P}/uses", f"{p}/uses", {"scope": "publish", "purpose": "the website"})
    need = call("post", f"{P}/access-needs", f"{p}/access-needs",
                {"category": "captions", "detail": "live"})["need_id"]
    call("post", f"{P}/access-needs/{{need_id}}/outcome", f"{p}/access-needs/{need}/outcome",
         {"outcome": "partly_met", "note": "late"})
    call("post", f"{P}/payment-arrangements", f"{p}/payment-arrangements",
         {"activity": "conversation", "method": "bank_transfer", "payee": "self",
          "benefits_advice_offered": True})
    call("post", f"{P}/payment-arrangements", f"{p}/payment-arrangements",
         {"activity": "workshop", "declined": True, "reason": "benefits"})
    payment = call("post", f"{P}/payments", f"{p}/payments",
                   {"activity": "conversation", "amount": "25.00", "method": "bank_transfer",
                    "reference": "ref 1"})["id"]
    call("post", f"{P}/payments/{{payment_id}}/reversal", f"{p}/payments/{payment}/reversal",
         {"reason": "bounced"})
    call("post", f"{P}/payment-reductions", f"{p}/payment-reductions",
         {"activity": "conversation", "amount": "10.00", "reason": "asked for less"})
    call("post", f"{P}/payments", f"{p}/payments",
         {"activity": "conversation", "amount": "10.00", "method": "cash"})
    call("post", f"{P}/expenses", f"{p}/expenses",
         {"activity": "conversation", "amount": "3.20", "method": "cash",
          "description": "bus"})
    call("post", f"{P}/withdrawal-link", f"{p}/withdrawal-link", {})
    call("post", f"{P}/withdrawal-link/revocation", f"{p}/withdrawal-link/revocation", {})
    call("get", P, p)
    call("get", f"{P}/export", f"{p}/export")
    erased = call("post", "/api/v1/participants", "/api/v1/participants",
                  {"name": "Erased Person"})["id"]
    e = P.replace("{participant_id}", erased)
    call("post", f"{P}/erasure", f"{e}/erasure", {"reason": "asked"}, headers=admin)
    call("get", f"{P}/erasure", f"{e}/erasure", headers=admin)
    call("get", P, e)
    api_ledger.views_at_least()
    call("get", "/api/v1/participants", "/api/v1/participants", limit=1)
    call("get", "/api/v1/participants", "/api/v1/participants")
    call("get", "/api/v1/audit/events", "/api/v1/audit/events", headers=auditor, limit=5)
    checkpoint = call("get", "/api/v1/audit/checkpoint", "/api/v1/audit/checkpoint",
                      headers=auditor)
    call("get", "/api/v1/audit/proofs/inclusion", "/api/v1/audit/proofs/inclusion",
         headers=auditor, position=1)
    call("get", "/api/v1/audit/proofs/consistency", "/api/v1/audit/proofs/consistency",
         headers=auditor, first=1, second=checkpoint["size"])
    call("get", "/api/v1/reports/compliance", "/api/v1/reports/compliance", headers=auditor)
    return got


def test_every_operation_was_answered(document, answers):
    assert {(m, p) for m, p, _ in answers} == set(_operations(document))


def test_every_success_is_a_body_the_document_allows(document, answers):
    for method, path, response in answers:
        _check_body(document, method, path, response)


def test_problems_are_bodies_the_document_allows(client, tokens, pid, document):
    staff = bearer(tokens["staff"])
    cases = [
        ("get", P, client.get(f"/api/v1/participants/{uuid.uuid4()}", headers=staff)),  # 404
        ("get", P, client.get(f"/api/v1/participants/{pid}")),  # 401
        ("get", "/api/v1/study", client.get("/api/v1/study", headers=bearer(tokens["admin"]))),
        ("post", f"{P}/payments", client.post(f"/api/v1/participants/{pid}/payments",
                                              headers=staff, json={})),  # 400: no key
        ("post", f"{P}/payment-arrangements",
         client.post(f"/api/v1/participants/{pid}/payment-arrangements", headers=staff,
                     json={"activity": "conversation"})),  # 422
    ]
    assert [r.status_code for *_, r in cases] == [404, 401, 403, 400, 422]
    for method, path, response in cases:
        assert response.content_type == "application/problem+json"
        _check_body(document, method, path, response)


# -- 3. the arrangement's rule ---------------------------------------------------------------


def test_the_arrangement_body_says_what_declined_changes(document):
    schema = document["components"]["schemas"]["ArrangementIn"]
    operation = _operations(document)[("post", f"{P}/payment-arrangements")]

    for text in (schema["description"], operation["description"]):
        text = " ".join(text.replace("`", "").split())
        assert all(f in text for f in ("method", "payee", "benefits_advice_offered")), text
        assert re.search(r"required unless declined is true", text, re.I), text
        assert re.search(r"refused \(422[^)]*\) when (declined is true|it is)", text), text
    for field in ("method", "payee", "benefits_advice_offered"):
        assert "required unless declined is true" in schema["properties"][field]["description"]
        assert "refused when declined is true" in schema["properties"][field]["description"]


# -- 4. headers ------------------------------------------------------------------------------


def test_ledger_position_is_declared_on_every_write_and_sent(document, answers):
    for (method, path), op in _operations(document).items():
        for status, response in op["responses"].items():
            headers = _resolve(document, response).get("headers", {})
            if method == "post" and status.startswith("2"):
                assert "Ledger-Position" in headers, (method, path, status)
            else:
                assert "Ledger-Position" not in headers, (method, path, status)
    for method, path, response in answers:
        if method == "post":
            assert int(response.headers["Ledger-Position"]) >= 1, (method, path)
        else:
            assert "Ledger-Position" not in response.headers, (method, path)


def test_the_headers_the_links_read_are_declared(document):
    for op in _operations(document).values():
        for response in op["responses"].values():
            response = _resolve(document, response)
            for link in response.get("links", {}).values():
                for value in link["parameters"].values():
                    if value.startswith("$response.header."):
                        assert value.removeprefix("$response.header.") in response["headers"]


@pytest.mark.parametrize("status", ["429", "503"])
def test_retry_after_is_declared(document, status):
    declared = [(key, status) for key, op in _operations(document).items()
                if status in op["responses"]]

    assert declared
    for key, _ in declared:
        response = _resolve(document, _operations(document)[key]["responses"][status])
        assert response["headers"]["Retry-After"]["required"] is True, key


def test_retry_after_is_sent_with_429(client):
    from ledger.api.ratelimit import FAILURES

    for _ in range(FAILURES):
        assert client.get("/api/v1/study", headers=bearer("lgr_wrong")).status_code == 401
    response = client.get("/api/v1/study", headers=bearer("lgr_wrong"))

    assert response.status_code == 429
    assert int(response.headers["Retry-After"]) >= 1


# -- 5. roles --------------------------------------------------------------------------------


def _enforced_roles(app, method: str, path: str) -> set[str]:
    """The roles the server's own check (``auth.require``) allows for an operation."""
    for rule in app.url_map.iter_rules():
        if RULE_VARIABLE.sub(r"{\1}", rule.rule) == path and method.upper() in rule.methods:
            view = app.view_functions[rule.endpoint]
            handler = getattr(view.view_class, method)
            return set(handler.required_roles)
    raise AssertionError(f"no route for {method} {path}")


def test_every_operation_names_the_roles_the_server_allows(app, document):
    for (method, path), op in _operations(document).items():
        found = re.findall(r"^Role: ([a-z]+(?: or [a-z]+)*)\.$", op.get("description", ""), re.M)
        assert len(found) == 1, (method, path, op.get("description"))
        assert set(found[0].split(" or ")) == _enforced_roles(app, method, path), (method, path)


def test_the_roles_are_those_of_the_contract(document):
    operations = _operations(document)

    assert "Role: staff or auditor." in operations[("get", "/api/v1/study")]["description"]
    assert "Role: admin." in operations[("post", f"{P}/erasure")]["description"]
    assert "Role: auditor." in operations[("get", "/api/v1/audit/checkpoint")]["description"]
    assert "Role: staff." in operations[("post", f"{P}/payments")]["description"]
