"""The participant pages in a real browser (Debian's Chromium, driven by Playwright): withdraw
one choice with the keyboard alone, keep the receipt, see the change through the staff API, and
run axe-core (WCAG 2.0/2.1/2.2 A and AA) on every page: zero violations."""

from __future__ import annotations

import json
import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ledger.application import Ledger

from .conftest import Server, start_server

CHROMIUM = "/usr/bin/chromium"
WCAG = ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa", "wcag22a", "wcag22aa"]
DOCS = Path(__file__).resolve().parents[2] / "docs"
# Screenshots for the README are refreshed only when asked: LEDGER_SCREENSHOTS=1.
SCREENSHOTS = os.environ.get("LEDGER_SCREENSHOTS") == "1"

if not shutil.which(CHROMIUM) and os.environ.get("CI", "").lower() != "true":
    pytest.skip("Debian's chromium is not installed (apt-get install chromium)",
                allow_module_level=True)


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Iterator[Server]:
    data = tmp_path_factory.mktemp("browser")
    proc, srv = start_server({"LEDGER_DATA_DIR": str(data)}, data / "server.log", workers=2)
    yield srv
    proc.terminate()
    proc.wait(timeout=30)


@pytest.fixture(scope="module")
def staff(server) -> dict[str, str]:
    lg = Ledger({"LEDGER_DATA_DIR": server.env["LEDGER_DATA_DIR"]})
    _, token = lg.tokens.create("staff", "browser test")
    lg.close()
    return {"Authorization": f"Bearer {token}"}


def _participant_with_link(server: Server, staff: dict[str, str]) -> tuple[str, str]:
    code, _, body = server.request("POST", "/api/v1/participants",
                                   {"name": "Bianca Browsertest"}, staff)
    pid = json.loads(body)["id"]
    for scope, extra in [("take_part", {}), ("record", {}), ("store", {}), ("analyse", {}),
                         ("quote", {"attribution": "anonymous"}), ("publish", {})]:
        server.request("POST", f"/api/v1/participants/{pid}/consents",
                       {"scope": scope, "form_version": "1.0", "method": "online", **extra},
                       staff)
    _, _, body = server.request("POST", f"/api/v1/participants/{pid}/withdrawal-link", {},
                                staff)
    return pid, json.loads(body)["url"]


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking",
            "--disable-component-update", "--disable-sync", "--no-first-run"])
        yield b
        b.close()


@pytest.fixture
def page(browser):
    # bypass_csp only lets the test inject axe-core; the pages themselves run no script.
    context = browser.new_context(bypass_csp=True, viewport={"width": 1024, "height": 900})
    yield context.new_page()
    context.close()


def _axe(page) -> list[dict]:
    from axe_playwright_python.sync_playwright import Axe

    results = Axe().run(page, options={"runOnly": {"type": "tag", "values": WCAG}})
    return [{"id": v["id"], "nodes": [n["target"] for n in v["nodes"]]}
            for v in results.response["violations"]]


def _shot(page, name: str) -> None:
    if SCREENSHOTS:
        DOCS.mkdir(exist_ok=True)
        page.screenshot(path=str(DOCS / f"{name}.png"), full_page=True)


def _tab_to(page, predicate_js: str, limit: int = 40) -> None:
    """Press Tab until the focused element matches; fail if it never does."""
    for _ in range(limit):
        page.keyboard.press("Tab")
        if page.evaluate(f"(() => {{ const e = document.activeElement; return {predicate_js}; }})()"):
            return
    raise AssertionError(f"keyboard focus never reached: {predicate_js}")


def _focus_is_visible(page) -> bool:
    return page.evaluate("""(() => { const s = getComputedStyle(document.activeElement);
        return s.outlineStyle !== 'none' && parseFloat(s.outlineWidth) >= 2; })()""")


def test_withdraw_one_choice_by_keyboard_alone_and_keep_the_receipt(server, staff, page):
    pid, url = _participant_with_link(server, staff)

    page.goto(url)
    assert _axe(page) == []
    _shot(page, "1-choices")
    _tab_to(page, "e.id === 'scope-publish'")
    assert _focus_is_visible(page)
    page.keyboard.press("Space")
    _tab_to(page, "e.tagName === 'BUTTON' && e.textContent.trim() === 'Continue'")
    with page.expect_navigation():
        page.keyboard.press("Enter")
    assert page.locator("h1").inner_text() == "Check before you stop"
    assert "We will take your story down where we can. This does not change your payment." in page.content()
    assert _axe(page) == []
    _shot(page, "2-check")
    _tab_to(page, "e.tagName === 'BUTTON' && e.textContent.includes('Yes, stop')")
    with page.expect_navigation():
        page.keyboard.press("Enter")
    assert page.locator("h1").inner_text() == "Done. We have your choice"
    assert _axe(page) == []
    _shot(page, "3-done")
    _tab_to(page, "e.textContent.trim() === 'See and print your choices'")
    with page.expect_navigation():
        page.keyboard.press("Enter")
    assert page.locator("h1").inner_text() == "A copy of your choices"
    assert "You stopped this" in page.content() and "Bianca" not in page.content()
    assert _axe(page) == []
    _shot(page, "4-receipt")

    _, _, body = server.request("GET", f"/api/v1/participants/{pid}", headers=staff)
    view = json.loads(body)
    assert view["consents"]["publish"]["state"] == "withdrawn"
    assert view["consents"]["publish"]["history"][-1]["channel"] == "participant_link"
    assert view["consents"]["record"]["state"] == "given"
    assert [o["kind"] for o in view["obligations"]] == ["unpublish_story"]


INTERACTIVE = "a[href], button, input:not([type=hidden]), select, textarea, summary"
FOCUSED = """(selector) => {
  const e = document.activeElement;
  if (!e || e === document.body || e === document.documentElement) return null;
  const all = [...document.querySelectorAll(selector)];
  const s = getComputedStyle(e), r = e.getBoundingClientRect();
  return {index: all.indexOf(e), name: e.id || e.textContent.trim().slice(0, 40),
          outline: s.outlineStyle !== 'none' && parseFloat(s.outlineWidth) >= 2,
          onscreen: r.width > 0 && r.height > 0 && r.left >= 0 && r.top >= 0
                    && r.right <= innerWidth && r.bottom <= innerHeight};
}"""


def _keyboard_tour(page) -> tuple[int, list[dict]]:
    """Tab from the top of the page until focus leaves it or comes round again: how many
    controls the page has, and each stop on the way."""
    count = page.evaluate("(selector) => document.querySelectorAll(selector).length",
                          INTERACTIVE)
    stops: list[dict] = []
    for _ in range(count + 5):
        page.keyboard.press("Tab")
        stop = page.evaluate(FOCUSED, INTERACTIVE)
        if stop is None or (stops and stop["index"] == stops[0]["index"]):
            break
        stops.append(stop)
    return count, stops


def test_every_control_on_every_page_is_reached_by_tab_and_shows_where_focus_is(
        server, staff, page):
    """WCAG 2.1.1 and 2.4.7: from the top of each page, Tab alone reaches every link, box and
    button, each once, in the page's order, and the focused one is outlined and on screen
    (the skip link too, which sits off screen until focused)."""
    pid, url = _participant_with_link(server, staff)

    tours = _on_each_page(page, url, "publish", _keyboard_tour)
    server.request("POST", f"/api/v1/participants/{pid}/withdrawal-link/revocation", {}, staff)
    page.goto(url)
    tours["gone"] = _keyboard_tour(page)

    for name, (count, stops) in tours.items():
        assert count >= 1, name
        assert [s["index"] for s in stops] == list(range(count)), (name, stops)
        assert [s["name"] for s in stops if not (s["outline"] and s["onscreen"])] == [], name
    assert tours["choices"][1][0]["name"].startswith("Skip")  # the first stop: the skip link


def _on_each_page(page, url: str, scope: str, measure) -> dict[str, Any]:
    """``measure`` on each page of stopping one choice through the link, in order: the
    choices, the check, done, and the receipt."""
    seen = {}
    page.goto(url)
    seen["choices"] = measure(page)
    page.check(f"#scope-{scope}")
    with page.expect_navigation():
        page.click("text=Continue")
    seen["check"] = measure(page)
    with page.expect_navigation():
        page.click("text=Yes, stop this")
    seen["done"] = measure(page)
    page.goto(url + "/receipt")
    seen["receipt"] = measure(page)
    return seen


def _fits(page) -> bool:
    return page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")


def test_every_page_reflows_at_320_css_pixels(server, staff, browser):
    """WCAG 1.4.10: content fits 320 CSS px (1280 px at 400 %) without scrolling sideways."""
    _, url = _participant_with_link(server, staff)
    context = browser.new_context(bypass_csp=True, viewport={"width": 320, "height": 800})
    page = context.new_page()

    fits = _on_each_page(page, url, "record", _fits)
    problems = _axe(page)
    context.close()

    assert fits == {"choices": True, "check": True, "done": True, "receipt": True}
    assert problems == []


def test_the_error_state_is_accessible_without_javascript(server, staff, browser):
    _, url = _participant_with_link(server, staff)
    context = browser.new_context(bypass_csp=True, java_script_enabled=True)
    page = context.new_page()

    page.goto(url)
    with page.expect_navigation():
        page.click("text=Continue")  # nothing ticked
    title = page.title()
    target = page.get_attribute(".error a", "href")
    problems = _axe(page)
    context.close()

    assert title.startswith("Error: ") and target.startswith("#scope-")
    assert problems == []


def test_link_pages_that_do_not_work_are_kind_and_accessible(server, staff, page):
    pid, url = _participant_with_link(server, staff)
    server.request("POST", f"/api/v1/participants/{pid}/withdrawal-link/revocation", {}, staff)

    page.goto(url)
    revoked_heading = page.locator("h1").inner_text()
    revoked_problems = _axe(page)
    _shot(page, "5-link-stopped")
    response = page.goto(server.url + "/my/" + uuid.uuid4().hex[:43].ljust(43, "x"))

    assert revoked_heading == "This link does not work any more" and revoked_problems == []
    assert response.status == 404 and _axe(page) == []
    assert "coproduction@ucl.ac.uk" in page.content()


def _stop_record_by_clicking(page: Any, url: str) -> None:
    """Open the link, tick "Record the talk", Continue, then "Yes, stop this"."""
    page.goto(url)
    page.check("#scope-record")
    with page.expect_navigation():
        page.click("text=Continue")
    with page.expect_navigation():
        page.click("text=Yes, stop this")


def test_withdrawing_needs_no_javascript(server, staff, browser):
    pid, url = _participant_with_link(server, staff)
    context = browser.new_context(java_script_enabled=False)
    page = context.new_page()

    _stop_record_by_clicking(page, url)
    heading = page.locator("h1").inner_text()
    context.close()

    _, _, body = server.request("GET", f"/api/v1/participants/{pid}", headers=staff)
    assert heading == "Done. We have your choice"
    assert json.loads(body)["consents"]["record"]["state"] == "withdrawn"


def test_back_after_stopping_shows_a_page_that_says_it_is_stopped(server, staff, browser):
    """Back from the page after stopping reloads the check page (a GET), which now says the
    choice is already stopped; before, Chromium showed its "Confirm form resubmission" error."""
    _, url = _participant_with_link(server, staff)
    page = browser.new_page()

    _stop_record_by_clicking(page, url)
    response = page.go_back()
    heading, text = page.locator("h1").inner_text(), page.content()
    problems = _axe(page)
    page.close()

    assert response is not None and response.status == 200
    assert heading == "Done. We have your choice" and "This was stopped already" in text
    assert problems == []


def test_back_after_the_nothing_ticked_message_finds_a_page(server, staff, browser):
    """Continue with nothing ticked, then tick and continue, then Back: before, the message had
    been the answer to the form, and Chromium showed "Confirm Form Resubmission"
    (ERR_CACHE_MISS) instead of a page. "No, go back to my choices" keeps the ticks."""
    _, url = _participant_with_link(server, staff)
    page = browser.new_page()

    page.goto(url)
    with page.expect_navigation():
        page.click("text=Continue")  # nothing ticked
    page.check("#scope-record")
    with page.expect_navigation():
        page.click("text=Continue")
    response = page.go_back()
    heading = page.locator("h1").inner_text()
    problems = _axe(page)
    page.goto(url)
    page.check("#scope-record")
    page.check("#scope-store")
    with page.expect_navigation():
        page.click("text=Continue")
    with page.expect_navigation():
        page.click("text=No, go back to my choices")
    ticked = page.eval_on_selector_all("input[name=scope]:checked", "e => e.map(x => x.value)")
    problems += _axe(page)
    page.close()

    assert response is not None and response.status == 200 and heading == "Your choices"
    assert sorted(ticked) == ["record", "store"]
    assert problems == []


@pytest.fixture
def clocked_server(tmp_path):
    """The app on a real HTTP server in this process, with a clock the test can move."""
    import threading
    from datetime import UTC, datetime

    from werkzeug.serving import make_server

    from ledger.api import create_app

    class Clock:
        now = datetime.now(UTC)

        def __call__(self):
            return self.now

    clock = Clock()
    with __import__("socket").socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    base = f"http://127.0.0.1:{port}"
    lg = Ledger({"LEDGER_DATA_DIR": str(tmp_path), "LEDGER_BASE_URL": base}, clock=clock)
    lg.init_study()
    http = make_server("127.0.0.1", port, create_app({"LEDGER": lg}), threaded=True)
    thread = threading.Thread(target=http.serve_forever, daemon=True)
    thread.start()
    yield lg, clock
    http.shutdown()
    lg.close()


def test_an_expired_link_gets_a_kind_accessible_410(clocked_server, page):
    from datetime import timedelta

    lg, clock = clocked_server
    pid = lg.register_participant("Expiring Example", by="t")["id"]
    lg.grant_consent(pid, "record", "1.0", "online", by="t")
    url = lg.issue_withdrawal_link(pid, by="t")["url"]
    clock.now += timedelta(days=181)

    response = page.goto(url)

    assert response.status == 410
    assert page.locator("h1").inner_text() == "This link does not work any more"
    assert _axe(page) == []


def _text_margins_pt(pdf: bytes) -> list[tuple[float, float]]:
    """For each page of a PDF: the space above its first line of text and below its last (pt)."""
    import io

    from pypdf import PdfReader

    margins = []
    for page in PdfReader(io.BytesIO(pdf)).pages:
        height = float(page.mediabox.height)
        ys: list[float] = []

        def visit(text: str, cm: Any, tm: Any, font: Any, size: float, ys: list = ys) -> None:
            if text.strip():
                ys.append(float(tm[5]) * float(cm[3]) + float(cm[5]))

        page.extract_text(visitor_text=visit)
        if ys:
            margins.append((height - max(ys), min(ys)))
    return margins


def test_every_printed_page_of_the_receipt_keeps_a_margin(server, staff, browser):
    """The receipt prints with no browser header or footer (they would print the private link),
    so the page itself keeps the margin, on every sheet, not only the first."""
    _, url = _participant_with_link(server, staff)
    page = browser.new_page()
    page.goto(url + "/receipt")
    page.emulate_media(media="print")
    pdf = page.pdf(format="A4", prefer_css_page_size=True)
    page.close()

    margins = _text_margins_pt(pdf)

    assert len(margins) >= 2, margins  # long enough to break across sheets
    assert all(top >= 36 and bottom >= 28 for top, bottom in margins), margins  # 1.3 cm, 1 cm


def test_the_api_docs_run_under_a_csp_without_inline_script(server, browser):
    """Swagger UI at /api/v1/docs draws every operation with the page's own CSP in force (no
    'unsafe-inline' for scripts): the browser reports no violation."""
    page = browser.new_page()  # (the CSP is enforced: no bypass here)
    messages: list[str] = []
    page.on("console", lambda m: messages.append(m.text))
    page.on("pageerror", lambda e: messages.append(str(e)))
    response = page.goto(server.url + "/api/v1/docs")
    assert response is not None
    csp = response.headers["content-security-policy"]
    page.wait_for_selector(".opblock", timeout=30_000)
    operations = page.locator(".opblock").count()
    page.close()

    assert "unsafe-inline" not in csp.split("script-src", 1)[1].split(";")[0], csp
    assert operations >= 20
    assert [m for m in messages if "Content Security Policy" in m or "Refused" in m] == []
