"""The participant pages through the Flask test client: links, forms, receipts, refusals."""

from __future__ import annotations

import logging
import re
from datetime import UTC, datetime, timedelta
from uuid import UUID
from zoneinfo import ZoneInfo

import pytest

from .conftest import bearer


@pytest.fixture
def person(client, staff, pid):
    for scope, extra in [("take_part", {}), ("record", {}), ("analyse", {}),
                         ("quote", {"attribution": "anonymous"})]:
        response = client.post(f"/api/v1/participants/{pid}/consents", headers=staff,
                               json={"scope": scope, "form_version": "1.0", "method": "online",
                                     **extra})
        assert response.status_code == 201
    return pid


def _link(client, staff, pid) -> str:
    response = client.post(f"/api/v1/participants/{pid}/withdrawal-link", headers=staff, json={})
    assert response.status_code == 201
    assert response.json["url"].startswith("https://ledger.example/my/")
    return response.json["url"].removeprefix("https://ledger.example")


def _csrf(html: str) -> str:
    return re.search(r'name="csrf" value="([^"]+)"', html).group(1)


def _events(api_ledger) -> int:
    return api_ledger.recorder.max_notification_id()


def test_a_link_expires_after_180_days_and_lives_only_as_a_hash(client, staff, person,
                                                               api_ledger, clock):
    response = client.post(f"/api/v1/participants/{person}/withdrawal-link", headers=staff,
                           json={})
    token = response.json["url"].rsplit("/", 1)[1]
    expires = datetime.fromisoformat(response.json["expires_at"])

    stored = repr([tuple(r) for r in api_ledger.sql.query("SELECT * FROM ledger_links")])
    events = b"".join(api_ledger.mapper.cipher.decrypt(n.state)
                      for n in api_ledger.recorder.select_notifications(start=1, limit=1000))
    assert expires - clock.now == timedelta(days=180)
    assert len(token) == 43 and token not in stored and token.encode() not in events
    assert b"WithdrawalLinkIssued" not in events  # topics stay outside the state...
    assert any(n.topic == "ledger:Participant.WithdrawalLinkIssued"
               for n in api_ledger.recorder.select_notifications(start=1, limit=1000))


def test_the_page_shows_each_choice_in_plain_words(client, staff, person):
    html = client.get(_link(client, staff, person)).get_data(as_text=True)

    assert '<html lang="en-GB">' in html and html.count("<h1>") == 1
    for label in ("Stop: Take part", "Stop: Record the talk", "Stop: Quote your words"):
        assert label in html
    assert "It never costs you your payment" in html and "Ada" not in html
    assert "You said yes to each of these" in html  # what the ticks are about, said first


def test_the_page_does_not_assume_the_person_has_taken_part(client, staff, pid, api_ledger):
    """Someone asked but not yet answered is not told they shared their story; with nothing
    left to stop, the list is not "your other choices"."""
    api_ledger.request_consent(UUID(pid), "take_part", "1.0", by="test")
    html = client.get(_link(client, staff, pid)).get_data(as_text=True)

    assert "You shared your story" not in html and "Your other choices" not in html
    assert "Where each choice stands" in html and "Take part: Not answered yet" in html


def test_the_receipt_lists_only_forms_the_person_said_yes_on(client, staff, pid, api_ledger):
    """A choice they were only asked about, or said no to, is not a form they agreed to: the
    receipt said it was (every choice with a form version was listed under "The forms you
    agreed to"), and its history said "Not answered yet" for the day they were asked. The check
    code is given once a form, not once a choice."""
    who = UUID(pid)
    for scope in ("take_part", "record"):
        api_ledger.grant_consent(who, scope, "1.0", "online", by="test")
    api_ledger.request_consent(who, "publish", "1.0", by="test")
    api_ledger.refuse_consent(who, "publish", by="test")
    api_ledger.request_consent(who, "archive", "1.0", by="test")
    html = client.get(_link(client, staff, pid) + "/receipt").get_data(as_text=True)
    forms = html.split("<h2>The forms you agreed to</h2>")[1].split("<h2>")[0]
    archive = html.split("Keep your story for the future:")[1].split("</ul>")[0]

    assert "Form version 1.0, for: Take part, Record the talk." in forms
    assert "Share your story in public" not in forms
    assert "Keep your story for the future" not in forms
    assert forms.count("Check code:") == 1
    assert "We asked you, on form version 1.0" in archive and "Not answered yet," not in archive


def test_a_receipt_with_no_yes_says_so(client, staff, pid, api_ledger):
    api_ledger.request_consent(UUID(pid), "take_part", "1.0", by="test")

    html = client.get(_link(client, staff, pid) + "/receipt").get_data(as_text=True)

    assert "You have not said yes on any form yet." in html and "Check code" not in html


def test_a_page_that_says_go_back_to_your_link_gives_the_way_back(client, staff, person):
    """Pages for a form that could not be used (out of date, the wrong method) said "go back
    to your link" with no link to follow; one for a link that does not work gives none."""
    path = _link(client, staff, person)
    back = f'<a href="{path}">Go back to your choices</a>'

    stale_form = client.post(path + "/withdraw", data={"csrf": "0" * 64, "scope": "record"})
    wrong_method = client.get(path + "/withdraw")
    client.post(f"/api/v1/participants/{person}/withdrawal-link/revocation", headers=staff,
                json={})
    revoked = client.get(path)
    unknown = client.get("/my/" + "x" * 43)

    assert stale_form.status_code == 400 and back in stale_form.get_data(as_text=True)
    assert wrong_method.status_code == 405 and back in wrong_method.get_data(as_text=True)
    assert revoked.status_code == 410 and "Go back to your choices" not in revoked.get_data(
        as_text=True)
    assert unknown.status_code == 404 and "Go back to your choices" not in unknown.get_data(
        as_text=True)


def test_error_pages_of_a_dead_link_offer_no_way_back_and_an_erased_person_no_new_link(
        client, staff, tokens, person):
    """A review found a 405 for an erased person's link offering "Go back to your choices" (a
    410) and "We will send you a new link" (none can be), and a way back on a made-up link:
    the shape of a token is not a working link."""
    path = _link(client, staff, person)
    made_up = client.get("/my/" + "Q" * 43 + "/withdraw")
    erased = client.post(f"/api/v1/participants/{person}/erasure", headers=bearer(
        tokens["admin"]), json={"reason": "asked"})
    assert erased.status_code == 200
    pages = {what: client.get(path + suffix) for what, suffix in (
        ("wrong method", "/withdraw"), ("no such page", "/nope"))}

    assert made_up.status_code == 405
    assert "Go back to your choices" not in made_up.get_data(as_text=True)
    for what, page in pages.items():
        text = page.get_data(as_text=True)
        assert page.status_code in (404, 405), what
        assert "Go back to your choices" not in text, what
        assert "We will send you a new link" not in text, what
        assert "If you have a question, email" in text, what


def test_the_page_after_stopping_keeps_saying_what_the_stop_was(client, staff, person,
                                                                api_ledger, clock):
    """Stopped before the deadline, the same page opened again after it (Back, a reload) said
    "We started using it on ...": true of a stop made now, false of the one made then."""
    api_ledger.set_withdrawal_deadline("analyse", clock.now + timedelta(days=5), by="test")
    path = _link(client, staff, person)
    csrf = _csrf(client.get(path).get_data(as_text=True))
    done = client.post(path + "/withdraw", data={"csrf": csrf, "scope": "analyse"})
    first = client.get(done.headers["Location"]).get_data(as_text=True)
    clock.now += timedelta(days=10)

    again = client.get(done.headers["Location"]).get_data(as_text=True)

    assert "We started using it" not in first
    assert "We started using it" not in again
    assert "We will not use your story in the workshop." in again  # the scope's own words


def test_the_page_says_until_when_the_link_works(client, staff, person, clock):
    """To the minute, in UK time: "until 4 June" read as all of that day, and the link stopped
    working that afternoon, a stop on its way in refused (a review found)."""
    path = _link(client, staff, person)
    html = client.get(path).get_data(as_text=True)
    csrf = _csrf(html)

    until = (clock.now + timedelta(days=180)).astimezone(ZoneInfo("Europe/London"))
    assert f"This link works until {until.day} {until:%B %Y} at {until:%H:%M}." in html
    clock.now += timedelta(days=180, minutes=1)
    late = client.post(path + "/withdraw", data={"csrf": csrf, "scope": "record"})
    assert late.status_code == 410
    assert "Nothing has changed." in late.get_data(as_text=True)  # (a stop sent too late)


def test_no_page_title_says_what_the_study_is_about(client, staff, person):
    """Titles stay in the browser's history on a shared device; the study's name is on the
    page itself, not in its title."""
    path = _link(client, staff, person)
    csrf = _csrf(client.get(path).get_data(as_text=True))
    pages = [client.get(path), client.get(path + "/receipt"),
             client.post(path + "/confirm", data={"csrf": csrf, "scope": "record"},
                         follow_redirects=True),
             client.get(path + "/done?nothing=1"), client.get("/my/" + "x" * 43)]

    titles = [re.search(r"<title>(.*?)</title>", r.get_data(as_text=True)).group(1)
              for r in pages]

    assert all(title.endswith(" | Your personal page") for title in titles), titles
    assert not any("racism" in title.lower() or "co-production" in title.lower()
                   for title in titles), titles
    assert "Racism within co-production" in pages[0].get_data(as_text=True)  # on the page


def test_the_printable_receipt_speaks_as_the_other_pages_do(client, staff, person):
    """The pages say "stop", not "withdraw"; the receipt's numbers and codes are explained."""
    html = client.get(_link(client, staff, person) + "/receipt").get_data(as_text=True)
    words = re.sub(r"<[^>]+>", " ", html)

    assert "withdraw" not in words.lower() and "Copy number" not in words
    assert "Receipt number" in words and "made from the form's exact words" in words


def test_ten_gets_and_heads_change_nothing(client, staff, person, api_ledger):
    path = _link(client, staff, person)
    before = _events(api_ledger)

    for _ in range(5):
        assert client.get(path).status_code == 200
        assert client.head(path).status_code == 200
    for suffix in ("/receipt", "/receipt.json", "/done?nothing=1", "/check?scope=record"):
        assert client.get(path + suffix).status_code == 200
    assert client.get(path + "/done?stopped=record").status_code == 303  # (not stopped)

    assert _events(api_ledger) == before


def test_withdrawing_one_choice_after_checking_it(client, staff, person, api_ledger):
    path = _link(client, staff, person)
    csrf = _csrf(client.get(path).get_data(as_text=True))
    before = _events(api_ledger)

    check = client.post(path + "/confirm", data={"csrf": csrf, "scope": "analyse"},
                        follow_redirects=True)
    unchanged = _events(api_ledger)
    done = client.post(path + "/withdraw", data={"csrf": csrf, "scope": "analyse"})
    page = client.get(done.headers["Location"]).get_data(as_text=True)

    assert "We will not use your story in the workshop. This does not change your payment." \
        in check.get_data(as_text=True)
    assert unchanged == before
    assert done.status_code == 303 and "These are now stopped" in page
    view = client.get(f"/api/v1/participants/{person}", headers=staff).json
    assert view["consents"]["analyse"]["state"] == "withdrawn"
    assert view["consents"]["analyse"]["history"][-1]["channel"] == "participant_link"
    assert [o["kind"] for o in view["obligations"]] == ["remove_from_analysis"]


def test_back_from_the_page_after_stopping_finds_a_page_not_a_resubmission(client, staff,
                                                                           person, api_ledger):
    """The check page is a GET of its own (the form posts, then is redirected there), so the
    browser's Back from the page after stopping reloads it, and it says the choice is stopped."""
    path = _link(client, staff, person)
    csrf = _csrf(client.get(path).get_data(as_text=True))

    ticked = client.post(path + "/confirm", data={"csrf": csrf, "scope": "record"})
    check = client.get(ticked.headers["Location"])
    client.post(path + "/withdraw", data={"csrf": csrf, "scope": "record"})
    before = _events(api_ledger)
    back = client.get(ticked.headers["Location"])

    assert ticked.status_code == 303 and ticked.headers["Location"].startswith(path + "/check?")
    assert check.status_code == 200 and "Check before you stop" in check.get_data(as_text=True)
    assert back.status_code == 303 and "already=record" in back.headers["Location"]
    assert _events(api_ledger) == before


def test_a_check_page_address_made_by_hand_goes_back_to_the_choices(client, staff, person):
    path = _link(client, staff, person)

    response = client.get(path + "/check?scope=nonsense")

    assert response.status_code == 303 and response.headers["Location"] == path


def test_a_repeated_post_writes_nothing_and_says_it_is_done(client, staff, person, api_ledger):
    path = _link(client, staff, person)
    csrf = _csrf(client.get(path).get_data(as_text=True))
    client.post(path + "/withdraw", data={"csrf": csrf, "scope": "record"})
    before = _events(api_ledger)

    again = client.post(path + "/withdraw", data={"csrf": csrf, "scope": "record"})
    page = client.get(again.headers["Location"]).get_data(as_text=True)

    assert _events(api_ledger) == before
    # The second of a double click is what the browser shows: it says when the choice was
    # stopped and what that means, not only "you had already stopped" (which a review found
    # read as "before today", with the deletion of the recording left unsaid).
    text = " ".join(re.sub(r"<[^>]+>", " ", page).split())
    assert "This was stopped already: Record the talk. Stopped on" in text
    assert "We will delete the recording." in text
    assert "Nothing more needed to change. Our team will do this, if they have not already." in text
    assert text.count("does not change your payment") == 1  # (the choice's own words say it)


def test_stop_everything(client, staff, person):
    path = _link(client, staff, person)
    csrf = _csrf(client.get(path).get_data(as_text=True))

    check = client.post(path + "/confirm", data={"csrf": csrf, "all": "yes"},
                        follow_redirects=True).get_data(
        as_text=True)
    scopes = re.findall(r'name="scope" value="([a-z_]+)"', check)
    client.post(path + "/withdraw", data={"csrf": csrf, "scope": scopes})

    states = client.get(f"/api/v1/participants/{person}", headers=staff).json["consents"]
    assert sorted(scopes) == ["analyse", "quote", "record", "take_part"]
    assert {s["state"] for s in states.values()} == {"withdrawn"}


@pytest.mark.parametrize("form", [{}, {"csrf": ""}, {"csrf": "0" * 64}])
def test_a_post_without_a_valid_form_token_is_refused(client, staff, person, api_ledger, form):
    path = _link(client, staff, person)
    before = _events(api_ledger)

    response = client.post(path + "/withdraw", data={**form, "scope": "record"})

    assert response.status_code == 400 and "Nothing has changed" in response.get_data(
        as_text=True)
    assert _events(api_ledger) == before


def test_another_links_form_token_is_refused(client, staff, person, api_ledger):
    other = client.post("/api/v1/participants", headers=staff, json={"name": "Other"}).json["id"]
    client.post(f"/api/v1/participants/{other}/consents", headers=staff,
                json={"scope": "record", "form_version": "1.0", "method": "online"})
    foreign = _csrf(client.get(_link(client, staff, other)).get_data(as_text=True))
    path = _link(client, staff, person)
    before = _events(api_ledger)

    response = client.post(path + "/withdraw", data={"csrf": foreign, "scope": "record"})

    assert response.status_code == 400 and _events(api_ledger) == before


def test_nothing_ticked_asks_again_on_a_page_of_its_own(client, staff, person):
    """Asked again by a 303 to a GET: Back to that page later never asks to send the form
    again (it rendered from the POST, and Chromium showed "Confirm Form Resubmission")."""
    path = _link(client, staff, person)
    csrf = _csrf(client.get(path).get_data(as_text=True))

    response = client.post(path + "/confirm", data={"csrf": csrf})
    page = client.get(response.headers.get("Location", ""))

    assert response.status_code == 303
    assert response.headers["Location"] == path + "?missing=1"
    html = page.get_data(as_text=True)
    assert "Tick at least one thing" in html and "<title>Error: " in html


def test_back_from_the_check_page_keeps_the_ticks(client, staff, person):
    """WCAG 2.2's 3.3.7 (redundant entry): "No, go back to my choices" showed every box empty
    again, so the person had to tick them all a second time."""
    path = _link(client, staff, person)
    csrf = _csrf(client.get(path).get_data(as_text=True))
    check = client.post(path + "/confirm", data={"csrf": csrf, "scope": ["record", "quote"]},
                        follow_redirects=True).get_data(as_text=True)
    back = re.search(r'<a href="([^"]+)">No, go back to my choices</a>', check).group(1)

    html = client.get(back.replace("&amp;", "&")).get_data(as_text=True)

    ticked = re.findall(r'id="scope-([a-z_]+)"[^>]*checked', html, re.S)
    assert sorted(ticked) == ["quote", "record"]
    assert "Tick at least one" not in html


def test_forged_expired_replaced_and_revoked_links_change_nothing(client, staff, person,
                                                                   api_ledger, clock):
    first = _link(client, staff, person)
    csrf = _csrf(client.get(first).get_data(as_text=True))
    second = _link(client, staff, person)  # replaces the first
    before = _events(api_ledger)

    replaced = client.post(first + "/withdraw", data={"csrf": csrf, "scope": "record"})
    forged = client.get("/my/" + "A" * 43)
    malformed = client.get("/my/not-a-token")
    clock.now += timedelta(days=181)
    expired = client.get(second)
    clock.now -= timedelta(days=181)
    client.post(f"/api/v1/participants/{person}/withdrawal-link/revocation", headers=staff,
                json={})
    revoked = client.get(second)

    assert (replaced.status_code, forged.status_code, malformed.status_code,
            expired.status_code, revoked.status_code) == (410, 404, 404, 410, 410)
    assert _events(api_ledger) == before + 1  # only the revocation itself
    for r in (forged, expired):
        text = r.get_data(as_text=True)
        assert "coproduction@ucl.ac.uk" in text and "Ada" not in text


def test_an_erased_persons_link_stops_working(client, staff, tokens, person):
    path = _link(client, staff, person)
    client.post(f"/api/v1/participants/{person}/erasure", headers=bearer(tokens["admin"]),
                json={"reason": "asked"})

    page = client.get(path)

    assert page.status_code == 410
    html = page.get_data(as_text=True)
    assert "We will send you a new link" not in html  # none can be: nothing of theirs is left
    assert "nothing left to see or change" in html


def test_a_done_address_with_nothing_in_it_goes_to_the_choices(client, staff, person):
    """An old or hand-made /done address showed "Done. We have your choice" with nothing
    listed; and /my on its own is a page, not the API's JSON."""
    path = _link(client, staff, person)

    bare = client.get(path + "/done")
    my = client.get("/my")

    assert bare.status_code == 303 and bare.headers["Location"] == path
    assert my.status_code == 404 and my.mimetype == "text/html"


def test_the_receipt_has_the_consent_record_fields(client, staff, person, api_ledger):
    path = _link(client, staff, person)

    receipt = client.get(path + "/receipt.json")
    data = receipt.json
    purposes = {p["purposeId"]: p for p in data["services"][0]["purposes"]}

    assert receipt.headers["Content-Disposition"].startswith("attachment")
    assert data["piiPrincipalId"].startswith("ST-") and "Ada" not in receipt.get_data(
        as_text=True)
    assert data["piiControllers"][0]["email"] == "coproduction@ucl.ac.uk"
    assert set(purposes) == {"take_part", "record", "analyse", "quote"}
    assert purposes["record"]["formSha256"] == api_ledger.study()["consent_forms"][0]["sha256"]
    assert purposes["record"]["lawfulBasis"][0].startswith("UK GDPR Art 6(1)(e)")
    assert purposes["quote"]["attribution"] == "anonymous"
    assert purposes["record"]["history"][0]["state"] == "given"
    token = path.rsplit("/", 1)[1]
    assert token not in receipt.get_data(as_text=True)  # a copy of the file cannot act
    assert data["piiControllers"][0]["contact"] == data["piiControllers"][0]["piiController"]
    assert list(purposes) == ["take_part", "record", "analyse", "quote"]  # the study's order
    assert purposes["record"]["history"][0]["formSha256"] == purposes["record"]["formSha256"]
    assert data["consentTimestamp"] and data["consentReceiptID"] and data["consentRecordId"]


def test_the_record_id_stays_while_the_receipt_id_follows_changes(client, staff, person):
    path = _link(client, staff, person)
    first = client.get(path + "/receipt.json").json
    client.post(f"/api/v1/participants/{person}/consents", headers=staff,
                json={"scope": "archive", "form_version": "1.0", "method": "online"})

    second = client.get(path + "/receipt.json").json

    assert first["consentRecordId"] == second["consentRecordId"]
    assert first["consentReceiptID"] != second["consentReceiptID"]


def test_pages_send_no_referrer_no_store_and_a_strict_csp(client, staff, person):
    response = client.get(_link(client, staff, person))

    assert response.headers["Referrer-Policy"] == "no-referrer"
    assert response.headers["Cache-Control"] == "no-store"
    csp = response.headers["Content-Security-Policy"]
    assert "default-src 'none'" in csp and "form-action 'self'" in csp and "script" not in csp


def test_the_link_token_never_reaches_the_log(client, staff, person, caplog):
    caplog.set_level(logging.INFO, logger="ledger.access")
    path = _link(client, staff, person)
    token = path.rsplit("/", 1)[1]

    client.get(path)
    client.get(path + "/receipt")

    assert token not in caplog.text and "/my/<token>" in caplog.text
    assert '"token": "link:' in caplog.text


def test_guessing_links_is_slowed_down(client):
    from ledger.api.ratelimit import FAILURES

    codes = [client.get("/my/" + f"{i:043d}").status_code for i in range(FAILURES + 2)]

    assert codes[:FAILURES] == [404] * FAILURES and codes[FAILURES:] == [429, 429]


def test_the_page_says_which_deadlines_apply(client, staff, person, api_ledger):
    api_ledger.set_withdrawal_deadline("analyse", datetime(2027, 3, 1, 17, 0, tzinfo=UTC),
                                       by="test")

    html = client.get(_link(client, staff, person)).get_data(as_text=True)
    analyse = html[html.index('id="scope-analyse"'):html.index('id="scope-quote"')]
    record = html[html.index('id="scope-record"'):html.index('id="scope-analyse"')]

    assert "You can stop this fully until 1 March 2027 at 17:00" in analyse
    assert "until" not in record


def test_a_late_withdrawal_by_link_is_recorded_and_flagged(client, staff, person, api_ledger,
                                                            clock):
    api_ledger.set_withdrawal_deadline("analyse", clock.now + timedelta(days=1), by="test")
    path = _link(client, staff, person)
    csrf = _csrf(client.get(path).get_data(as_text=True))
    clock.now += timedelta(days=2)

    client.post(path + "/withdraw", data={"csrf": csrf, "scope": "analyse"})

    history = client.get(f"/api/v1/participants/{person}", headers=staff).json[
        "consents"]["analyse"]["history"]
    assert history[-1]["state"] == "withdrawn" and history[-1]["past_deadline"] is True


def test_the_receipt_file_keeps_the_deadline_each_withdrawal_was_held_against(
        client, staff, person, api_ledger, clock):
    """The deadline changes after the withdrawal; the receipt's step keeps the one that applied
    (the scope's own field says today's)."""
    deadline = clock.now + timedelta(days=1)
    api_ledger.set_withdrawal_deadline("analyse", deadline, by="test")
    path = _link(client, staff, person)
    csrf = _csrf(client.get(path).get_data(as_text=True))
    clock.now += timedelta(days=2)
    client.post(path + "/withdraw", data={"csrf": csrf, "scope": "analyse"})
    later = clock.now + timedelta(days=30)
    api_ledger.set_withdrawal_deadline("analyse", later, by="test")

    analyse = {p["purposeId"]: p for p in client.get(path + "/receipt.json").json[
        "services"][0]["purposes"]}["analyse"]

    assert [(h["state"], h["withdrawalDeadline"], h["pastDeadline"])
            for h in analyse["history"]] == [("given", None, None),
                                             ("withdrawn", deadline.isoformat(), True)]
    assert analyse["withdrawalDeadline"] == later.isoformat()


def test_after_the_deadline_the_check_page_promises_only_what_can_still_be_done(
        client, staff, person, api_ledger, clock):
    api_ledger.set_withdrawal_deadline("analyse", clock.now - timedelta(days=3), by="test")
    path = _link(client, staff, person)
    csrf = _csrf(client.get(path).get_data(as_text=True))

    page = client.post(path + "/confirm", data={"csrf": csrf, "scope": "analyse"},
                       follow_redirects=True).get_data(as_text=True)

    assert "We will stop what we still can" in page
    assert "We will not use your story in the workshop" not in page


def test_after_the_deadline_the_done_page_promises_no_more_than_the_check_page(
        client, staff, person, api_ledger, clock):
    api_ledger.set_withdrawal_deadline("analyse", clock.now - timedelta(days=3), by="test")
    path = _link(client, staff, person)
    csrf = _csrf(client.get(path).get_data(as_text=True))

    done = client.post(path + "/withdraw", data={"csrf": csrf, "scope": "analyse"})
    page = client.get(done.headers["Location"]).get_data(as_text=True)
    stopped = page[page.index("These are now stopped"):page.index("Our team will now")]

    assert "Use your story in the workshop" in stopped and "We will stop what we still can" in stopped
    assert "We will not use your story in the workshop" not in page


def test_the_pages_say_stopping_does_not_change_a_payment_rather_than_promise_one(
        client, staff, person):
    """Someone who declined payment, or gave it away, is not told they keep it."""
    path = _link(client, staff, person)
    csrf = _csrf(client.get(path).get_data(as_text=True))

    check = client.post(path + "/confirm", data={"csrf": csrf, "scope": "record"},
                        follow_redirects=True)
    done = client.post(path + "/withdraw", data={"csrf": csrf, "scope": "record"})
    page = client.get(done.headers["Location"]).get_data(as_text=True)

    for html in (check.get_data(as_text=True), page):
        assert "keep your payment" not in html and "not change your payment" in html


def test_a_page_where_nothing_changed_is_not_titled_done(client, staff, person):
    path = _link(client, staff, person)

    page = client.get(path + "/done?nothing=1").get_data(as_text=True)

    assert "<h1>Nothing has changed</h1>" in page
    assert re.search(r"<title>Nothing has changed\b", page) and "<title>Done" not in page


def test_a_withdrawal_by_link_does_not_tell_the_person_the_size_of_the_log(client, staff,
                                                                            person):
    path = _link(client, staff, person)
    csrf = _csrf(client.get(path).get_data(as_text=True))

    done = client.post(path + "/withdraw", data={"csrf": csrf, "scope": "record"})
    staff_write = client.post(f"/api/v1/participants/{person}/consents/quote/withdrawal",
                              headers=staff, json={"channel": "phone"})

    assert done.status_code == 303 and "Ledger-Position" not in done.headers
    assert "Ledger-Position" in staff_write.headers  # the staff API's read-your-writes stays


def test_the_check_sent_again_after_stopping_says_already_stopped(client, staff, person,
                                                                  api_ledger):
    """Back, then resend: the check page's form again, for choices stopped meanwhile."""
    path = _link(client, staff, person)
    csrf = _csrf(client.get(path).get_data(as_text=True))
    client.post(path + "/withdraw", data={"csrf": csrf, "scope": "record"})
    before = _events(api_ledger)

    again = client.post(path + "/confirm", data={"csrf": csrf, "scope": "record"})

    assert again.status_code == 303
    page = client.get(again.headers["Location"]).get_data(as_text=True)
    assert "This was stopped already" in page and "Record the talk" in page
    assert "Tick at least one" not in page
    assert _events(api_ledger) == before


def test_the_check_sent_when_nothing_is_left_to_stop_says_so(client, staff, person):
    path = _link(client, staff, person)
    csrf = _csrf(client.get(path).get_data(as_text=True))
    client.post(path + "/withdraw", data={"csrf": csrf,
                                          "scope": ["take_part", "record", "analyse", "quote"]})

    again = client.post(path + "/confirm", data={"csrf": csrf})

    assert again.status_code == 303
    page = client.get(again.headers["Location"]).get_data(as_text=True)
    assert "Nothing has changed" in page and 'href="#scope-"' not in page


@pytest.mark.parametrize("method, route, allowed", [
    ("put", "/withdraw", "POST"), ("get", "/confirm", "POST"), ("delete", "", "GET, HEAD")])
def test_a_wrong_method_on_a_page_is_405_with_allow(client, staff, person, method, route,
                                                    allowed):
    path = _link(client, staff, person)

    response = getattr(client, method)(path + route)

    assert response.status_code == 405
    assert response.content_type.startswith("text/html")
    assert set(response.headers["Allow"].split(", ")) >= set(allowed.split(", "))


def test_when_nothing_could_be_stopped_the_page_says_so(client, staff, person):
    path = _link(client, staff, person)
    csrf = _csrf(client.get(path).get_data(as_text=True))

    done = client.post(path + "/withdraw", data={"csrf": csrf, "scope": "archive"})
    page = client.get(done.headers["Location"]).get_data(as_text=True)

    assert "Nothing has changed" in page and "These are now stopped" not in page


def test_someone_elses_guessing_never_blocks_a_real_link(client, staff, person):
    from ledger.api.ratelimit import FAILURES

    path = _link(client, staff, person)
    for i in range(FAILURES + 2):
        client.get("/my/" + f"{i:043d}")
    csrf = _csrf(client.get(path).get_data(as_text=True))

    withdraw = client.post(path + "/withdraw", data={"csrf": csrf, "scope": "record"})

    assert client.get("/my/" + "9" * 43).status_code == 429
    assert withdraw.status_code == 303


@pytest.mark.parametrize("route, method", [
    ("", "get"), ("/confirm", "post"), ("/withdraw", "post"), ("/receipt", "get"),
    ("/receipt.json", "get"), ("/done", "get")])
def test_stopped_and_forged_links_refuse_every_route_and_write_nothing(
        client, staff, person, api_ledger, route, method):
    old = _link(client, staff, person)
    csrf = _csrf(client.get(old).get_data(as_text=True))
    _link(client, staff, person)  # the old link is replaced
    before = _events(api_ledger), api_ledger.sql.query("SELECT COUNT(*) AS n FROM ledger_links")

    replaced = getattr(client, method)(old + route, data={"csrf": csrf, "scope": "record"})
    forged = getattr(client, method)("/my/" + "F" * 43 + route,
                                     data={"csrf": csrf, "scope": "record"})

    assert (replaced.status_code, forged.status_code) == (410, 404)
    assert (_events(api_ledger),
            api_ledger.sql.query("SELECT COUNT(*) AS n FROM ledger_links")) == before
    for r in (replaced, forged):
        assert r.headers["Referrer-Policy"] == "no-referrer"
        assert r.headers["Cache-Control"] == "no-store"
        assert "default-src 'none'" in r.headers["Content-Security-Policy"]


def test_the_choices_page_shows_the_persons_quoting_choice(client, staff, person):
    html = client.get(_link(client, staff, person)).get_data(as_text=True)

    assert "You chose: do not use my name." in html


@pytest.mark.parametrize("how", ["trailing slash", "post to the page", "too deep"])
def test_odd_addresses_under_my_get_the_kind_page(client, staff, person, how):
    path = _link(client, staff, person)
    response = {"trailing slash": lambda: client.get(path + "/"),
                "post to the page": lambda: client.post(path),
                "too deep": lambda: client.get(path + "/a/b")}[how]()

    assert response.status_code in (404, 405)
    assert response.content_type.startswith("text/html")
    assert "coproduction@ucl.ac.uk" in response.get_data(as_text=True)


@pytest.mark.parametrize("fault", ["conflict", "store down"])
def test_a_failure_behind_a_participant_page_gets_the_kind_page_and_logs_no_link(
        client, staff, person, api_ledger, monkeypatch, caplog, fault):
    """A domain conflict or a broken store: the person sees a kind page (never JSON), and the
    log gets the route and the error's type, never their link."""
    from ledger.domain.errors import ConcurrentUpdate

    path = _link(client, staff, person)
    token = path.rsplit("/", 1)[1]

    def broken(*_args, **_kwargs):
        raise ConcurrentUpdate("changed") if fault == "conflict" else RuntimeError(token)

    monkeypatch.setattr(api_ledger, "open_link", broken)
    if fault == "store down":
        monkeypatch.setattr(api_ledger, "study", broken)  # the error page cannot read it either
    caplog.set_level(logging.DEBUG)

    response = client.get(path)

    assert token not in caplog.text and "Traceback" not in caplog.text
    assert response.status_code == (409 if fault == "conflict" else 503)
    assert response.content_type.startswith("text/html")
    page = response.get_data(as_text=True)
    # (a page that failed to show: what was told before is kept, never "nothing was changed",
    # which just after stopping reads as "your choice was lost")
    assert "Anything you have already told us is kept" in page and "Nothing was changed" not in page
    assert 'href="mailto:coproduction@ucl.ac.uk"' in page  # even with the store down
    assert "style-src 'self'" in response.headers["Content-Security-Policy"]


def test_what_flask_logs_itself_names_the_route_and_type_only(app, caplog):
    """An exception raised inside an error handler is logged by Flask, not by our handlers:
    the route pattern and the type, never the raw path (a link) or a traceback."""
    import sys

    token = "T" * 43
    caplog.set_level(logging.DEBUG)
    with app.test_request_context(f"/my/{token}"):
        from flask import request

        request.url_rule = app.url_map.bind("localhost").match(f"/my/{token}", return_rule=True)[0]
        try:
            raise RuntimeError(f"failed for /my/{token}")
        except RuntimeError:
            app.log_exception(sys.exc_info())

    assert "unhandled RuntimeError on GET /my/<token>" in caplog.text
    assert token not in caplog.text and "Traceback" not in caplog.text


def test_the_receipt_carries_the_export_s_27560_records_without_the_person_s_own_words(
        client, staff, person):
    client.post(f"/api/v1/participants/{person}/consents/record/withdrawal", headers=staff,
                json={"channel": "phone", "reason": "Zanzibar private reason"})
    path = _link(client, staff, person)

    receipt = client.get(path + "/receipt.json")
    export = client.get(f"/api/v1/participants/{person}/export", headers=staff).json

    records = receipt.json["consent_records"]
    assert [r["purposes"][0]["purpose_id"] for r in records] == \
        ["take_part", "record", "analyse", "quote"]
    withdrawn = next(r for r in records if r["purposes"][0]["purpose_id"] == "record")
    assert withdrawn["consent_status"] == "withdrawn"
    assert withdrawn["events"][-1]["withdrawal_channel"] == "phone"
    text = receipt.get_data(as_text=True)
    assert "Zanzibar" not in text
    # No ids of the ledger's own: the person is their reference, staff and links are words.
    reference = client.get(f"/api/v1/participants/{person}", headers=staff).json["reference"]
    assert person not in text and "staff:" not in text and "participant:link:" not in text
    assert {r["pii_principal_id"] for r in records} == {reference}
    assert {e["recorded_by"] for r in records for e in r["events"]} == {"the research team"}
    # otherwise the same records as the subject access export (the same record ids too)
    for event in (e for r in export["consent_records"] for e in r["events"]):
        event.pop("withdrawal_reason", None)
        event["recorded_by"] = "the research team"
        if event["entity_id"] == person:
            event["entity_id"] = reference
    for r in export["consent_records"]:
        r["pii_principal_id"] = reference
        r["parties"][1]["party_id"] = reference
    assert records == export["consent_records"]


def test_a_withdrawal_through_the_link_is_recorded_by_you_in_the_receipt(client, staff, person):
    path = _link(client, staff, person)
    csrf = _csrf(client.get(path).get_data(as_text=True))
    client.post(path + "/withdraw", data={"csrf": csrf, "scope": "record"})

    records = client.get(path + "/receipt.json").json["consent_records"]

    record = next(r for r in records if r["purposes"][0]["purpose_id"] == "record")
    assert record["events"][-1]["recorded_by"] == "you, through your personal link"


def test_the_printable_receipt_says_whether_the_person_agreed_to_be_named(client, staff, person,
                                                                          api_ledger):
    """Anonymous on form 1.0, then named on 2.0: the receipt says each, as the choices page
    does, and so does each step of the receipt file."""
    api_ledger.register_form("2.0", "The second consent form.", by="t")
    assert client.post(f"/api/v1/participants/{person}/consents", headers=staff, json={
        "scope": "quote", "form_version": "2.0", "method": "online",
        "attribution": "named"}).status_code == 201
    path = _link(client, staff, person)

    words = re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", client.get(path + "/receipt").get_data(
        as_text=True)))
    steps = {p["purposeId"]: p for p in client.get(path + "/receipt.json").json[
        "services"][0]["purposes"]}["quote"]["history"]

    assert "form version 1.0. You chose: do not use my name" in words
    assert "form version 2.0. You chose: use my name" in words
    assert [s["attribution"] for s in steps] == ["anonymous", "named"]


def test_guesses_on_any_address_under_a_link_count_towards_the_limit(client):
    """An error page under a made-up link (here a 405) looks the link up, to offer the way back
    only for a working one; those guesses count as the link pages' own do."""
    from ledger.api.ratelimit import FAILURES

    for i in range(FAILURES):
        assert client.get("/my/" + f"{i:043d}" + "/withdraw").status_code == 405

    assert client.get("/my/" + "9" * 43).status_code == 429


def test_several_choices_stopped_already_are_spoken_of_in_the_plural(client, staff, person):
    path = _link(client, staff, person)
    csrf = _csrf(client.get(path).get_data(as_text=True))
    form = {"csrf": csrf, "scope": ["record", "analyse"]}
    client.post(path + "/withdraw", data=form)

    again = client.post(path + "/withdraw", data=form)
    text = " ".join(re.sub(r"<[^>]+>", " ", client.get(again.headers["Location"]).get_data(
        as_text=True)).split())

    assert "These were stopped already: Record the talk." in text
    assert "This was stopped already" not in text


def test_a_dead_links_wrong_method_page_does_not_send_the_person_back_to_it(client, staff,
                                                                            person, clock):
    path = _link(client, staff, person)
    clock.now += timedelta(days=181)  # (the link has run out)

    page = client.get(path + "/withdraw")

    assert page.status_code == 405
    text = page.get_data(as_text=True)
    assert "Go back to your link" not in text and "Go back to your choices" not in text
