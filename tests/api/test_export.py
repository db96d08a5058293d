"""The subject access export: everything held about one person, as JSON (consents as ISO/IEC TS
27560 records) or as an HTML page; after erasure, only the anonymous facts."""

from __future__ import annotations

import hashlib
import html
import json
import logging
import re
import uuid
from datetime import datetime, timedelta
from html.parser import HTMLParser

import pytest

from ledger import pilot
from ledger.api.export import render
from ledger.application import Ledger

from .conftest import bearer

NAME = "Zebedee Quartermaine-Test"
PERSONAL = {  # every personal value seeded below, each recognisable anywhere in a body
    "name": NAME,
    "email": "zebedee.quartermaine@example.invalid",
    "phone": "+44 7700 900461",
    "community": "Kernow Test Community",
    "preferred_contact": "text after six, never voicemail",
    "need_category": "Pictorial timetable",
    "need_detail": "Pictorial timetable printed on lilac paper, large type",
    "need_note": "Venue printed it on lilac card",
    "first_need_note": "Only a black-and-white printer at the first venue",
    "decline_reason": "Worried the workshop fee would affect Universal Credit",
    "reduce_reason": "Asked for a smaller fee after the benefits advice call",
    "withdrawal_reason": "Prefers no recording after reflecting overnight",
    "obligation_note": "Recording wiped from the shared drive",
    "payment_reference": "VOUCHER-ZQ-4471",
    "expense_description": "Return bus fare from Penzance",
    "use_purpose": "Quoted in the interim newsletter, page four",
}
RECORD_FIELDS = {"schema_version", "record_id", "pii_principal_id", "language", "privacy_notice",
                 "consent_status", "purposes", "parties", "events"}
PURPOSE_FIELDS = {"purpose", "purpose_type", "lawful_basis", "pii_information", "pii_controllers",
                  "storage_locations", "retention_period", "jurisdiction",
                  "recipient_third_parties", "withdrawal_method"}
EVENT_FIELDS = {"event_time", "validity_duration", "entity_id", "event_type", "event_state"}
FORM_SHA256 = hashlib.sha256(pilot.FORM_TEXT.encode()).hexdigest()


def _export(client, staff, pid, fmt=None):
    query = f"?format={fmt}" if fmt else ""
    return client.get(f"/api/v1/participants/{pid}/export{query}", headers=staff)


def _post(client, staff, path, body, **headers):
    url = "/api/v1/participants" + (f"/{path}" if path else "")
    response = client.post(url, headers={**staff, **headers}, json=body)
    assert response.status_code in (200, 201), response.json
    return response.json


@pytest.fixture
def seeded(client, staff, clock):
    """A person with something in every part of their record; returns (id, reference, link)."""
    person = _post(client, staff, "", {
        "name": NAME, "email": PERSONAL["email"], "phone": PERSONAL["phone"],
        "communities": [PERSONAL["community"]], "preferred_contact": PERSONAL["preferred_contact"]})
    pid = person["id"]
    need = _post(client, staff, f"{pid}/access-needs", {
        "category": PERSONAL["need_category"], "detail": PERSONAL["need_detail"]})
    _post(client, staff, f"{pid}/access-needs/{need['need_id']}/outcome",
          {"outcome": "partly_met", "note": PERSONAL["first_need_note"]})
    _post(client, staff, f"{pid}/access-needs/{need['need_id']}/outcome",
          {"outcome": "met", "note": PERSONAL["need_note"]})
    _post(client, staff, f"{pid}/payment-arrangements", {
        "activity": "workshop", "declined": True, "reason": PERSONAL["decline_reason"]})
    _post(client, staff, f"{pid}/payment-arrangements", {
        "activity": "workshop", "method": "bank_transfer", "payee": "self",
        "benefits_advice_offered": True})
    _post(client, staff, f"{pid}/payment-reductions", {
        "activity": "workshop", "amount": "10.00", "reason": PERSONAL["reduce_reason"]})
    for scope, method in [("take_part", "online"), ("record", "verbal_recorded"),
                          ("store", "written")]:
        _post(client, staff, f"{pid}/consents", {"scope": scope, "form_version": "1.0",
                                                 "method": method})
    _post(client, staff, f"{pid}/consents", {"scope": "quote", "form_version": "1.0",
                                             "method": "bsl", "attribution": "anonymous"})
    clock.now += timedelta(days=2)  # the test clock stands still unless moved
    withdrawal = _post(client, staff, f"{pid}/consents/record/withdrawal",
                       {"channel": "phone", "reason": PERSONAL["withdrawal_reason"]})
    _post(client, staff, f"{pid}/obligations/{withdrawal['obligations'][0]['id']}/done",
          {"note": PERSONAL["obligation_note"]})
    _post(client, staff, f"{pid}/payment-arrangements", {
        "activity": "conversation", "method": "voucher", "payee": "self",
        "benefits_advice_offered": True})
    _post(client, staff, f"{pid}/payments", {
        "activity": "conversation", "amount": "25.00", "method": "voucher",
        "reference": PERSONAL["payment_reference"]}, **{"Idempotency-Key": "seed"})
    _post(client, staff, f"{pid}/expenses", {
        "activity": "workshop", "amount": "7.40", "method": "cash",
        "description": PERSONAL["expense_description"]})
    _post(client, staff, f"{pid}/uses", {"scope": "quote", "purpose": PERSONAL["use_purpose"]})
    link = _post(client, staff, f"{pid}/withdrawal-link", {})
    return pid, person["reference"], link


def _records(doc):
    return {r["purposes"][0]["purpose_id"]: r for r in doc["consent_records"]}


def test_the_json_export_holds_every_seeded_value(client, staff, seeded):
    pid, reference, _ = seeded

    response = _export(client, staff, pid)

    assert response.status_code == 200 and response.mimetype == "application/json"
    assert response.headers["Content-Disposition"] == (
        f'attachment; filename="subject-access-{reference}.json"')
    doc = response.json
    assert doc["export"] == "subject-access" and datetime.fromisoformat(doc["generated_at"])
    person = doc["participant"]
    assert (person["id"], person["reference"], person["name"], person["email"],
            person["phone"], person["communities"], person["preferred_contact"]) == (
        pid, reference, NAME, PERSONAL["email"], PERSONAL["phone"], [PERSONAL["community"]],
        PERSONAL["preferred_contact"])
    assert person["erased"] is False and person["erased_at"] is None
    assert doc["access_needs"][0]["detail"] == PERSONAL["need_detail"]
    assert doc["payments"][0]["reference"] == PERSONAL["payment_reference"]
    assert doc["payments"][0]["amount"] == "25.00"
    assert {a["activity"]: a["method"] for a in doc["arrangements"]} == {
        "workshop": "bank_transfer", "conversation": "voucher"}
    assert doc["expenses"][0]["description"] == PERSONAL["expense_description"]
    assert doc["expenses"][0]["currency"] == "GBP"  # each money line says its currency
    assert doc["obligations"][0]["note"] == PERSONAL["obligation_note"]
    assert doc["uses"][0]["purpose"] == PERSONAL["use_purpose"]
    assert doc["controller"]["email"] == pilot.CONTROLLER["email"]
    text = response.get_data(as_text=True)
    assert [key for key, value in PERSONAL.items() if value not in text] == []
    # earlier outcomes and arrangements too, each with what was said, not only the latest
    assert [(h["outcome"], h["note"]) for h in doc["access_needs"][0]["history"]] == [
        ("partly_met", PERSONAL["first_need_note"]), ("met", PERSONAL["need_note"])]
    workshop = next(a for a in doc["arrangements"] if a["activity"] == "workshop")
    assert [(h["event"], h["reason"], h["amount"]) for h in workshop["history"]] == [
        ("declined", PERSONAL["decline_reason"], None), ("arranged", None, None),
        ("reduced", PERSONAL["reduce_reason"], "10.00")]


def test_the_html_export_holds_every_seeded_value(client, staff, seeded):
    pid, _, _ = seeded

    body = html.unescape(_export(client, staff, pid, "html").get_data(as_text=True))

    assert [key for key, value in PERSONAL.items() if value not in body] == []


def test_each_consent_record_has_the_27560_fields_with_status_form_and_events(client, staff,
                                                                              seeded):
    pid, _, _ = seeded

    records = _records(_export(client, staff, pid).json)

    assert set(records) == {"take_part", "record", "store", "quote"}  # scopes with any history
    assert {s: r["consent_status"] for s, r in records.items()} == {
        "take_part": "given", "record": "withdrawn", "store": "given", "quote": "given"}
    for record in records.values():
        assert RECORD_FIELDS <= set(record)
        assert PURPOSE_FIELDS <= set(record["purposes"][0])
        assert record["privacy_notice"][0]["version"] == "1.0"
        assert record["privacy_notice"][0]["sha256"] == FORM_SHA256
        assert record["purposes"][0]["retention_period"] == f"P{pilot.RETENTION_DAYS}D"
        assert {p["party_role"] for p in record["parties"]} == {"pii_controller", "pii_principal"}
        for event in record["events"]:
            assert EVENT_FIELDS <= set(event) and datetime.fromisoformat(event["event_time"])
    given, withdrawn = records["record"]["events"]
    assert (given["event_state"], given["indication_method"], given["privacy_notice"]) == (
        "given", "verbal_recorded", {"version": "1.0", "sha256": FORM_SHA256})
    assert given["validity_duration"] == "until withdrawn"
    assert (withdrawn["event_state"], withdrawn["withdrawal_channel"],
            withdrawn["withdrawal_reason"], withdrawn["entity_id"]) == (
        "withdrawn", "phone", PERSONAL["withdrawal_reason"], pid)
    assert withdrawn["validity_duration"] is None and "indication_method" not in withdrawn
    assert withdrawn["event_time"] > given["event_time"]
    assert records["quote"]["events"][0]["attribution"] == "anonymous"


def _ids(value, key=""):
    """Every (key, value) in the document whose key names an id."""
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _ids(v, k)
    elif isinstance(value, list):
        for v in value:
            yield from _ids(v, key)
    elif key == "id" or key.endswith("_id") or key.endswith("_controllers"):
        yield key, value


def test_the_pii_principal_is_the_random_id_and_no_id_holds_personal_data(client, staff,
                                                                          seeded):
    pid, _, _ = seeded

    doc = _export(client, staff, pid).json

    assert {r["pii_principal_id"] for r in doc["consent_records"]} == {pid}
    ids = list(_ids(doc["consent_records"])) + list(_ids(doc["participant"]))
    assert ids and all(isinstance(v, str) for _, v in ids)
    assert [v for _, v in ids if any(word in v for word in NAME.split() + [PERSONAL["email"]])] == []
    assert all(uuid.UUID(r["record_id"]) for r in doc["consent_records"])


def test_the_export_shows_whether_the_link_works_but_never_the_link(client, staff, clock,
                                                                     seeded):
    pid, _, link = seeded
    token = link["url"].rsplit("/", 1)[1]

    active = _export(client, staff, pid)
    clock.now += timedelta(days=400)
    expired = _export(client, staff, pid).json["participant"]["withdrawal_link"]

    assert active.json["participant"]["withdrawal_link"]["status"] == "active"
    assert active.json["participant"]["withdrawal_link"]["expires_at"] == link["expires_at"]
    assert token not in active.get_data(as_text=True)
    assert token not in _export(client, staff, pid, "html").get_data(as_text=True)
    assert expired["status"] == "expired"


class _Outline(HTMLParser):
    """Headings in order, header cells, and anything that would load or run something."""

    def __init__(self) -> None:
        super().__init__()
        self.headings: list[int] = []
        self.th_without_scope = 0
        self.loads: list[str] = []
        self.lang = None

    def handle_starttag(self, tag, attrs):
        attributes = dict(attrs)
        if tag == "html":
            self.lang = attributes.get("lang")
        if re.fullmatch(r"h[1-6]", tag):
            self.headings.append(int(tag[1]))
        if tag == "th" and attributes.get("scope") not in ("row", "col"):
            self.th_without_scope += 1
        if tag in ("script", "style", "link", "img", "iframe", "object") or "style" in attributes \
                or "src" in attributes:
            self.loads.append(tag)


def test_the_html_export_is_a_self_contained_page_with_escaped_values(client, staff):
    name = "Zebedee \"Zed\" O'Quartermaine & Co <3"  # what the domain allows of HTML's specials
    pid = _post(client, staff, "", {"name": name, "communities": ["A & B"]})["id"]

    response = _export(client, staff, pid, "html")

    assert response.status_code == 200 and response.mimetype == "text/html"
    assert response.headers["Content-Disposition"].endswith('.html"')
    body = response.get_data(as_text=True)
    assert "Zebedee &#34;Zed&#34; O&#39;Quartermaine &amp; Co &lt;3" in body
    assert name not in body and "A &amp; B" in body
    outline = _Outline()
    outline.feed(body)
    assert outline.lang == "en-GB" and outline.headings.count(1) == 1
    assert all(b - a <= 1 for a, b in zip(outline.headings, outline.headings[1:], strict=False))
    assert outline.th_without_scope == 0 and outline.loads == []


def test_markup_in_stored_values_is_escaped_in_the_page(app, api_ledger, seeded):
    # The domain refuses tags in text, so plant them in the document to check the page's escaping.
    pid, _, _ = seeded
    doc = api_ledger.subject_access(uuid.UUID(pid))
    doc["participant"]["name"] = "Zebedee <b>Quartermaine</b>-Test"
    doc["access_needs"][0]["detail"] = "<script>alert(1)</script>"
    doc["consent_records"][1]["events"][1]["withdrawal_reason"] = "<i>no</i>"

    with app.test_request_context():
        body = render(doc, "html").get_data(as_text=True)

    assert "Zebedee &lt;b&gt;Quartermaine&lt;/b&gt;-Test" in body and "<b>" not in body
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in body and "<script" not in body
    assert "&lt;i&gt;no&lt;/i&gt;" in body and "<i>" not in body


def test_after_erasure_the_export_says_so_and_keeps_only_anonymous_facts(client, staff, tokens,
                                                                          seeded):
    pid, reference, _ = seeded
    before = _records(_export(client, staff, pid).json)
    erased = client.post(f"/api/v1/participants/{pid}/erasure", headers=bearer(tokens["admin"]),
                         json={"reason": "participant asked"})

    as_json, as_html = _export(client, staff, pid), _export(client, staff, pid, "html")

    assert erased.status_code == 200
    assert as_json.status_code == as_html.status_code == 200
    doc = as_json.json
    assert doc["participant"]["erased"] is True
    assert doc["participant"]["erased_at"] == erased.json["erased_at"]
    assert doc["participant"]["name"] == "[erased]" and doc["participant"]["reference"] == reference
    assert doc["participant"]["withdrawal_link"]["status"] == "stopped"
    after = _records(doc)
    assert {s: r["consent_status"] for s, r in after.items()} == {
        s: r["consent_status"] for s, r in before.items()}
    assert after["record"]["events"][1]["withdrawal_reason"] == "[erased]"
    assert after["record"]["privacy_notice"][0]["sha256"] == FORM_SHA256
    assert doc["payments"][0]["amount"] == "25.00" and doc["access_needs"][0]["outcome"] == "met"
    assert "We erased your personal details" in as_html.get_data(as_text=True)
    for body in (as_json.get_data(), as_html.get_data()):
        assert [key for key, value in PERSONAL.items() if value.encode() in body] == []


def _export_from_the_store(tmp_path, clock, pid):
    """The export by a second Ledger, which has nothing cached: every value read from the store."""
    fresh = Ledger({"LEDGER_DATA_DIR": str(tmp_path)}, clock=clock)
    try:
        return fresh.subject_access(pid)
    finally:
        fresh.close()


def test_from_the_store_the_export_is_the_same_and_after_erasure_holds_nothing_personal(
        tmp_path, clock, api_ledger, seeded):
    pid = uuid.UUID(seeded[0])

    before = _export_from_the_store(tmp_path, clock, pid)
    cached = api_ledger.subject_access(pid)
    api_ledger.erase(pid, "participant asked", by="admin:test")
    after = _export_from_the_store(tmp_path, clock, pid)

    assert before == cached and before["participant"]["name"] == NAME
    assert after["participant"]["erased"] is True
    assert [key for key, value in PERSONAL.items() if value in json.dumps(after)] == []


def test_an_unknown_participant_is_a_404_problem(client, staff):
    response = _export(client, staff, uuid.uuid4())

    assert response.status_code == 404
    assert response.content_type == "application/problem+json"
    assert response.json["code"] == "ParticipantNotFound"


def test_an_unknown_format_is_a_422_naming_the_field(client, staff, seeded):
    pid, _, _ = seeded

    response = _export(client, staff, pid, "xml")

    assert response.status_code == 422
    assert response.content_type == "application/problem+json"
    assert list(response.json["errors"]) == ["format"]


@pytest.mark.parametrize("role, status", [("auditor", 403), ("admin", 403), (None, 401)])
def test_only_staff_may_export(client, tokens, seeded, role, status):
    pid, _, _ = seeded

    response = _export(client, bearer(tokens[role]) if role else {}, pid)

    assert response.status_code == status and NAME not in response.get_data(as_text=True)


def test_exporting_writes_nothing(client, staff, api_ledger, seeded):
    pid, _, _ = seeded
    before = api_ledger.recorder.max_notification_id()

    responses = [_export(client, staff, pid, fmt) for fmt in (None, "json", "html", "xml")]

    assert api_ledger.recorder.max_notification_id() == before
    assert [r.status_code for r in responses] == [200, 200, 200, 422]
    assert all("Ledger-Position" not in r.headers for r in responses)


def test_personal_data_stays_out_of_logs_headers_and_error_bodies(client, staff, seeded, caplog):
    pid, _, _ = seeded
    caplog.set_level(logging.DEBUG)

    responses = [_export(client, staff, pid, fmt) for fmt in ("json", "html", "xml")]

    leaked = [key for key, value in PERSONAL.items()
              if value in caplog.text or any(value in str(r.headers) for r in responses)
              or value in responses[2].get_data(as_text=True)]
    assert leaked == [] and caplog.records  # the requests were logged, without personal data
    assert json.loads(caplog.records[-1].getMessage())["route"] == (
        "/api/v1/participants/<uuid:participant_id>/export")


def test_each_withdrawal_says_the_deadline_it_was_held_against(client, staff, api_ledger, clock):
    """The study's deadlines change after a withdrawal: set for a scope withdrawn before there
    was one, cleared for one withdrawn late. Each withdrawal still says the deadline that
    applied to it, never today's, and the page offers no deadline for a choice already stopped.
    The page's title does not name the study (it stays in a shared device's history)."""
    pid = _post(client, staff, "", {"name": NAME})["id"]
    for scope in ("record", "publish"):
        _post(client, staff, f"{pid}/consents", {"scope": scope, "form_version": "1.0",
                                                 "method": "online"})
    deadline = clock.now + timedelta(days=1)
    api_ledger.set_withdrawal_deadline("record", deadline, by="t")
    clock.now += timedelta(days=2)
    _post(client, staff, f"{pid}/consents/record/withdrawal", {"channel": "phone"})  # late
    _post(client, staff, f"{pid}/consents/publish/withdrawal", {"channel": "phone"})  # none then
    api_ledger.set_withdrawal_deadline("record", None, by="t")
    api_ledger.set_withdrawal_deadline("publish", clock.now - timedelta(days=5), by="t")

    records = _records(_export(client, staff, pid).json)
    page = _export(client, staff, pid, "html").get_data(as_text=True)

    withdrawn = {s: [e for e in records[s]["events"] if e["event_state"] == "withdrawn"]
                 for s in ("record", "publish")}
    assert [(e["past_withdrawal_deadline"], e.get("withdrawal_deadline"))
            for e in withdrawn["record"]] == [(True, deadline.isoformat())]
    assert [(e["past_withdrawal_deadline"], e.get("withdrawal_deadline"))
            for e in withdrawn["publish"]] == [(False, None)]
    assert page.count("We had said you could stop this fully until") == 1
    assert "You can stop this fully until" not in page
    title = re.search(r"<title>(.*?)</title>", page).group(1)
    assert "Racism" not in title and "co-production" not in title
