"""The subject access export: everything the ledger holds about one person, in one document.

A pure function of plain views (``Ledger.participant``, ``Ledger.study``, the link's dates), so
the same views always give the same document; datetimes come out as ISO 8601, ids as strings.

Consents come as one record per scope with any history, in the consent record information
structure of ISO/IEC TS 27560:2023, with the field names of its clause 6.3 as mapped by the W3C
DPVCG guide "Consent Records and Receipts as per ISO/IEC TS 27560:2023 using DPV" (Final
Community Group Report, 2024-08-01, https://w3id.org/dpv/guides/consent-27560):

- header: ``schema_version``, ``record_id``, ``pii_principal_id`` (the participant's random id;
  never a name or contact detail; in the person's own receipt, their reference instead, and
  ``recorded_by`` in words rather than token ids)
- processing: ``privacy_notice`` (each consent form version the events refer to, with its
  SHA-256), ``language``, ``purposes`` (``purpose``, ``purpose_type``, ``lawful_basis``,
  ``pii_information`` with ``pii_type`` and ``special_pii_category``, ``pii_controllers``,
  ``collection_method``, ``storage_locations``, ``retention_period``, ``jurisdiction``,
  ``recipient_third_parties``, ``withdrawal_method``)
- ``parties``: ``party_id``, ``party_name``, ``party_role``, ``party_type``, ``party_contact``,
  ``party_email``, ``party_address`` (for the data subject only id, role and type: the standard
  does not ask for their contact details, so a record carries none)
- ``events``: ``event_time``, ``validity_duration``, ``entity_id``, ``event_type``, ``event_state``

Extensions, named after the DPV guide where it names them: ``consent_status`` (the state now),
``indication_method`` (DPV "expression method": how the person gave consent), ``recorded_by``,
``attribution``, and for a withdrawal ``withdrawal_channel``, ``withdrawal_reason``,
``past_withdrawal_deadline`` and ``withdrawal_deadline`` (the deadline that withdrawal was held
against; absent for withdrawals recorded before 6 December 2026); per purpose ``purpose_id``,
``purpose_description``, ``consent_role`` and ``withdrawal_deadline`` (the deadline now).

One rule for missing values: a field the standard makes mandatory is always present, and null
where the ledger holds no value or it does not apply to that event (``storage_locations``,
``recipient_third_parties`` and ``party_address`` are not recorded by the study; only a given
consent has a ``validity_duration``); an optional field or extension is left out when it does
not apply. ``event_state`` uses the ledger's states, which are DPV consent statuses: requested
(dpv:ConsentRequested), given (dpv:ConsentGiven), withdrawn (dpv:ConsentWithdrawn), refused
(dpv:ConsentRefused), expired (dpv:ConsentExpired).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

from .domain.base import derived_id
from .receipts import SPECIAL_CATEGORIES

SCHEMA_VERSION = "ISO/IEC TS 27560:2023 consent record (DPV-27560 field mapping, 2024-08-01); ledger v1"
LANGUAGE = "en-GB"
JURISDICTION = "GB"  # the study's lawful bases are UK GDPR
EVENT_TYPE = "explicitly_expressed_consent"  # each scope is agreed to on its own, by a stated method
BY_THE_PERSON = {"given", "refused", "withdrawn"}  # the other events are the controller's doing
PII_INFORMATION = [
    {"pii_type": "the person's story: what they share in the conversation, and its recording "
                 "and transcript where they agreed to them",
     "special_pii_category": SPECIAL_CATEGORIES},
    {"pii_type": "identity and contact details: name, email, phone, communities, preferred "
                 "contact"},
]
PERSON = ("id", "reference", "name", "email", "phone", "communities", "preferred_contact",
          "registered_at", "erased", "erased_at")


def subject_access_export(view: dict[str, Any], study: dict[str, Any], *,
                          link: dict[str, Any] | None, now: datetime) -> dict[str, Any]:
    """The export document for one person: ``view`` is ``Ledger.participant``, ``study`` is
    ``Ledger.study``, ``link`` the dates of their personal link (never the link itself)."""
    participant = {key: view[key] for key in PERSON}
    participant["withdrawal_link"] = link_status(link, now, erased=bool(view["erased"]))
    return _plain({
        "export": "subject-access",
        "generated_at": now,
        "controller": study["controller"],
        "study": {"name": study["name"], "lawful_bases": study["lawful_bases"],
                  "retention_days": study["retention_days"],
                  "finance_retention_days": study.get("finance_retention_days"),
                  "scopes": {s["name"]: s["label"] for s in study["scopes"]},
                  "activities": {a["name"]: a["label"] for a in study["activities"]}},
        "participant": participant,
        "consent_records": consent_records(view, study),
        "access_needs": view["access_needs"],
        "arrangements": list(view["arrangements"].values()),
        "payments": view["payments"],
        "expenses": view["expenses"],
        "obligations": view["obligations"],
        "uses": view["uses"],
    })


def consent_records(view: dict[str, Any], study: dict[str, Any], *,
                    for_receipt: bool = False) -> list[dict[str, Any]]:
    """One ISO/IEC TS 27560 record per scope with any history, in the study's order, JSON-ready.
    ``for_receipt``: as the person's own receipt file, which may be passed on: without their own
    words for a withdrawal, the person named by their reference rather than the ledger's id for
    them, and who recorded each step in words ("the research team") rather than token ids."""
    order = [s["name"] for s in study["scopes"]]
    consents = sorted((c for c in view["consents"].values() if c["history"]),
                      key=lambda c: order.index(c["scope"]) if c["scope"] in order else len(order))
    return _plain([consent_record(view["id"], c, study, for_receipt=for_receipt,  # type: ignore[no-any-return]
                                  shown_as=view["reference"] if for_receipt else None)
                   for c in consents])


def _recorded_by(by: Any) -> str | None:
    """Who recorded a step, in words for the person (their receipt)."""
    if by is None:
        return None
    return ("you, through your personal link" if str(by).startswith("participant:")
            else "the research team")


def link_status(link: dict[str, Any] | None, now: datetime, *, erased: bool) -> dict[str, Any]:
    """Whether the person's personal link works: none, active, expired, revoked or stopped
    (erased), with its dates."""
    if link is None:
        return {"status": "none", "issued_at": None, "expires_at": None, "revoked_at": None}
    status = ("stopped" if erased else "revoked" if link["revoked_at"] is not None
              else "expired" if now >= link["expires_at"] else "active")
    return {"status": status, "issued_at": link["issued_at"], "expires_at": link["expires_at"],
            "revoked_at": link["revoked_at"]}


def controller_party_id(study: dict[str, Any]) -> str:
    """The controller's party id in consent records (stable for the study)."""
    return str(derived_id("party", "controller", study["id"]))


def consent_record(principal_id: UUID, consent: dict[str, Any], study: dict[str, Any], *,
                   for_receipt: bool = False, shown_as: str | None = None) -> dict[str, Any]:
    """One scope's consent as an ISO/IEC TS 27560 consent record (see the module docstring);
    ``shown_as`` names the person instead of their id (the record id stays the same)."""
    person = shown_as or str(principal_id)
    scope = next((s for s in study["scopes"] if s["name"] == consent["scope"]), None) or {
        "name": consent["scope"], "label": consent["scope"], "description": None,
        "withdrawal_deadline": None}
    forms = {f["version"]: f for f in study["consent_forms"]}
    controller, bases = study["controller"], study["lawful_bases"]
    controller_id = controller_party_id(study)
    purpose: dict[str, Any] = {
        "purpose_id": scope["name"],
        "purpose": scope["label"],
        "purpose_description": scope["description"],
        "purpose_type": "research",
        "lawful_basis": [b for b in (bases.get("research"), bases.get("special_category")) if b],
        "consent_role": bases.get("research_ethics_consent"),
        "pii_information": PII_INFORMATION,
        "pii_controllers": [controller_id],
        "collection_method": "from the person, with the research team",
        "storage_locations": None,
        "retention_period": f"P{study['retention_days']}D",
        "jurisdiction": JURISDICTION,
        "recipient_third_parties": None,
        "withdrawal_method": "the personal link the team sends the person, or by contacting "
                             f"{controller.get('email') or 'the team'}; withdrawing never costs "
                             "the person their payment",
        "services": [study["name"]],
    }
    if scope["withdrawal_deadline"] is not None:
        purpose["withdrawal_deadline"] = scope["withdrawal_deadline"]
    return {
        "schema_version": SCHEMA_VERSION,
        "record_id": str(derived_id("consent-record", principal_id, scope["name"])),
        "pii_principal_id": person,
        "language": LANGUAGE,
        "privacy_notice": _notices(consent, forms),
        "consent_status": consent["state"],
        "purposes": [purpose],
        "parties": [
            {"party_id": controller_id, "party_name": controller.get("name"),
             "party_role": "pii_controller", "party_type": "organisation",
             "party_contact": controller.get("email"), "party_email": controller.get("email"),
             "party_address": controller.get("address")},
            {"party_id": person, "party_role": "pii_principal",
             "party_type": "individual"},
        ],
        "events": [_event(step, person, controller_id, forms, for_receipt)
                   for step in consent["history"]],
    }


def _notices(consent: dict[str, Any], forms: dict[str, Any]) -> list[dict[str, Any]]:
    """Each consent form version the scope's events refer to, in the order first used."""
    notices: dict[str, dict[str, Any]] = {}
    for step in consent["history"]:
        version = step.get("form_version")
        if version and version not in notices:
            form = forms.get(version, {})
            notices[version] = {"notice_id": f"consent-form/{version}", "version": version,
                                "sha256": form.get("sha256") or step.get("form_sha256"),
                                "registered_at": form.get("registered_at"), "language": LANGUAGE}
    return list(notices.values())


def _event(step: dict[str, Any], principal_id: str, controller_id: str,
           forms: dict[str, Any], for_receipt: bool) -> dict[str, Any]:
    state = step["state"]
    event: dict[str, Any] = {
        "event_time": step["at"],
        "validity_duration": "until withdrawn" if state == "given" else None,
        "entity_id": principal_id if state in BY_THE_PERSON else controller_id,
        "event_type": EVENT_TYPE,
        "event_state": state,
    }
    version = step.get("form_version")
    optional = {
        "privacy_notice": None if not version else {
            "version": version,
            "sha256": forms.get(version, {}).get("sha256") or step.get("form_sha256")},
        "indication_method": step.get("method"),
        "attribution": step.get("attribution"),
        "withdrawal_channel": step.get("channel"),
        "withdrawal_reason": None if for_receipt else step.get("reason"),
        "past_withdrawal_deadline": step.get("past_deadline"),
        "withdrawal_deadline": step.get("withdrawal_deadline"),
        "recorded_by": _recorded_by(step.get("by")) if for_receipt else step.get("by"),
    }
    event.update({k: v for k, v in optional.items() if v is not None})
    return event


def _plain(value: Any) -> Any:
    """JSON-ready: datetimes as ISO 8601, ids as strings, tuples as lists."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, UUID):
        return str(value)
    return value
