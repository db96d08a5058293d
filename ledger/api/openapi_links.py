"""OpenAPI links: how a value in one response feeds a later request.

An apispec plugin adds a ``links`` object to the success response of each producing operation, so
the document says, for example, that ``POST /participants`` answers with the ``id`` every
``/participants/{participant_id}/...`` path takes, and a write's ``Ledger-Position`` header is the
``min_position`` of a read-your-writes list or the ``position`` of an inclusion proof. Clients and
tools (Swagger UI, Schemathesis's stateful mode) can follow them; nothing else in the document
changes.

``LedgerPositionPlugin`` declares that header, which the links read, on the success responses
that carry it: those of the writes (every POST), where ``create_app``'s ``after_request`` sends
the log position of what the request saved (and an idempotent replay, the log's position then).
"""

from __future__ import annotations

from typing import Any

from apispec import BasePlugin

P = "/api/v1/participants/{participant_id}"
SAME_PERSON = {"participant_id": "$request.path.participant_id"}

# Operations that take the participant id and nothing else in their path.
PER_PARTICIPANT = [
    ("GetParticipant", "get", P),
    ("Erase", "post", f"{P}/erasure"),
    ("GrantConsent", "post", f"{P}/consents"),
    ("RecordUse", "post", f"{P}/uses"),
    ("RecordAccessNeed", "post", f"{P}/access-needs"),
    ("RecordArrangement", "post", f"{P}/payment-arrangements"),
    ("RecordReduction", "post", f"{P}/payment-reductions"),
    ("RecordPayment", "post", f"{P}/payments"),
    ("RecordExpense", "post", f"{P}/expenses"),
    ("IssueWithdrawalLink", "post", f"{P}/withdrawal-link"),
    ("RevokeWithdrawalLink", "post", f"{P}/withdrawal-link/revocation"),
    ("Export", "get", f"{P}/export"),
]

# (source method, source path, status) -> [(link name, target method, target path, parameters)]
LINKS: dict[tuple[str, str, str], list[tuple[str, str, str, dict[str, str]]]] = {
    ("post", "/api/v1/participants", "201"): [
        *((name, method, path, {"participant_id": "$response.body#/id"})
          for name, method, path in PER_PARTICIPANT),
        # read-your-writes, and the proof that the registration is in the log
        ("ListIncludingThis", "get", "/api/v1/participants",
         {"min_position": "$response.header.Ledger-Position"}),
        ("ProveInclusion", "get", "/api/v1/audit/proofs/inclusion",
         {"position": "$response.header.Ledger-Position"})],
    ("get", "/api/v1/audit/proofs/inclusion", "200"): [
        ("ProveConsistency", "get", "/api/v1/audit/proofs/consistency",
         {"first": "$response.body#/size"})],
    ("get", "/api/v1/audit/checkpoint", "200"): [
        ("ProveConsistency", "get", "/api/v1/audit/proofs/consistency",
         {"first": "$response.body#/size"})],
    ("post", f"{P}/consents", "201"): [
        ("WithdrawConsent", "post", f"{P}/consents/{{scope}}/withdrawal",
         {**SAME_PERSON, "scope": "$response.body#/scope"})],
    ("post", f"{P}/consents/{{scope}}/withdrawal", "201"): [
        ("MarkObligationDone", "post", f"{P}/obligations/{{obligation_id}}/done",
         {**SAME_PERSON, "obligation_id": "$response.body#/obligations/0/id"})],
    ("post", f"{P}/access-needs", "201"): [
        ("RecordNeedOutcome", "post", f"{P}/access-needs/{{need_id}}/outcome",
         {**SAME_PERSON, "need_id": "$response.body#/need_id"})],
    ("post", f"{P}/payments", "201"): [
        ("ReversePayment", "post", f"{P}/payments/{{payment_id}}/reversal",
         {**SAME_PERSON, "payment_id": "$response.body#/id"})],
    ("post", f"{P}/erasure", "200"): [
        ("GetErasureReceipt", "get", f"{P}/erasure", SAME_PERSON),
        ("GetParticipant", "get", P, SAME_PERSON)],
}


def operation_ref(method: str, path: str) -> str:
    """A JSON pointer to an operation in this document (RFC 6901: ``~`` and ``/`` escaped)."""
    return "#/paths/" + path.replace("~", "~0").replace("/", "~1") + "/" + method


class LinksPlugin(BasePlugin):
    """Adds the links in ``LINKS`` to the responses they start from."""

    def operation_helper(self, path: str | None = None, operations: dict[str, Any] | None = None,
                         **kwargs: Any) -> None:
        for method, operation in (operations or {}).items():
            responses = operation.get("responses", {}) if isinstance(operation, dict) else {}
            for status, response in responses.items():
                links = LINKS.get((method, path or "", str(status)))
                if links and isinstance(response, dict):
                    response.setdefault("links", {}).update({
                        name: {"operationRef": operation_ref(target_method, target_path),
                               "parameters": parameters}
                        for name, target_method, target_path, parameters in links})


LEDGER_POSITION = {
    "description": "the log position (notification id) of what this write saved: pass it as "
                   "min_position to GET /participants to read your own write, or as position "
                   "to GET /audit/proofs/inclusion. A replay of an idempotent write gives the "
                   "log's position at the replay, which is at or after the write's own",
    "schema": {"type": "integer", "minimum": 1},
}


class LedgerPositionPlugin(BasePlugin):
    """Declares the ``Ledger-Position`` header on the success responses of the writes."""

    def operation_helper(self, path: str | None = None, operations: dict[str, Any] | None = None,
                         **kwargs: Any) -> None:
        for method, operation in (operations or {}).items():
            if method != "post" or not isinstance(operation, dict):
                continue
            for status, response in operation.get("responses", {}).items():
                if str(status).startswith("2") and isinstance(response, dict):
                    response.setdefault("headers", {})["Ledger-Position"] = LEDGER_POSITION
