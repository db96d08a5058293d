"""What a participant sees through their link, and the consent receipt they can keep.

The receipt has the fields of the Kantara Consent Receipt (record id, subject pseudonym,
controller, purposes, lawful basis, collection method, form version and hash, timestamps, state
history, how to withdraw); ``Ledger.consent_receipt`` adds the ISO/IEC TS 27560 records that
``ledger.export.consent_records`` builds for the subject access export too. It carries the
person's reference, never their name.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from .domain import Participant, Study, derived_id

SPECIAL_CATEGORIES = ["racial or ethnic origin", "health (disability, access needs)",
                      "religious or philosophical beliefs"]


def my_consents_view(p: Participant, study: Study, now: datetime) -> dict[str, Any]:
    """The person's consents, scope by scope in the study's order, in the study's own words;
    ``past_deadline`` says when we may already have used what they would stop."""
    scopes = []
    for scope in study.scopes.values():
        record = p.consents.get(scope.name)
        if record is None or record.state is None:
            continue
        deadline: Any = scope.withdrawal_deadline
        past = scope.is_past_deadline(now)
        if record.state == "withdrawn" and record.history:
            # A stop is judged once, when made, against the deadline then: "we started using
            # it" must not appear on the page after it once that deadline has passed since.
            stop = record.history[-1]
            deadline, past = stop.get("withdrawal_deadline"), bool(stop.get("past_deadline"))
        scopes.append({
            "name": scope.name, "label": scope.label, "description": scope.description,
            "if_withdrawn": scope.if_withdrawn, "state": record.state,
            "since": record.changed_at, "deadline": deadline,
            "past_deadline": past, "attribution": record.attribution,
        })
    return {
        "study": study.name, "controller": study.controller, "reference": p.reference,
        "scopes": scopes, "can_withdraw": [s["name"] for s in scopes if s["state"] == "given"],
    }


def consent_receipt(p: Participant, study: Study, *, issued_at: datetime) -> dict[str, Any]:
    """A machine-readable record of the person's consents as they stand. It holds no working
    link: whoever is given a copy of the file cannot change the person's choices."""
    purposes = []
    first_given: datetime | None = None
    methods: set[str] = set()
    for scope in study.scopes.values():
        record = p.consents.get(scope.name)
        if record is None or record.state is None:
            continue
        given = [h for h in record.history if h["state"] == "given"]
        for h in given:
            methods.add(str(h.get("method")))
            when = h["at"]
            if isinstance(when, datetime) and (first_given is None or when < first_given):
                first_given = when
        form = study.forms.get(record.form_version or "")
        purposes.append({
            "purpose": scope.label,
            "purposeId": scope.name,
            "description": scope.description,
            "consentType": "EXPLICIT",
            "state": record.state,
            "stateSince": _iso(record.changed_at),
            "lawfulBasis": [study.lawful_bases.get("research"),
                            study.lawful_bases.get("special_category")],
            "ethicsConsent": study.lawful_bases.get("research_ethics_consent"),
            "collectionMethod": record.method,
            "formVersion": record.form_version,
            "formSha256": form.sha256 if form else record.form_sha256,
            "attribution": record.attribution,
            "withdrawalDeadline": _iso(scope.withdrawal_deadline),
            "termination": "when you withdraw, or at the end of the retention period",
            "thirdPartyDisclosure": False,
            "history": [{"state": h["state"], "at": _iso(h["at"]),
                         "channel": h.get("channel"), "method": h.get("method"),
                         "formVersion": h.get("form_version"),
                         "formSha256": _form_hash(study, h.get("form_version")),
                         "pastDeadline": h.get("past_deadline"),
                         "withdrawalDeadline": _iso(h.get("withdrawal_deadline")),
                         "attribution": h.get("attribution")}
                        for h in record.history],
        })
    return {
        "version": "Kantara Consent Receipt v1.1 fields; consent_records: ISO/IEC TS 27560:2023",
        "consentRecordId": str(derived_id("consent-record", p.id)),
        "consentReceiptID": str(derived_id("receipt", p.id, p.version)),
        "recordVersion": p.version,
        "issuedAt": _iso(issued_at),
        "jurisdiction": "GB",
        "language": "en-GB",
        "piiPrincipalId": p.reference,
        "piiControllers": [{
            "piiController": study.controller.get("name"),
            "contact": study.controller.get("name"),
            "email": study.controller.get("email"),
            "partner": study.controller.get("partner"),
        }],
        "consentTimestamp": _iso(first_given),
        "collectionMethods": sorted(methods),
        "services": [{"service": study.name, "purposes": purposes}],
        "sensitive": True,
        "spiCat": SPECIAL_CATEGORIES,
        "retentionDays": study.retention_days,
        "howToWithdraw": {
            "online": "the personal link we sent you (not included here, so that this file "
                      "cannot be used to change your choices)",
            "email": study.controller.get("email"),
            "note": "You can stop any of your choices at any time. Stopping never costs you "
                    "your payment.",
        },
    }


def _form_hash(study: Study, version: object) -> str | None:
    form = study.forms.get(version) if isinstance(version, str) else None
    return form.sha256 if form else None


def _iso(value: Any) -> str | None:
    return value.isoformat() if isinstance(value, datetime) else None
