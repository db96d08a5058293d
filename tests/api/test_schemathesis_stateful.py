"""Stateful fuzzing of the OpenAPI document, in process. Each scenario registers someone and then
Schemathesis chains requests along the document's links (``ledger/api/openapi_links.py``) and
the ones it infers itself: consents, uses, access needs, payments, erasure... on that person, then
the withdrawal of the scope just granted, the obligation it opened, the outcome of the need, the
reversal of the payment. Bodies are generated (a tenth of them deliberately invalid, some without
credentials), with the study's own scope and activity names swapped in most of the time.

Hypothesis is derandomised (a fixed seed), so CI runs the same scenarios each time, and each
scenario starts on a new ledger, so a scenario's answers depend only on its own requests. Every
response must be no server error and one the document declares (status code, content type,
body), and nothing just created may be missing. The run must also reach deep (enough linked steps
answered 2xx, at least one chained operation among them), so it cannot pass by answering 404 or 422 to
everything. (Driven directly rather than through schemathesis's pytest plugin, which does not
run under pytest 9.)
"""

from __future__ import annotations

import shutil
import uuid
from collections import Counter
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, settings
from schemathesis.checks import not_a_server_error
from schemathesis.core.parameters import ParameterLocation
from schemathesis.generation.stateful.state_machine import StepInput, StepOutput, normalize_name
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    ensure_resource_availability,
    response_schema_conformance,
    status_code_conformance,
)

from ledger.api import create_app
from ledger.application import Ledger

from .conftest import Clock, bearer, load_every_ledger_module
from .fuzzing import use_the_study_s_names

# ensure_resource_availability: no 404 straight after the POST that created the resource, when
# every parameter came from the link. use_after_free is left out: it only judges reads after a
# successful DELETE, and the API has none; erasure is a POST after which the person is still there,
# marked erased (GET answers 200 with `erased: true`, writes 409), by design.
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance,
          response_schema_conformance, ensure_resource_availability]
SCENARIOS = 100
STEPS = 30  # at most, per scenario
# How deep the run must reach: steps whose path or query came from a link and were answered 2xx,
# the distinct operations among them, and among those the ones two links from the registration.
# Hypothesis draws some strings from the constants in the ledger's loaded modules, so the scenarios
# change with the ledger's code (not with which tests were collected: every ledger module is loaded
# first, see load_every_ledger_module). Code of 4 December reached 19 operations, 499 such steps and
# all four chained operations; with a few constants more in the pool it reached 18 operations,
# 537-615 steps and two chained ones, and earlier pools reached one; 5 December's reaches 18 and two.
# So at least 16 operations (14 until then) and one chained one are required.
MIN_LINKED_SUCCESSES = 250
MIN_OPERATIONS_REACHED = 16
MIN_CHAINED_REACHED = 1
CHAINED = {
    "POST /api/v1/participants/{participant_id}/consents/{scope}/withdrawal",
    "POST /api/v1/participants/{participant_id}/obligations/{obligation_id}/done",
    "POST /api/v1/participants/{participant_id}/access-needs/{need_id}/outcome",
    "POST /api/v1/participants/{participant_id}/payments/{payment_id}/reversal",
}


def _role(path: str) -> str:
    if path.endswith("/erasure"):
        return "admin"
    if path.startswith(("/api/v1/audit", "/api/v1/reports")):
        return "auditor"
    return "staff"


class Run:
    """What the run did: (operation, status, whether a path or query parameter came from a link)
    per step, and the first failing step with its request, which is reported whatever Hypothesis
    then makes of the failure."""

    def __init__(self) -> None:
        self.steps: list[tuple[str, int, bool]] = []
        self.failure: tuple[str, BaseException] | None = None


class FreshLedger:
    """A WSGI app that is a new ledger (and new tokens) for every scenario. With one ledger for
    the whole run, the same choices meet a different state in a later scenario, which Hypothesis
    reports as flaky data generation and stops; and the limit on failed sign-ins (20 a minute
    per address, and the fuzzer is one address) would soon answer 429 to everything."""

    def __init__(self, directory) -> None:
        self.directory, self.count = directory, 0
        self.ledger: Ledger | None = None
        self.renew()

    def renew(self) -> None:
        self.close()
        self.count += 1
        self.ledger = Ledger({"LEDGER_DATA_DIR": str(self.directory / f"s{self.count}"),
                              "LEDGER_BASE_URL": "https://ledger.example"}, clock=Clock())
        self.ledger.init_study(by="test")
        self.tokens = {role: self.ledger.tokens.create(role, f"fuzz {role}")[1]
                       for role in ("staff", "auditor", "admin")}
        self.app = create_app({"LEDGER": self.ledger, "TESTING": True})

    def close(self) -> None:
        if self.ledger is not None:
            self.ledger.close()
            self.ledger = None
            shutil.rmtree(self.directory / f"s{self.count}")

    def __call__(self, environ, start_response):
        return self.app(environ, start_response)


def _workflow(fresh: FreshLedger, run: Run):
    schema = schemathesis.openapi.from_wsgi("/api/v1/openapi.json", fresh)
    use_the_study_s_names(schema, fresh.app.test_client(), fresh.tokens)
    machine = schema.as_state_machine()

    class Workflow(machine):  # type: ignore[misc, valid-type]
        def setup(self) -> None:
            fresh.renew()

        def get_call_kwargs(self, case) -> dict[str, Any]:
            headers = bearer(fresh.tokens[_role(case.path)])
            if case.method.upper() == "POST" and case.path.endswith("/payments"):
                headers["Idempotency-Key"] = str(uuid.uuid4())
            return {"headers": headers}

        def validate_response(self, response, case, additional_checks=None, **kwargs) -> None:
            case.validate_response(response, checks=CHECKS, headers=kwargs.get("headers"),
                                   transport_kwargs=kwargs, recorder=self.recorder)

        def step(self, input: StepInput) -> StepOutput:
            try:
                output = super().step(input)
            except BaseException as exc:
                if run.failure is None:
                    run.failure = (f"{input.case.method.upper()} {input.case.formatted_path} "
                                   f"body={input.case.body!r}", exc)
                raise
            linked = input.transition is not None and any(
                location in (ParameterLocation.PATH, ParameterLocation.QUERY)
                for location, _ in input.applied_parameters)
            run.steps.append((input.case.operation.label, output.response.status_code, linked))
            return output

    # Every scenario starts where a client's work does: registering someone; the rest follows
    # links from there. Schemathesis would also start scenarios on a random participant id (POST
    # .../consents and the like), which only ever answers 404 (the stateless fuzz has those) and
    # took most of the steps; ids from links are still swapped for random ones now and then.
    # Schemathesis's controller is told too (a private attribute in 4.x): otherwise it holds the
    # one start back, waiting for the removed ones to be used, and no rule is left to run.
    start = "POST /api/v1/participants"
    for name in machine.root_rules - {normalize_name(f"RANDOM -> {start}")}:
        setattr(Workflow, name, None)  # no longer a rule
    Workflow.root_rules = frozenset({normalize_name(f"RANDOM -> {start}")})
    Workflow._root_labels = frozenset({start})
    return Workflow


def _run(directory, scenarios: int) -> Run:
    load_every_ledger_module()  # the same generated scenarios whatever else was collected
    run, fresh = Run(), FreshLedger(directory)
    try:
        _workflow(fresh, run).run(settings=settings(
            max_examples=scenarios, stateful_step_count=STEPS, derandomize=True, database=None,
            deadline=None, phases=[Phase.generate], suppress_health_check=list(HealthCheck)))
    except BaseException:
        if run.failure is not None:
            request, exc = run.failure
            pytest.fail(f"first failing step: {request}\n{exc}", pytrace=False)
        raise
    finally:
        fresh.close()
    return run


def test_stateful_fuzz_never_errors_and_follows_links_deep(tmp_path):
    run = _run(tmp_path, SCENARIOS)

    statuses = Counter(status for _, status, _ in run.steps)
    assert run.steps and all(status < 500 for status in statuses), statuses
    reached = Counter(label for label, status, linked in run.steps if linked and 200 <= status < 300)
    assert sum(reached.values()) >= MIN_LINKED_SUCCESSES, reached
    assert len(reached) >= MIN_OPERATIONS_REACHED, reached
    assert len(CHAINED & set(reached)) >= MIN_CHAINED_REACHED, reached


def test_the_fuzz_finds_a_server_error_behind_a_link(tmp_path, monkeypatch):
    """The harness can fail: a crash planted after a withdrawal link is issued, which only the id
    of a person registered earlier in the scenario reaches (a random one is a 404 before it), is
    found and reported with its request."""
    issue = Ledger.issue_withdrawal_link

    def issue_then_crash(self: Ledger, *args: Any, **kwargs: Any) -> Any:
        issue(self, *args, **kwargs)  # no such person, or erased: the usual 404/409
        raise RuntimeError("planted")

    monkeypatch.setattr(Ledger, "issue_withdrawal_link", issue_then_crash)

    with pytest.raises(pytest.fail.Exception,
                       match=r"first failing step: POST \S+/withdrawal-link body=(?s:.)*Server error"):
        _run(tmp_path, SCENARIOS)
