"""The compliance report: exact at past moments of a scripted history, the same numbers in JSON,
CSV, HTML and PDF, and bad input refused without writing anything."""

from __future__ import annotations

import csv
import io
import json
import zipfile
from datetime import timedelta

import pytest
from pypdf import PdfReader

from ledger.audit.checkpoints import check_signature, checkpoint_message, load_public_key
from ledger.reports import report_data
from ledger.reports.render import _summary

from .conftest import bearer

FORMATS_OF_REPORTS = ("json", "csv", "html", "pdf")


@pytest.fixture
def auditor(tokens):
    return bearer(tokens["auditor"])


def _script(ledger, clock):
    """A history on a moving clock; returns the moments to report on."""
    t0 = clock.now
    moments = {}
    clock.now = t0 + timedelta(days=1)
    a = ledger.register_participant("Ada Script", by="t")["id"]
    b = ledger.register_participant("Bo Script", by="t")["id"]
    ledger.grant_consent(a, "analyse", "1.0", "online", by="t")
    ledger.grant_consent(b, "analyse", "1.0", "bsl", by="t")
    need = ledger.request_access_need(b, "BSL interpreter", "for the conversation", by="t")
    ledger.arrange_payment(a, "conversation", "bank_transfer", "self", True, by="t")
    moments["day1"] = clock.now + timedelta(hours=1)
    clock.now = t0 + timedelta(days=3)
    ledger.record_payment(a, "conversation", "25.00", "bank_transfer", by="t")
    ledger.record_access_outcome(b, need, "met", None, by="t")
    ledger.withdraw_consent(b, "analyse", "email", by="t")
    moments["day3"] = clock.now + timedelta(hours=1)
    clock.now = t0 + timedelta(days=5)
    ledger.record_use(b, "analyse", "quoted in the workshop notes", by="t")
    ledger.decline_payment(b, "conversation", None, by="t")
    ledger.erase(a, "asked to be forgotten", by="admin")
    moments["day5"] = clock.now + timedelta(hours=1)
    clock.now = t0 + timedelta(days=6)
    return moments


def test_past_reports_show_exactly_what_the_history_says_at_each_moment(api_ledger, clock):
    moments = _script(api_ledger, clock)

    day1, day3, day5 = (report_data(api_ledger, moments[k]) for k in ("day1", "day3", "day5"))

    assert day1["participants"] == {"registered": 2, "erased": 0}
    assert day1["consent"]["totals"]["analyse"]["given"] == 2
    assert (day1["payments"]["paid"], day1["access_needs"]["open"]) == (0, 1)
    assert day3["consent"]["totals"]["analyse"] == {
        "given": 1, "requested": 0, "withdrawn": 1, "refused": 0, "expired": 0}
    assert (day3["payments"]["paid"], day3["payments"]["paid_total"]) == (1, "25.00")
    assert (day3["access_needs"]["met"], day3["access_needs"]["median_days_to_meet"]) == (1, 2.0)
    assert day3["obligations"]["open_count"] == 1 and day3["use_after_withdrawal"] == []
    assert [u["scope"] for u in day5["use_after_withdrawal"]] == ["analyse"]
    assert day5["payments"]["declined"] == 1
    assert day5["participants"]["erased"] == 1 and len(day5["erasures"]) == 1
    assert day1["log"]["events"] < day3["log"]["events"] < day5["log"]["events"]


def test_the_payment_figures_are_exactly_those_of_a_scripted_history(api_ledger, clock):
    """Every payment figure against literal values: at the rate, paid differently (with a
    reason), a reduction and a payment of it, a reversal, a decline, and arrangements older
    and younger than ``outstanding_days``."""
    lg, t0 = api_ledger, clock.now
    clock.now = t0 + timedelta(days=1)
    at_rate, other, reduced, reversed_, declined, old, young = (
        lg.register_participant(f"Pay Script {i}", by="t")["id"] for i in range(7))
    lg.arrange_payment(at_rate, "conversation", "bank_transfer", "self", True, by="t")
    lg.arrange_payment(old, "conversation", "voucher", "self", True, by="t")
    lg.reduce_payment(reduced, "workshop", "10.00", "benefits", by="t")
    clock.now = t0 + timedelta(days=2)
    lg.record_payment(at_rate, "conversation", "25.00", "bank_transfer", by="t")
    lg.record_payment(other, "conversation", "30.00", "cash", reason="travel added", by="t")
    lg.record_payment(reduced, "workshop", "10.00", "bank_transfer", by="t")
    paid = lg.record_payment(reversed_, "workshop", "20.00", "cash", reason="short", by="t")
    lg.reverse_payment(reversed_, paid["id"], "paid twice by mistake", by="t")
    lg.decline_payment(declined, "conversation", None, by="t")
    clock.now = t0 + timedelta(days=8)
    lg.arrange_payment(young, "workshop", "cash", "self", False, by="t")
    clock.now = t0 + timedelta(days=12)

    payments = report_data(lg, clock.now, outstanding_days=10)["payments"]

    refs = {pid: lg.participant(pid)["reference"] for pid in (other, old, reversed_, young)}
    assert (payments["paid"], payments["paid_total"]) == (3, "65.00")
    assert payments["paid_at_rate"] == 2  # 25.00 at the rate, 10.00 as agreed
    assert payments["paid_differently"] == [{"reference": refs[other], "activity": "conversation",
                                             "amount": "30.00", "expected": "25.00"}]
    assert (payments["declined"], payments["reduced"], payments["reversed"]) == (1, 1, 1)
    assert payments["outstanding_after_days"] == 10
    # Owed again once reversed: the reversed payment's activity is outstanding too.
    assert [(o["reference"], o["activity"], o["days"]) for o in payments["outstanding"]] \
        == [(refs[old], "conversation", 11.0), (refs[reversed_], "workshop", 10.0)]
    assert payments["by_method"] == {"bank_transfer": {"count": 2, "total": "35.00"},
                                     "cash": {"count": 1, "total": "30.00"}}
    assert [(r["activity"], r["paid"]) for r in payments["rate_table"]] \
        == [("conversation", 2), ("workshop", 1)]
    # With the threshold at 3 days, the younger arrangement (4 days old) is outstanding too.
    younger = report_data(lg, clock.now, outstanding_days=3)["payments"]["outstanding"]
    assert [o["reference"] for o in younger] == [refs[old], refs[reversed_], refs[young]]
    assert report_data(lg, outstanding_days=10)["payments"] == payments  # the views agree


def test_what_is_owed_counts_from_the_arrangement_after_a_decline_and_not_for_the_erased(
        api_ledger, clock):
    """A review's histories (5 December): declined, then agreed five days later, is owed from
    the agreement, not the decline; a reduction then declined altogether is a decline, not a
    reduction too; an arrangement 29 days 23 hours old is not 30 days outstanding; an erased
    person can be paid nothing, so what they were owed, and a need of theirs with no outcome,
    are not work still to do. From the views and from a replay alike."""
    lg, t0 = api_ledger, clock.now
    clock.now = t0 + timedelta(days=1)
    changed_mind, reduced_then_declined, erased, almost, waiting = (
        lg.register_participant(f"Owed Script {i}", by="t")["id"] for i in range(5))
    lg.decline_payment(changed_mind, "conversation", None, by="t")
    lg.reduce_payment(reduced_then_declined, "workshop", "10.00", "benefits", by="t")
    lg.decline_payment(reduced_then_declined, "workshop", None, by="t")
    lg.arrange_payment(erased, "conversation", "voucher", "self", True, by="t")
    need = lg.request_access_need(erased, "captions", None, by="t")
    lg.request_access_need(waiting, "captions", None, by="t")
    clock.now = t0 + timedelta(days=6)
    lg.arrange_payment(changed_mind, "conversation", "cash", "self", False, by="t")
    lg.erase(erased, "asked", by="t")
    clock.now = t0 + timedelta(days=6, minutes=7)
    lg.arrange_payment(almost, "workshop", "cash", "self", False, by="t")
    clock.now = t0 + timedelta(days=36)  # 30 days after `changed_mind` agreed; `almost`: 29.995
    refs = {pid: lg.participant(pid)["reference"] for pid in (changed_mind, waiting, almost)}

    for report in (report_data(lg, outstanding_days=30), report_data(lg, clock.now, 30)):
        payments, needs = report["payments"], report["access_needs"]
        assert [(o["reference"], o["since"], o["days"]) for o in payments["outstanding"]] == [
            (refs[changed_mind], (t0 + timedelta(days=6)).isoformat(), 30.0)]
        assert (payments["declined"], payments["reduced"]) == (1, 0)
        assert (needs["requested"], needs["open"], needs["erased_before_outcome"]) == (2, 1, 1)
        assert [n["waiting_days"] for n in needs["items"] if n["reference"] != refs[waiting]] \
            == [None]
    assert need is not None
    assert [(o["reference"], o["days"]) for o in report_data(lg, outstanding_days=29)[
        "payments"]["outstanding"]] == [(refs[changed_mind], 30.0), (refs[almost], 30.0)]


def test_open_follow_up_work_says_when_the_person_has_given_that_consent_again(api_ledger, clock):
    """A review (5 December): a person withdrew from the analysis, then agreed again; the
    report still listed "remove from analysis" as open work with no sign that it is no longer
    what they want. Now each open piece says so, in JSON, CSV and HTML."""
    from ledger.reports.render import to_csv_zip, to_html

    lg = api_ledger
    again, stays = (lg.register_participant(f"Again Script {i}", by="t")["id"] for i in range(2))
    for pid in (again, stays):
        lg.grant_consent(pid, "analyse", "1.0", "online", by="t")
        lg.withdraw_consent(pid, "analyse", "email", by="t")
    lg.grant_consent(again, "analyse", "1.0", "online", by="t")
    refs = {lg.participant(pid)["reference"]: pid for pid in (again, stays)}

    for report in (report_data(lg), report_data(lg, clock.now)):
        flags = {refs[o["reference"]]: o["given_again"] for o in report["obligations"]["open"]
                 if o["reference"] in refs}
        assert flags == {again: True, stays: False}
    report = report_data(lg)
    import io
    import zipfile
    csv_text = zipfile.ZipFile(io.BytesIO(to_csv_zip(report))).read("open_obligations.csv")
    assert b"given_again" in csv_text.splitlines()[0] and b",true" in csv_text
    html = to_html(report)
    assert "Consent given again since" in html and ">yes<" in html and ">no<" in html


def test_the_report_shows_how_long_each_piece_of_follow_up_work_took(client, auditor, api_ledger,
                                                                      clock):
    """The design: a withdrawal opens follow-up work that staff mark done, and "reports show how
    long each took". Each finished piece is listed with its own time, in every format, from the
    views and from a replay alike; before it was done, a past report still shows it open."""
    lg, t0 = api_ledger, clock.now
    clock.now = t0 + timedelta(days=1)
    pid = lg.register_participant("Fola Followup", by="t")["id"]
    lg.grant_consent(pid, "analyse", "1.0", "online", by="t")
    opened = lg.withdraw_consent(pid, "analyse", "email", by="t")["obligations"]
    clock.now = t0 + timedelta(days=2, hours=12)
    lg.discharge_obligation(pid, opened[0]["id"], None, by="t")
    before_done = t0 + timedelta(days=2)
    clock.now = t0 + timedelta(days=3)
    ref = lg.participant(pid)["reference"]

    now, replayed, earlier = (report_data(lg), report_data(lg, clock.now),
                              report_data(lg, before_done))
    q = f"/api/v1/reports/compliance?as_of={clock.now.isoformat().replace('+', '%2B')}"
    as_csv = zipfile.ZipFile(io.BytesIO(client.get(q + "&format=csv", headers=auditor).data))
    html = client.get(q + "&format=html", headers=auditor).data.decode()

    done = now["obligations"]["done"]
    assert [(d["reference"], d["scope"], d["kind"], d["days_to_done"]) for d in done] \
        == [(ref, "analyse", opened[0]["kind"], 1.5)]
    assert done[0]["opened_at"] == (t0 + timedelta(days=1)).isoformat()
    assert done[0]["done_at"] == (t0 + timedelta(days=2, hours=12)).isoformat()
    assert now["obligations"]["median_days_to_done"] == 1.5
    assert now["obligations"]["open_count"] == len(opened) - 1
    assert replayed["obligations"] == now["obligations"]
    assert earlier["obligations"]["done"] == [] and earlier["obligations"]["open_count"] \
        == len(opened)
    rows = list(csv.DictReader(io.StringIO(as_csv.read("done_obligations.csv").decode())))
    assert [(r["reference"], r["kind"], r["days_to_done"]) for r in rows] \
        == [(ref, opened[0]["kind"], "1.5")]
    assert "Follow-up work done, and how long each took" in html
    assert f"<td>{ref}</td><td>analyse</td><td>{opened[0]['kind']}</td>" in html
    assert "<td>1.5</td>" in html


def test_the_current_report_from_the_views_equals_a_replay_of_the_whole_log(api_ledger, clock):
    _script(api_ledger, clock)

    from_views = report_data(api_ledger)
    replayed = report_data(api_ledger, clock.now)

    assert from_views == replayed


@pytest.fixture
def store_ledger(store_env, clock):
    from ledger.application import Ledger

    lg = Ledger(store_env, clock=clock)
    lg.init_study(by="test")
    yield lg
    lg.close()


def test_the_views_report_picks_exactly_the_rows_a_replay_picks(store_ledger, clock):
    """The current report reads only the rows its rules could pick (unregistered grants, uses
    without a consent given, late withdrawals): each kind it must find, and each it must leave
    out, is here, and the views' report equals the replay's, on both stores."""
    lg, t0 = store_ledger, clock.now
    clock.now = t0 + timedelta(days=1)
    a = lg.register_participant("Ada Filter", by="t")["id"]
    b = lg.register_participant("Bo Filter", by="t")["id"]
    lg.grant_consent(a, "analyse", "1.0", "online", by="t")  # in order: not reported
    lg.grant_consent(b, "analyse", "1.0", "online", by="t")
    lg.record_use(a, "analyse", "coded in analysis", by="t")  # consent given: not reported
    lg.record_use(a, "archive", "archived too early", by="t")  # no consent at all
    lg.set_withdrawal_deadline("analyse", t0 + timedelta(days=2), by="t")
    lg.withdraw_consent(a, "analyse", "email", by="t")  # before the deadline
    clock.now = t0 + timedelta(days=3)
    lg.withdraw_consent(b, "analyse", "phone", by="t")  # past it
    lg.record_use(b, "analyse", "quoted after withdrawal", by="t")
    # A quote that names someone needs their consent to be named: anonymous is not enough
    lg.grant_consent(a, "quote", "1.0", "online", "anonymous", by="t")
    lg.record_use(a, "quote", "quoted by name in the report", "named", by="t")  # reported
    lg.record_use(a, "quote", "quoted without a name", "anonymous", by="t")  # in order
    lg.record_use(a, "quote", "quoted, naming not said", by="t")  # in order
    c = lg.register_participant("Cy Filter", by="t")["id"]
    lg.grant_consent(c, "quote", "1.0", "online", "named", by="t")
    lg.record_use(c, "quote", "quoted by name, as agreed", "named", by="t")  # in order
    # Grants the domain would refuse today, as an older import might have left them: on a form
    # version never registered, on a registered version with other text, and on a version
    # registered only later.
    p = lg._participant(b, fresh=False)
    p._consent_granted("record", "9.9", None, "written", None, clock.now, "import")
    p._consent_granted("store", "1.0", "0" * 64, "written", None, clock.now, "import")
    p._consent_granted("quote", "2.0", None, "written", "anonymous", clock.now, "import")
    lg.save(p)
    clock.now = t0 + timedelta(days=4)
    lg.register_form("2.0", "The second consent form.", by="t")
    clock.now = t0 + timedelta(days=5)

    from_views = report_data(lg)
    replayed = report_data(lg, clock.now)

    assert from_views == replayed
    assert [(g["scope"], g["form_version"]) for g in from_views["grants_without_registered_form"]] \
        == [("record", "9.9"), ("store", "1.0"), ("quote", "2.0")]
    assert [(u["scope"], u["consent_state"], u["attribution"], u["consented_attribution"])
            for u in from_views["use_without_consent"]] == [
        ("archive", None, None, None), ("quote", "given", "named", "anonymous")]
    assert [u["scope"] for u in from_views["use_after_withdrawal"]] == ["analyse"]
    assert [w["channel"] for w in from_views["late_withdrawals"]] == ["phone"]


def test_every_format_carries_the_same_numbers(client, auditor, api_ledger, clock):
    moments = _script(api_ledger, clock)
    q = f"/api/v1/reports/compliance?as_of={moments['day5'].isoformat().replace('+', '%2B')}"

    as_json = client.get(q, headers=auditor)
    as_csv = client.get(q + "&format=csv", headers=auditor)
    as_html = client.get(q + "&format=html", headers=auditor)
    as_pdf = client.get(q + "&format=pdf", headers=auditor)

    assert [r.status_code for r in (as_json, as_csv, as_html, as_pdf)] == [200] * 4
    assert as_csv.headers["Content-Type"] == "application/zip"
    assert as_pdf.data.startswith(b"%PDF")
    summary = {k: "" if v is None else str(v) for k, v in _summary(as_json.json).items()}
    # (paid at the rate, and paid differently, were in the JSON only)
    assert (summary["payments_paid_at_rate"], summary["payments_paid_differently"]) == (
        str(as_json.json["payments"]["paid_at_rate"]),
        str(len(as_json.json["payments"]["paid_differently"])))
    rows = csv.DictReader(io.StringIO(
        zipfile.ZipFile(io.BytesIO(as_csv.data)).read("summary.csv").decode()))
    assert {r["name"]: r["value"] for r in rows} == summary
    html = as_html.data.decode()
    pdf_text = " ".join(p.extract_text() for p in PdfReader(io.BytesIO(as_pdf.data)).pages)
    for name, value in summary.items():
        label = name.replace("_", " ")
        assert f'<th scope="row">{label}</th><td class="n">{value}</td>' in html
        if value:
            assert f"{label} {value}" in " ".join(pdf_text.split())


def test_the_report_names_no_one(client, auditor, api_ledger, clock):
    _script(api_ledger, clock)

    bodies = [client.get(f"/api/v1/reports/compliance?format={f}", headers=auditor).data
              for f in ("json", "html")]

    assert all(b"Script" not in body for body in bodies)
    assert b"Bo Script" in repr(api_ledger.participants_page(limit=5, after=None)).encode()


@pytest.mark.parametrize("query, field", [
    ("as_of=yesterday", "as_of"),
    ("as_of=2026-03-01T17:00:00", "as_of"),  # no offset
    ("as_of=2999-01-01T00:00:00%2B00:00", "as_of"),
    ("as_of=2001-01-01T00:00:00%2B00:00", "as_of"),  # before the study
    ("format=docx", "format"),
    ("outstanding_days=-1", "outstanding_days"),
    ("outstanding_days=99999", "outstanding_days"),
])
def test_bad_report_requests_are_refused_and_write_nothing(client, auditor, api_ledger, query,
                                                           field):
    before = api_ledger.recorder.max_notification_id()

    response = client.get(f"/api/v1/reports/compliance?{query}", headers=auditor)

    assert response.status_code == 422
    assert response.headers["Content-Type"] == "application/problem+json"
    assert field in json.dumps(response.json)
    assert api_ledger.recorder.max_notification_id() == before


def test_an_offset_sent_with_a_raw_plus_gets_a_message_that_says_how_to_send_it(client,
                                                                               auditor):
    response = client.get("/api/v1/reports/compliance?as_of=2026-12-04T10:00:00+01:00",
                          headers=auditor)

    assert response.status_code == 422
    assert "%2B" in response.json["errors"]["as_of"][0]
    for other in ("2026-12-04 10:00:00", "yesterday at noon"):  # a space, but not that mistake
        response = client.get(f"/api/v1/reports/compliance?as_of={other}", headers=auditor)
        assert response.status_code == 422
        assert "%2B" not in response.json["errors"]["as_of"][0], other


def test_staff_cannot_read_the_report(client, staff):
    assert client.get("/api/v1/reports/compliance", headers=staff).status_code == 403


@pytest.mark.parametrize("fmt", ["json", "csv", "html", "pdf"])
def test_every_report_is_signed_over_its_own_bytes(client, auditor, api_ledger, clock, fmt):
    _script(api_ledger, clock)
    key = load_public_key(client.get("/api/v1/audit/checkpoint", headers=auditor)
                          .json["public_key"])

    response = client.get(f"/api/v1/reports/compliance?format={fmt}", headers=auditor)

    signature = response.headers["Ledger-Signature"]
    assert check_signature(key, response.data, signature)
    altered = bytearray(response.data)
    altered[len(altered) // 2] ^= 1
    assert not check_signature(key, bytes(altered), signature)


def test_a_report_carries_the_signed_checkpoint_it_was_built_on_and_the_last_verification(
        client, auditor, api_ledger, clock):
    from ledger.audit.checkpoints import verify

    moments = _script(api_ledger, clock)
    key = load_public_key(api_ledger.merkle.public_key)

    before = report_data(api_ledger)
    past = report_data(api_ledger, moments["day3"])
    api_ledger.merkle.record_verification(verify(api_ledger.merkle))
    after = report_data(api_ledger)

    for report in (before, past, after):
        cp = report["checkpoint"]
        assert check_signature(key, checkpoint_message(cp["size"], cp["root"], cp["time"]),
                               cp["signature"])
        assert cp["size"] >= report["log"]["position"]
        assert cp["root"] == api_ledger.merkle.checkpoint_at(cp["size"])["root"]
    assert before["checkpoint"]["verification"] is None
    assert after["checkpoint"]["verification"]["ok"] is True
    assert after["checkpoint"]["verification"]["signature_valid"] is True
    assert after["checkpoint"]["verification"]["size"] == after["checkpoint"]["size"]
    assert _summary(after)["log_last_verification"] == "passed"
    html = client.get("/api/v1/reports/compliance?format=html", headers=auditor).data.decode()
    assert after["checkpoint"]["root"] in html and "it passed" in html


def test_a_failed_verification_shows_in_the_next_report(api_ledger, clock):
    from ledger.audit.checkpoints import verify

    _script(api_ledger, clock)
    api_ledger.views_at_least()
    api_ledger.merkle.checkpoint()
    table = api_ledger.recorder.events_table_name
    row = api_ledger.sql.query(f"SELECT rowid, state FROM {{t}}{table} WHERE topic = %s "
                               "ORDER BY rowid LIMIT 1", ("ledger:Participant.Registered",))[0]
    state = bytearray(row["state"])
    state[-1] ^= 1  # a participant's event: the current report reads the views, not this
    api_ledger.sql.execute(f"UPDATE {{t}}{table} SET state = %s WHERE rowid = %s",
                           (bytes(state), row["rowid"]))
    api_ledger.merkle.record_verification(verify(api_ledger.merkle))

    cp = report_data(api_ledger)["checkpoint"]

    assert cp["verification"]["ok"] is False
    assert cp["verification"]["first_bad_position"] == row["rowid"]


def test_a_past_report_from_before_anyone_registered_is_empty_not_an_error(client, auditor,
                                                                             api_ledger, clock):
    """Between setting the study up and the first recruit (weeks, in a real study), a report
    of a past moment still answers."""
    before_anyone = clock.now + timedelta(minutes=1)
    _script(api_ledger, clock)  # the first person registers a day after set-up
    q = f"/api/v1/reports/compliance?as_of={before_anyone.isoformat().replace('+', '%2B')}"

    answers = [client.get(q + f"&format={f}", headers=auditor) for f in FORMATS_OF_REPORTS]

    assert [a.status_code for a in answers] == [200] * len(FORMATS_OF_REPORTS)
    report = answers[0].json
    assert report["consent"]["by_participant"] == []
    assert report["participants"] == {"registered": 0, "erased": 0}
    counts = {k: v for k, v in _summary(report).items()
              if k.startswith(("participants", "payments", "access_needs", "obligations"))}
    assert counts and set(counts.values()) <= {0, None, "0.00"}, counts


@pytest.mark.parametrize("change", ["flip", "null"])
def test_a_past_report_over_an_altered_event_says_which_position(client, auditor, api_ledger,
                                                                 clock, caplog, change):
    """A past report replays the log; an event it cannot read is a 500 naming its position
    (the auditor's next step is `ledger verify`), not a bare "something went wrong"."""
    moments = _script(api_ledger, clock)
    table = api_ledger.recorder.events_table_name
    row = api_ledger.sql.query(f"SELECT rowid, state FROM {{t}}{table} WHERE topic = %s "
                               "ORDER BY rowid LIMIT 1", ("ledger:Participant.Registered",))[0]
    state = bytearray(row["state"])
    state[-1] ^= 1
    api_ledger.sql.execute(f"UPDATE {{t}}{table} SET state = %s WHERE rowid = %s",
                           (bytes(state) if change == "flip" else None, row["rowid"]))
    q = f"/api/v1/reports/compliance?as_of={moments['day3'].isoformat().replace('+', '%2B')}"

    response = client.get(q, headers=auditor)

    assert response.status_code == 500
    assert response.mimetype == "application/problem+json"
    assert response.json["code"] == "UnreadableEvent"
    assert f"the event at position {row['rowid']} cannot be read" in response.json["detail"]
    assert "Script" not in response.get_data(as_text=True) + caplog.text


def test_with_external_views_the_current_report_waits_for_them_or_says_they_are_behind(
        store_env, clock, monkeypatch):
    """Views kept by ``ledger projections run``: the current report is of everything saved so
    far, never of the views as they stand. Before, with the follower behind, a report "as of"
    now showed a reversed payment still paid, and people and payments missing."""
    import threading

    import ledger.application
    from ledger.application import Ledger, ViewsBehind

    lg = Ledger({**store_env, "LEDGER_PROJECTIONS": "external"}, clock=clock)
    try:
        lg.init_study(by="test")
        pid = lg.register_participant("Ada External", by="t")["id"]
        payment = lg.record_payment(pid, "conversation", "25.00", "cash", by="t")["id"]
        lg.projector.catch_up()  # the follower has seen the payment...
        lg.reverse_payment(pid, payment, "paid twice by mistake", by="t")  # ...not the reversal

        monkeypatch.setattr(ledger.application, "VIEW_WAIT_S", 0.2)
        with pytest.raises(ViewsBehind):
            report_data(lg)
        monkeypatch.setattr(ledger.application, "VIEW_WAIT_S", 10.0)
        follower = threading.Timer(0.3, lg.projector.catch_up)
        follower.start()
        current = report_data(lg)
        follower.join()

        assert current["log"]["position"] == lg.recorder.max_notification_id()
        assert (current["payments"]["paid"], current["payments"]["reversed"]) == (0, 1)
        replayed = report_data(lg, clock.now)
        assert {k: v for k, v in current.items() if k != "checkpoint"} == {
            k: v for k, v in replayed.items() if k != "checkpoint"}
    finally:
        lg.close()


def test_the_current_report_is_as_of_a_moment_after_every_event_it_holds(api_ledger, clock,
                                                                          monkeypatch):
    """A payment saved (by another worker) while the report caught up its views, stamped two
    seconds after the report began: the report holds it, so its ``as_of`` must not be earlier.
    Before, the moment was read first, and a past report for it disagreed with this one."""
    pid = api_ledger.register_participant("Ada Racing", by="t")["id"]
    catch_up = api_ledger.views_at_least

    def meanwhile(position=None):
        clock.now += timedelta(seconds=2)
        api_ledger.record_payment(pid, "conversation", "25.00", "cash", by="t")
        return catch_up(position)

    monkeypatch.setattr(api_ledger, "views_at_least", meanwhile)
    current = report_data(api_ledger)
    monkeypatch.undo()

    assert current["payments"]["paid"] == 1
    assert current["as_of"] == clock.now.isoformat()
    replayed = report_data(api_ledger, clock.now)
    assert replayed["payments"] == current["payments"]


def test_one_section_of_the_csv_report_comes_as_a_csv_file_of_its_own(client, auditor,
                                                                      api_ledger, clock):
    """`format=csv` is a zip of one CSV file per section (issue 5); `section=` (an extension)
    gives one of them alone, as text/csv, the same bytes as in the zip, and signed."""
    from ledger.audit.checkpoints import check_signature, load_public_key
    from ledger.reports.render import CSV_SECTIONS, csv_tables

    moments = _script(api_ledger, clock)
    q = f"/api/v1/reports/compliance?as_of={moments['day5'].isoformat().replace('+', '%2B')}"
    whole = zipfile.ZipFile(io.BytesIO(client.get(q + "&format=csv", headers=auditor).data))

    assert list(CSV_SECTIONS) == list(csv_tables(report_data(api_ledger, moments["day5"])))
    key = load_public_key(api_ledger.merkle.public_key)
    for section in CSV_SECTIONS:
        one = client.get(q + f"&format=csv&section={section}", headers=auditor)
        assert one.status_code == 200, section
        assert one.headers["Content-Type"] == "text/csv; charset=utf-8"
        assert one.headers["Content-Disposition"].endswith(f'-{section}.csv"')
        assert one.data == whole.read(f"{section}.csv"), section
        assert check_signature(key, one.data, one.headers["Ledger-Signature"])
    rows = list(csv.DictReader(io.StringIO(client.get(
        q + "&format=csv&section=payments_by_method", headers=auditor).data.decode())))
    assert rows and set(rows[0]) >= {"method"}

    for bad in ("&format=json&section=summary", "&format=csv&section=nosuch",
                "&section=summary"):
        refused = client.get(q + bad, headers=auditor)
        assert refused.status_code == 422, bad
        assert refused.content_type == "application/problem+json"
        assert "section" in refused.json["errors"], bad
