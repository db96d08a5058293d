"""The rows a participant contributes to the views: one pure function of their aggregate and their
payments, shared by the live views and by replays to a past moment, so the two cannot disagree.

Rows hold facts only (states, times, amounts, vocabularies) under the participant's random id and
reference; personal fields never appear in them. Values are JSON-ready (ISO times, string ids) so a
row read back from either database equals the row computed in memory.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

from ..domain import Participant, Payment

# Every view table: its columns in order; integer columns are named in INTEGER_COLUMNS.
TABLES: dict[str, tuple[str, ...]] = {
    "consents": ("participant_id", "reference", "scope", "state", "form_version", "form_sha256",
                 "method", "attribution", "changed_at", "withdrawn_at", "channel",
                 "past_deadline"),
    "grants": ("participant_id", "reference", "seq", "scope", "at", "form_version",
               "form_sha256", "method"),
    "withdrawals": ("participant_id", "reference", "seq", "scope", "at", "channel",
                    "past_deadline"),
    "obligations": ("participant_id", "reference", "obligation_id", "scope", "kind", "opened_at",
                    "done_at"),
    "needs": ("participant_id", "reference", "need_id", "requested_at", "outcome", "outcome_at",
              "met_at"),
    "arrangements": ("participant_id", "reference", "activity", "method", "payee", "declined",
                     "reduced_to_pence", "benefits_advice_offered", "arranged_at", "paid"),
    "payments": ("participant_id", "reference", "payment_id", "activity", "slot", "amount_pence",
                 "expected_pence", "method", "paid_at", "reversed_at"),
    "uses": ("participant_id", "reference", "seq", "scope", "at", "consent_state", "attribution",
             "consented_attribution"),
}
INTEGER_COLUMNS = {"seq", "slot", "amount_pence", "expected_pence", "reduced_to_pence",
                   "past_deadline", "declined", "benefits_advice_offered", "paid"}
BOOLEAN_COLUMNS = {"past_deadline", "declined", "benefits_advice_offered", "paid"}


def _t(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def _s(value: UUID | None) -> str | None:
    return None if value is None else str(value)


def participant_rows(p: Participant, payments: list[Payment]) -> dict[str, list[dict[str, Any]]]:
    """Every view row of one participant, by table."""
    base = {"participant_id": str(p.id), "reference": p.reference}
    rows: dict[str, list[dict[str, Any]]] = {name: [] for name in TABLES}
    for scope, c in p.consents.items():
        withdrawn = [h for h in c.history if h["state"] == "withdrawn"]
        last_w = withdrawn[-1] if c.state == "withdrawn" and withdrawn else None
        rows["consents"].append({
            **base, "scope": scope, "state": c.state, "form_version": c.form_version,
            "form_sha256": c.form_sha256, "method": c.method, "attribution": c.attribution,
            "changed_at": _t(c.changed_at),
            "withdrawn_at": _t(last_w["at"]) if last_w else None,  # type: ignore[arg-type]
            "channel": last_w["channel"] if last_w else None,
            "past_deadline": bool(last_w["past_deadline"]) if last_w else None,
        })
        for step in c.history:
            if step["state"] == "given":
                rows["grants"].append({
                    **base, "seq": len(rows["grants"]), "scope": scope, "at": _t(step["at"]),  # type: ignore[arg-type]
                    "form_version": step["form_version"], "method": step["method"],
                    "form_sha256": step.get("form_sha256", c.form_sha256)})
            elif step["state"] == "withdrawn":
                rows["withdrawals"].append({
                    **base, "seq": len(rows["withdrawals"]), "scope": scope,
                    "at": _t(step["at"]), "channel": step["channel"],  # type: ignore[arg-type]
                    "past_deadline": bool(step["past_deadline"])})
    for o in p.obligations.values():
        rows["obligations"].append({
            **base, "obligation_id": str(o.id), "scope": o.scope, "kind": o.kind,
            "opened_at": _t(o.opened_at), "done_at": _t(o.done_at)})
    for n in p.needs.values():
        rows["needs"].append({
            **base, "need_id": str(n.id), "requested_at": _t(n.requested_at),
            "outcome": n.outcome, "outcome_at": _t(n.outcome_at), "met_at": _t(n.met_at)})
    for name, a in p.arrangements.items():
        rows["arrangements"].append({
            **base, "activity": name, "method": a.method, "payee": a.payee,
            "declined": bool(a.declined), "reduced_to_pence": a.reduced_to_pence,
            "benefits_advice_offered": a.benefits_advice_offered,
            "arranged_at": _t(a.owed_since()),  # type: ignore[arg-type]
            "paid": a.paid is not None})
    for pay in payments:
        rows["payments"].append({
            **base, "payment_id": str(pay.id), "activity": pay.activity, "slot": pay.slot,
            "amount_pence": pay.amount_pence, "expected_pence": pay.expected_pence,
            "method": pay.method, "paid_at": _t(pay.paid_at), "reversed_at": _t(pay.reversed_at)})
    for i, use in enumerate(getattr(p, "uses", [])):
        rows["uses"].append({**base, "seq": i, "scope": use["scope"], "at": _t(use["at"]),
                             "consent_state": use["consent_state"],
                             "attribution": use.get("attribution"),
                             "consented_attribution": use.get("consented_attribution")})
    return rows


def summary_row(p: Participant, seq: int) -> dict[str, Any]:
    """The participant's own row: registration order, reference, erasure."""
    return {"participant_id": str(p.id), "seq": seq, "reference": p.reference,
            "registered_at": _t(p.registered_at), "erased_at": _t(p.erased_at)}


def rows_key(row: dict[str, Any]) -> tuple[str, ...]:
    """A stable order for comparing sets of rows."""
    return tuple(f"{k}={'' if row[k] is None else row[k]}" for k in sorted(row))
