"""Property-based fuzzing of the whole OpenAPI document, in process, authenticated as staff.

Each operation gets 100 examples from schemathesis's strategies with Hypothesis derandomised (a
fixed seed): zero server errors, and every response (status code, content type, body) must be one
the document declares. (Driven directly rather than through schemathesis's pytest plugin, which
does not run under pytest 9.)
"""

from __future__ import annotations

import uuid

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from .conftest import bearer, load_every_ledger_module

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance,
          response_schema_conformance]
EXAMPLES = 100
OPERATIONS = 25  # every operation in the document; the first test keeps this honest


def _operations(app):
    schema = schemathesis.openapi.from_wsgi("/api/v1/openapi.json", app)
    return [result.ok() for result in schema.get_all_operations()]


def test_every_operation_is_fuzzed(app):
    labels = {f"{op.method.upper()} {op.path}" for op in _operations(app)}

    assert len(labels) == OPERATIONS and "POST /api/v1/participants/{participant_id}/payments" in labels


@pytest.mark.parametrize("index", range(OPERATIONS))
def test_the_api_never_errors_and_always_answers_as_documented(app, client, tokens, index):
    load_every_ledger_module()  # the same generated cases whatever else was collected
    operation = _operations(app)[index]
    role = ("admin" if operation.path.endswith("/erasure")
            else "auditor" if operation.path.startswith(("/api/v1/audit", "/api/v1/reports"))
            else "staff")
    staff = bearer(tokens["staff"])
    # A real participant in every path, so generated bodies reach the domain rather than a 404.
    pid = client.post("/api/v1/participants", headers=staff, json={"name": "Fuzz"}).json["id"]
    if operation.method.upper() == "GET" and operation.path.endswith("/erasure"):
        # the receipt exists only once the person is erased
        client.post(f"/api/v1/participants/{pid}/erasure", headers=bearer(tokens["admin"]),
                    json={"reason": "fuzz"})
    calls = []

    @settings(max_examples=EXAMPLES, derandomize=True, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    @given(case=operation.as_strategy())
    def fuzz(case):
        if case.path_parameters and "participant_id" in case.path_parameters:
            case.path_parameters["participant_id"] = pid
        headers = {**bearer(tokens[role]), "Idempotency-Key": str(uuid.uuid4())}
        calls.append(case.call_and_validate(headers=headers, checks=CHECKS).status_code)

    fuzz()

    assert len(calls) == EXAMPLES  # as the issue asks: at least 100 examples per operation
    assert all(code < 500 for code in calls)
    if operation.path.count("{") == 1 and "{participant_id}" in operation.path:
        assert set(calls) - {404}, "every generated request stopped at a 404"
