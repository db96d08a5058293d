"""The compliance report: one pure function of the view rows, the study and the moment.

The rows come from the live views (the current report) or from a replay of the log stopped at
``as_of`` (a past report); both are the same ``participant_rows``, so the two paths agree. No
personal data: participants appear by reference only.
"""

from __future__ import annotations

from collections import Counter
from datetime import datetime, timedelta
from statistics import median
from typing import Any

from ..domain import Study
from ..domain.consent import AFTER_WITHDRAWAL, WITHOUT_CONSENT, use_standing
from ..domain.money import format_pence
from ..domain.vocab import CONSENT_STATES

STATES = CONSENT_STATES
REPORT_VERSION = 1


def _at(value: str | None) -> datetime | None:
    return None if value is None else datetime.fromisoformat(value)


def _days(start: str | None, end: datetime | str | None) -> float | None:
    if start is None or end is None:
        return None
    stop = end if isinstance(end, datetime) else datetime.fromisoformat(end)
    return round((stop - datetime.fromisoformat(start)).total_seconds() / 86400, 2)


def _median(values: list[float]) -> float | None:
    return round(median(values), 2) if values else None


def compliance_report(*, rows: dict[str, list[dict[str, Any]]], people: list[dict[str, Any]],
                      study: Study, as_of: datetime, log: dict[str, int],
                      outstanding_days: int) -> dict[str, Any]:
    """Every section of the report as plain JSON-ready data (amounts as "25.00" strings)."""
    refs = {p["participant_id"]: p["reference"] for p in people}
    erased = {p["participant_id"] for p in people if p["erased_at"] is not None}
    scopes = list(study.scopes)

    # Consent state per participant reference and scope, and the totals per scope.
    by_person: dict[str, dict[str, str | None]] = {pid: {} for pid in refs}
    for c in rows["consents"]:
        by_person.setdefault(c["participant_id"], {})[c["scope"]] = c["state"]
    consent_states = [
        {"reference": refs[pid], "erased": pid in erased,
         "scopes": {s: by_person[pid].get(s) for s in scopes}}
        for pid in refs
    ]
    totals = {s: {state: 0 for state in STATES} for s in scopes}
    for c in rows["consents"]:
        if c["state"] in STATES and c["scope"] in totals:
            totals[c["scope"]][c["state"]] += 1

    forms = study.forms
    unregistered = [
        {"reference": g["reference"], "scope": g["scope"], "at": g["at"],
         "form_version": g["form_version"]}
        for g in rows["grants"]
        if g["form_version"] not in forms
        or (g["form_sha256"] is not None and forms[g["form_version"]].sha256 != g["form_sha256"])
        or forms[g["form_version"]].registered_at > _at(g["at"])  # type: ignore[operator]
    ]
    uses = sorted(rows["uses"], key=lambda u: u["at"])
    late = sorted((w for w in rows["withdrawals"] if w["past_deadline"]), key=lambda w: w["at"])

    # Work still open, with whether the person has since given that consent again: then the
    # work (removing their story from the analysis, say) is no longer what they want.
    open_obligations = sorted(
        ({"reference": o["reference"], "scope": o["scope"], "kind": o["kind"],
          "opened_at": o["opened_at"], "age_days": _days(o["opened_at"], as_of),
          "given_again": by_person.get(o["participant_id"], {}).get(o["scope"]) == "given"}
         for o in rows["obligations"] if o["done_at"] is None), key=lambda o: o["opened_at"])
    # The design asks how long each piece of follow-up work took, not only the median.
    done_obligations = sorted(
        ({"reference": o["reference"], "scope": o["scope"], "kind": o["kind"],
          "opened_at": o["opened_at"], "done_at": o["done_at"],
          "days_to_done": _days(o["opened_at"], o["done_at"]) or 0.0}
         for o in rows["obligations"] if o["done_at"] is not None),
        key=lambda o: (o["done_at"], o["reference"], o["scope"], o["kind"]))

    return {
        "report": "compliance", "version": REPORT_VERSION, "as_of": as_of.isoformat(),
        "study": {"id": str(study.id), "name": study.name},
        "participants": {"registered": len(refs), "erased": len(erased)},
        "consent": {"totals": totals, "by_participant": consent_states},
        "grants_without_registered_form": unregistered,
        "use_after_withdrawal": [_use(u) for u in uses
                                 if _standing(u) == AFTER_WITHDRAWAL],
        "use_without_consent": [_use(u) for u in uses
                                if _standing(u) == WITHOUT_CONSENT],
        "late_withdrawals": [{"reference": w["reference"], "scope": w["scope"], "at": w["at"],
                              "channel": w["channel"]} for w in late],
        "obligations": {
            "open": open_obligations, "open_count": len(open_obligations),
            "done": done_obligations, "done_count": len(done_obligations),
            "median_days_to_done": _median([o["days_to_done"] for o in done_obligations]),
        },
        "payments": _payments(rows, study, as_of, outstanding_days, erased),
        "access_needs": _needs(rows, as_of, erased),
        "erasures": sorted(({"reference": p["reference"], "erased_at": p["erased_at"]}
                            for p in people if p["erased_at"] is not None),
                           key=lambda e: e["erased_at"]),
        "log": dict(log),
    }


def _standing(u: dict[str, Any]) -> str:
    return use_standing(u["consent_state"], u["attribution"], u["consented_attribution"])


def _use(u: dict[str, Any]) -> dict[str, Any]:
    return {"reference": u["reference"], "scope": u["scope"], "at": u["at"],
            "consent_state": u["consent_state"], "attribution": u["attribution"],
            "consented_attribution": u["consented_attribution"]}


def _payments(rows: dict[str, list[dict[str, Any]]], study: Study, as_of: datetime,
              outstanding_days: int, erased: set[str]) -> dict[str, Any]:
    payments = rows["payments"]
    standing = [p for p in payments if p["reversed_at"] is None]
    by_method: dict[str, dict[str, Any]] = {}
    for p in standing:
        m = by_method.setdefault(p["method"], {"count": 0, "pence": 0})
        m["count"] += 1
        m["pence"] += p["amount_pence"]
    # Owed and not paid for at least ``outstanding_days`` (the age compared unrounded: 29.999
    # days is not 30). Not an erased person's: nothing can be paid to them any more (their
    # payment details are gone), so it is not work still to do.
    threshold = timedelta(days=outstanding_days)
    outstanding = sorted(
        ({"reference": a["reference"], "activity": a["activity"], "since": a["arranged_at"],
          "days": _days(a["arranged_at"], as_of)}
         for a in rows["arrangements"]
         if not a["declined"] and not a["paid"] and a["arranged_at"] is not None
         and a["participant_id"] not in erased
         and as_of - datetime.fromisoformat(a["arranged_at"]) >= threshold),
        key=lambda o: o["since"])
    counts = Counter(p["activity"] for p in standing)
    return {
        "rate_table": [{"activity": a.name, "rate": format_pence(a.rate_pence), "currency": "GBP",
                        "paid": counts.get(a.name, 0)} for a in study.activities.values()],
        "paid": len(standing),
        "paid_total": format_pence(sum(p["amount_pence"] for p in standing)),
        "paid_at_rate": sum(1 for p in standing if p["amount_pence"] == p["expected_pence"]),
        "paid_differently": [
            {"reference": p["reference"], "activity": p["activity"],
             "amount": format_pence(p["amount_pence"]), "expected": format_pence(p["expected_pence"])}
            for p in standing if p["amount_pence"] != p["expected_pence"]],
        "declined": sum(1 for a in rows["arrangements"] if a["declined"]),
        # (a reduction the person then declined altogether counts as declined only)
        "reduced": sum(1 for a in rows["arrangements"]
                       if a["reduced_to_pence"] is not None and not a["declined"]),
        "reversed": sum(1 for p in payments if p["reversed_at"] is not None),
        "outstanding_after_days": outstanding_days,
        "outstanding": outstanding,
        "by_method": {m: {"count": v["count"], "total": format_pence(v["pence"])}
                      for m, v in sorted(by_method.items())},
    }


def _needs(rows: dict[str, list[dict[str, Any]]], as_of: datetime,
           erased: set[str]) -> dict[str, Any]:
    needs = rows["needs"]
    # A need with no outcome when its person was erased is no longer waiting: nothing can be
    # arranged for someone whose details are gone. It is counted apart, never as "open".
    closed = {id(n) for n in needs if n["outcome"] is None and n["participant_id"] in erased}
    outcomes = Counter(n["outcome"] or ("erased" if id(n) in closed else "open") for n in needs)
    to_meet = [_days(n["requested_at"], n["met_at"]) or 0.0 for n in needs
               if n["met_at"] is not None]
    return {
        "requested": len(needs),
        "met": outcomes.get("met", 0), "partly_met": outcomes.get("partly_met", 0),
        "not_met": outcomes.get("not_met", 0), "open": outcomes.get("open", 0),
        "erased_before_outcome": outcomes.get("erased", 0),
        "median_days_to_meet": _median(to_meet),
        "items": sorted(
            ({"reference": n["reference"], "requested_at": n["requested_at"],
              "outcome": n["outcome"], "days_to_meet": _days(n["requested_at"], n["met_at"]),
              "waiting_days": None if n["outcome"] == "met" or id(n) in closed
              else _days(n["requested_at"], as_of)} for n in needs),
            key=lambda n: n["requested_at"]),
    }
