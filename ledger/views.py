"""Plain-dict views of single records, read from their aggregates (lists and reports will come from
projections). Personal fields arrive sealed and are opened by the caller's ``reveal`` (one per view,
from ``PersonalDataMapper.revealer``); once a person's key is destroyed they read "[erased]"."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .domain import Participant, Payment, Study, is_redacted
from .domain.access import AccessNeed
from .domain.consent import ConsentRecord
from .domain.money import format_pence
from .domain.remuneration import Arrangement

Reveal = Callable[[Any], Any]  # opens a sealed personal value (see PersonalDataMapper.revealer)


def _text(value: Any, reveal: Reveal) -> Any:
    value = reveal(value)
    return "[erased]" if is_redacted(value) else value


def study_view(study: Study) -> dict[str, Any]:
    """The study: scopes with deadlines, activities with rates, forms (current marked), bases."""
    return {
        "id": study.id,
        "name": study.name,
        "controller": study.controller,
        "lawful_bases": study.lawful_bases,
        "retention_days": study.retention_days,
        "finance_retention_days": study.finance_retention_days,
        "scopes": [
            {"name": s.name, "label": s.label, "description": s.description,
             "withdrawal_deadline": s.withdrawal_deadline, "obligations": list(s.obligations),
             "takes_attribution": s.takes_attribution}
            for s in study.scopes.values()
        ],
        "activities": [
            {"name": a.name, "label": a.label, "rate": format_pence(a.rate_pence),
             "currency": "GBP"}
            for a in study.activities.values()
        ],
        "consent_forms": [
            {"version": f.version, "sha256": f.sha256, "registered_at": f.registered_at,
             "current": f.version == study.current_form_version}
            for f in study.forms.values()
        ],
    }


def payment_view(payment: Payment, erased: bool, reveal: Reveal) -> dict[str, Any]:
    """One payment; its personal fields are hidden once the participant is erased."""
    def personal(value: Any) -> Any:
        return None if value is None else ("[erased]" if erased else _text(value, reveal))
    return {
        "id": payment.id, "activity": payment.activity, "amount": format_pence(payment.amount_pence),
        "currency": payment.currency, "method": payment.method,
        "reference": personal(payment.reference), "reason": personal(payment.reason),
        "expected": format_pence(payment.expected_pence), "paid_at": payment.paid_at,
        "reversed_at": payment.reversed_at,
        "reversal_reason": personal(payment.reversal_reason),
        "status": "reversed" if payment.is_reversed else "paid",
    }


def consent_view(c: ConsentRecord, reveal: Reveal) -> dict[str, Any]:
    """Where consent for one scope stands."""
    return {"scope": c.scope, "state": c.state, "form_version": c.form_version,
            "form_sha256": c.form_sha256, "method": c.method, "attribution": c.attribution,
            "changed_at": c.changed_at,
            "history": [{k: _text(v, reveal) for k, v in step.items()} for step in c.history]}


def need_view(n: AccessNeed, reveal: Reveal) -> dict[str, Any]:
    """One access need and its outcome."""
    return {"id": n.id, "category": _text(n.category, reveal),
            "detail": _text(n.detail, reveal), "outcome": n.outcome,
            "note": _text(n.note, reveal), "requested_at": n.requested_at,
            "outcome_at": n.outcome_at, "met_at": n.met_at,
            "history": [{"outcome": step["outcome"], "at": step["at"], "by": step["by"],
                         "note": _text(step.get("note"), reveal)} for step in n.history]}


def arrangement_view(a: Arrangement, reveal: Reveal) -> dict[str, Any]:
    """How the person will be paid for one activity."""
    return {"activity": a.activity, "method": a.method, "payee": a.payee,
            "benefits_advice_offered": a.benefits_advice_offered, "declined": a.declined,
            "reduced_to": None if a.reduced_to_pence is None else format_pence(a.reduced_to_pence),
            "reason": _text(a.reason, reveal),
            "history": [arrangement_step(step, reveal) for step in a.history]}


def arrangement_step(step: dict[str, Any], reveal: Reveal) -> dict[str, Any]:
    """One change to an arrangement: arranged, declined, reduced (each with what was said),
    paid or reversed."""
    amount = step.get("amount_pence")
    payment = step.get("payment_id")
    return {"event": step["event"], "at": step["at"], "by": step["by"],
            "method": step.get("method"), "payee": step.get("payee"),
            "benefits_advice_offered": step.get("benefits_advice_offered"),
            "amount": None if amount is None else format_pence(amount),
            "reason": _text(step.get("reason"), reveal),
            "payment_id": None if payment is None else str(payment)}


def participant_view(p: Participant, payments: list[Payment], reveal: Reveal) -> dict[str, Any]:
    """Everything held about one participant (``reveal`` opens their sealed fields)."""
    erased = p.erased_at is not None
    communities = reveal(p.communities)
    return {
        "id": p.id,
        "reference": p.reference,
        "name": _text(p.name, reveal),
        "email": _text(p.email, reveal),
        "phone": _text(p.phone, reveal),
        "communities": (["[erased]"] if is_redacted(communities) else list(communities)
                        if isinstance(communities, list | tuple) else communities),  # or sealed
        "preferred_contact": _text(p.preferred_contact, reveal),
        "registered_at": p.registered_at,
        "erased": erased,
        "erased_at": p.erased_at,
        "consents": {name: consent_view(c, reveal) for name, c in p.consents.items()},
        "obligations": [
            {"id": o.id, "scope": o.scope, "kind": o.kind, "opened_at": o.opened_at,
             "done_at": o.done_at, "note": _text(o.note, reveal)}
            for o in p.obligations.values()
        ],
        "access_needs": [need_view(n, reveal) for n in p.needs.values()],
        "arrangements": {name: arrangement_view(a, reveal) for name, a in p.arrangements.items()},
        "expenses": [
            {"id": e["id"], "activity": e["activity"], "amount": format_pence(e["amount_pence"]),
             "currency": "GBP", "method": e["method"], "description": _text(e["description"], reveal),
             "at": e["at"]}
            for e in p.expenses
        ],
        "payments": [payment_view(pay, erased, reveal) for pay in payments],
        "uses": [{"scope": u["scope"], "purpose": _text(u["purpose"], reveal),
                  "consent_state": u["consent_state"], "attribution": u.get("attribution"),
                  "consented_attribution": u.get("consented_attribution"), "at": u["at"]}
                 for u in p.uses],
    }
