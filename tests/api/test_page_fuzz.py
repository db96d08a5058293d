"""Hostile input at scale: a fuzz of the participant pages' form posts (POST /my/<token>/confirm
and /withdraw, and every page route under a method it does not take), through the Flask test
client against a real Ledger on SQLite (no mocks).

Hypothesis (derandomised, no example database) builds every request from parts: the link in the
path (the real one, the same percent-encoded, a replaced one, or truncated, extended, flipped,
random or percent-encoded junk), the form fields (missing, extra, repeated, unknown scope names,
the form token right, wrong, another link's, only in the query string, or any text: huge, NUL
bytes, lone surrogates sent as raw bytes, HTML and SQL) and the encoding (url-encoded, multipart,
JSON, text/plain, none, utf-16, raw bytes under any content type).

Every answer must be the pages' own HTML (or a redirect under /my/) with their security headers,
never a 5xx, a traceback or the injected markup. Nothing may be written unless the post was a
real withdrawal; the fuzz builds real ones on purpose too, and each must be recorded once per
scope, a double submit must write nothing, and the link must still work at the end. Where how
the body parses is certain (well-formed url-encoded or multipart), the exact outcome is predicted
from the person's record before the post and checked. The counts at the end of each fuzz make
sure the examples got past the link to the form checks, and that valid posts were among them.

The fuzz found one server error, fixed in ``pages._csrf_ok``: a form token holding any non-ASCII
character made ``hmac.compare_digest`` raise TypeError (a 503 page instead of the refusal).
"""

from __future__ import annotations

import json
import re
import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, quote, quote_plus, urlsplit
from uuid import UUID

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ledger.api import MAX_BODY, PAGES_CSP

from .conftest import load_every_ledger_module

FORM_ROUTES = ("confirm", "withdraw")  # every POST route of the pages (checked below)
EXAMPLES = 400  # per form route
METHOD_EXAMPLES = 120
CONTACT = "coproduction@ucl.ac.uk"
KNOWN = ("take_part", "record", "store", "analyse", "quote", "publish", "archive",
         "contact_again")  # the study's scopes, in its order (checked below)
GIVEN = {"take_part": {}, "record": {}, "analyse": {}, "quote": {"attribution": "anonymous"}}
UNKNOWN = ("Record", "RECORD", "record ", " record", "record\x00", "recording", "take-part",
           "all", "everything", "__class__", "scopes", "0", "-1", "null", "record,analyse",
           "ｒｅｃｏｒｄ", "re\u200bcord", "record\r\n")
PAYLOADS = (
    '<script>alert("fuzz")</script>', '"><img src=x onerror=alert(1)>',
    "<svg/onload=alert(1)>", "javascript:alert(1)", "' OR '1'='1' --",
    "record'); DROP TABLE ledger_links; --", "record\" OR 1=1 --", "{{ 7 * 7 }}", "{% raw %}",
    "${7*7}", "../../../../etc/passwd", "\x00", "record\x00<script>", "%00", "%ff%fe",
    "\u202eedocer", "\ufeffrecord", "\r\nSet-Cookie: fuzz=1",
)
MARKUP = tuple(p for p in PAYLOADS if "<" in p or '"' in p)
PATH_JUNK = ("%", "%Z", "%ZZ", "%00", "%ff%fe", "%ED%A0%80", "%C0%AF", "%2F", "%2e%2e", "%25",
             "%E2%80%AE", "..", ".", "%0d%0aSet-Cookie:%20x=1", "%3Cscript%3Ealert(1)%3C%2Fscript%3E",
             "%3F", "%23", ";", "~", "%20")
SECURITY_HEADERS = {"X-Content-Type-Options": "nosniff", "X-Frame-Options": "DENY",
                    "Referrer-Policy": "no-referrer", "Cache-Control": "no-store",
                    "Content-Security-Policy": PAGES_CSP}
PAGE_STATUSES = {200, 400, 404, 405, 410, 413, 429}
STRUCTURED = ("urlencoded", "multipart")  # parsing is certain: the outcome is predicted


# -- what a request is made of -------------------------------------------------------------------

@dataclass(frozen=True)
class Csrf:
    """A form token, resolved at request time: this link's, changed, or another link's."""

    kind: str  # exact | upper | truncated | extended | spaced | nonascii | nul | old | other


@dataclass(frozen=True)
class Tok:
    """The link in the path, resolved at request time from the real one."""

    kind: str  # live | pct | replaced | truncated | extended | flipped | swapcase | random | junk
    text: str = ""
    n: int = 0

    @property
    def live(self) -> bool:
        return self.kind in ("live", "pct")


Value = str | Csrf
Pair = tuple[str, Value]

surrogates = st.lists(st.characters(categories=["Cs"]), min_size=1, max_size=3).map("".join)
huge = st.builds(lambda ch, n: ch * n, st.sampled_from(["a", "<", "é", "\x00", "record,", "%"]),
                 st.sampled_from([1_000, 20_000, MAX_BODY + 1, MAX_BODY + 1]))
hostile_text = st.one_of(
    st.sampled_from(PAYLOADS), st.sampled_from(UNKNOWN), st.text(max_size=30), huge,
    st.builds(lambda a, b: a + b, st.sampled_from(KNOWN), surrogates), surrogates,
    st.binary(max_size=20).map(lambda b: b.decode("latin-1")))
csrfs = st.builds(Csrf, st.sampled_from(
    ["exact", "exact", "upper", "truncated", "extended", "spaced", "nonascii", "nul", "old",
     "other"]))
values: st.SearchStrategy[Value] = st.one_of(
    st.sampled_from(KNOWN), st.sampled_from(KNOWN), hostile_text, csrfs)
names = st.one_of(st.sampled_from(["csrf", "csrf", "scope", "scope", "all", "scope[]", "CSRF",
                                   "csrf ", "token", "", "scope\x00"]), st.text(max_size=12))
extra_names = st.text(max_size=12).filter(lambda s: s not in ("csrf", "scope", "all"))


@st.composite
def valid_form(draw: st.DrawFn) -> list[Pair]:
    """A form as the page would send it, give or take: this link's form token (as the first
    csrf field), known scope names (repeated, or ones never given), perhaps "all", perhaps
    unknown extra fields, now and then one unknown scope name."""
    pairs: list[Pair] = [("scope", s) for s in draw(st.lists(st.sampled_from(KNOWN), max_size=5))]
    choice = draw(st.sampled_from([None, None, "yes", ""]))
    if choice is not None:
        pairs.append(("all", choice))
    pairs += draw(st.lists(st.tuples(extra_names, hostile_text), max_size=2))
    if draw(st.booleans()):  # often an unknown scope, mostly a plausible one
        pairs.append(("scope", draw(st.one_of(st.sampled_from(UNKNOWN), st.sampled_from(UNKNOWN),
                                              hostile_text))))
    pairs = list(draw(st.permutations(pairs)))
    pairs.insert(draw(st.integers(0, len(pairs))), ("csrf", Csrf("exact")))
    if draw(st.booleans()):  # a second token after the first is ignored
        pairs.append(("csrf", draw(csrfs)))
    return pairs


hostile_form = st.lists(st.tuples(names, values), max_size=8)
forms = st.sampled_from([True, True, False]).flatmap(
    lambda valid: valid_form() if valid else hostile_form)
bad_tokens = st.one_of(
    st.builds(Tok, st.just("truncated"), n=st.integers(0, 42)),
    st.builds(Tok, st.just("extended"), text=st.text(min_size=1, max_size=5)),
    st.builds(Tok, st.just("flipped"), n=st.integers(0, 42)),
    st.just(Tok("swapcase")),
    st.builds(Tok, st.just("random"), text=st.one_of(st.text(max_size=60), hostile_text)),
    st.builds(Tok, st.just("junk"), text=st.sampled_from(PATH_JUNK), n=st.integers(0, 43)),
)
tokens = st.sampled_from(["live"] * 5 + ["pct", "replaced", "bad", "bad", "bad"]).flatmap(
    lambda kind: bad_tokens if kind == "bad" else st.just(Tok(kind)))
encodings = st.sampled_from(["urlencoded"] * 4 + ["multipart"] * 3 + [
    "raw", "json", "text/plain", "none", "utf-16", "bytes"])
raw_types = st.sampled_from([
    None, "", "application/x-www-form-urlencoded", "application/x-www-form-urlencoded; charset=latin-1",
    "multipart/form-data", "multipart/form-data; boundary=", "multipart/form-data; boundary=x",
    "application/json", "text/html", "application/xml", "*/*", "form", "\x00", "é/é"])
queries = st.sampled_from(["", "", "", "csrf", "junk"])
addresses = st.sampled_from(["127.0.0.1", "198.51.100.7", "2001:db8::1", ""])


@dataclass
class Link:
    """The person's current link, their replaced one, and another person's form token."""

    pid: str
    token: str
    csrf: str
    old_token: str
    old_csrf: str
    other_csrf: str


def _b(text: str) -> bytes:
    """Text as the bytes a careless client sends: lone surrogates go out as they are."""
    return text.encode("utf-8", "surrogatepass")


def resolve_value(value: Value, link: Link) -> str:
    if isinstance(value, str):
        return value
    right = link.csrf
    return {"exact": right, "upper": right.upper(), "truncated": right[:-1],
            "extended": right + "0", "spaced": f" {right}", "nonascii": "é" + right[1:],
            "nul": right + "\x00", "old": link.old_csrf, "other": link.other_csrf}[value.kind]


def resolve_token(tok: Tok, link: Link) -> str:
    """The path segment: percent-encoded where the token itself would be plain text."""
    live = link.token
    if tok.kind == "live":
        return live
    if tok.kind == "pct":
        return "".join(f"%{b:02X}" for b in live.encode())
    if tok.kind == "replaced":
        return link.old_token
    if tok.kind == "truncated":
        return live[:tok.n]
    if tok.kind == "extended":
        return quote(_b(live + tok.text), safe="")
    if tok.kind == "flipped":
        return live[:tok.n] + ("A" if live[tok.n] != "A" else "B") + live[tok.n + 1:]
    if tok.kind == "swapcase":
        return live.swapcase()
    if tok.kind == "random":
        return quote(_b(tok.text), safe="")
    return live[:tok.n] + tok.text + live[tok.n:]  # junk, as it is, inside the real link


def multipart(pairs: list[tuple[str, str]]) -> tuple[bytes, str]:
    boundary = "----fuzzb0undary7MA4YWxkTrZu0gW"
    body = b"".join(b"--" + boundary.encode() + b"\r\nContent-Disposition: form-data; name=\""
                    + _b(k) + b"\"\r\n\r\n" + _b(v) + b"\r\n" for k, v in pairs)
    return body + b"--" + boundary.encode() + b"--\r\n", f"multipart/form-data; boundary={boundary}"


def encode(encoding: str, pairs: list[tuple[str, str]], raw: bytes, raw_type: str | None,
           ) -> tuple[bytes, str | None, list[tuple[str, str]] | None]:
    """Body, content type, and the form the server will parse from it (None: not predicted)."""
    if encoding == "urlencoded":
        body = "&".join(quote_plus(_b(k)) + "=" + quote_plus(_b(v)) for k, v in pairs).encode()
        return body, "application/x-www-form-urlencoded", pairs
    if encoding == "multipart":
        body, content_type = multipart(pairs)
        plain = all(not set(k) & set('"\\\r\n%;') for k, _ in pairs)
        return body, content_type, pairs if plain else None
    if encoding == "raw":  # unquoted: "&", "=" and bytes inside values break the structure
        return (b"&".join(_b(k) + b"=" + _b(v) for k, v in pairs),
                "application/x-www-form-urlencoded", None)
    if encoding == "json":
        return json.dumps(dict(pairs)).encode(), "application/json", []
    if encoding == "text/plain":
        return b"\r\n".join(_b(k) + b"=" + _b(v) for k, v in pairs), "text/plain", []
    if encoding == "none":
        return "&".join(quote_plus(_b(k)) + "=" + quote_plus(_b(v)) for k, v in pairs).encode(), \
            None, []
    if encoding == "utf-16":
        text = "&".join(f"{k}={v}" for k, v in pairs)
        return (text.encode("utf-16", "surrogatepass"),
                "application/x-www-form-urlencoded; charset=utf-16", None)
    return raw, raw_type, None  # bytes


# -- the person, the link, and what the ledger holds -------------------------------------------

def _setup(client, staff, api_ledger) -> Link:
    """A person with four consents given, one requested, one withdrawn by staff; a replaced link,
    a current one; and another person's link."""
    def person(name: str) -> str:
        pid = client.post("/api/v1/participants", headers=staff, json={"name": name}).json["id"]
        for scope, extra in [*GIVEN.items(), ("publish", {})]:
            assert client.post(f"/api/v1/participants/{pid}/consents", headers=staff, json={
                "scope": scope, "form_version": "1.0", "method": "online", **extra},
            ).status_code == 201
        return str(pid)

    def link(pid: str) -> tuple[str, str]:
        response = client.post(f"/api/v1/participants/{pid}/withdrawal-link", headers=staff,
                               json={})
        assert response.status_code == 201
        token = response.json["url"].rsplit("/", 1)[1]
        page = client.get(f"/my/{token}").get_data(as_text=True)
        return token, re.search(r'name="csrf" value="([^"]+)"', page).group(1)

    pid = person("Ada Example")
    assert client.post(f"/api/v1/participants/{pid}/consents/publish/withdrawal", headers=staff,
                       json={"channel": "phone"}).status_code == 201
    api_ledger.request_consent(UUID(pid), "archive", "1.0", by="test")  # asked, not answered
    old_token, old_csrf = link(pid)
    token, csrf = link(pid)  # replaces the first
    _, other_csrf = link(person("Other Person"))
    assert len({csrf, old_csrf, other_csrf}) == 3
    return Link(pid, token, csrf, old_token, old_csrf, other_csrf)


def _consents(api_ledger, pid: str) -> dict[str, dict[str, Any]]:
    return api_ledger.participant(UUID(pid))["consents"]


def _writes(api_ledger) -> tuple[Any, ...]:
    """The event log's head and the tables a request writes to directly."""
    counts = tuple(api_ledger.sql.query(f"SELECT COUNT(*) AS n FROM {table}")[0]["n"]
                   for table in ("ledger_links", "ledger_idempotency", "ledger_tokens"))
    return (api_ledger.recorder.max_notification_id(), *counts)


def _rearm(client, staff, pid: str, scopes: list[str]) -> None:
    """Give again what a withdrawal stopped, so later examples can stop it again."""
    for scope in scopes:
        assert client.post(f"/api/v1/participants/{pid}/consents", headers=staff, json={
            "scope": scope, "form_version": "1.0", "method": "online", **GIVEN[scope]},
        ).status_code == 201


def _outcome(location: str) -> tuple[list[str], list[str], bool]:
    query = parse_qs(urlsplit(location).query, keep_blank_values=True)
    parts = {k: [x for x in query.get(k, [""])[0].split(",") if x] for k in ("stopped", "already")}
    return parts["stopped"], parts["already"], bool(query.get("nothing", [""])[0])


# -- checks every answer must pass -------------------------------------------------------------

def check_answer(response, sent: list[str], what: str) -> str:
    """A page (or redirect) of ours, with the headers, and no echo of injected markup."""
    status = response.status_code
    assert status < 500, f"server error {status} for {what}"
    assert status in PAGE_STATUSES | {303, 308}, f"{status} for {what}"
    for header, value in SECURITY_HEADERS.items():
        assert response.headers.get(header) == value, f"{header} missing for {what}"
    assert response.content_type == "text/html; charset=utf-8", what
    body = response.get_data(as_text=True)
    lowered = body.lower()
    assert "traceback" not in lowered and "<script" not in lowered, what
    assert "onerror" not in lowered and "onload" not in lowered, what
    assert "javascript:" not in lowered, what
    for marker in (m for m in MARKUP if any(m in text for text in sent)):
        assert marker not in body, f"{marker!r} echoed for {what}"
    if status in PAGE_STATUSES:
        assert body.startswith("<!doctype html>") and '<html lang="en-GB">' in body, what
        assert body.rstrip().endswith("</html>") and CONTACT in body, what
    else:  # 303 after a withdrawal; 308 from routing, for a path with an empty segment
        location = urlsplit(response.headers["Location"])
        assert location.netloc in ("", "localhost") and location.path.startswith("/my/"), what
    if status == 429:
        assert response.headers["Retry-After"].isdigit(), what
    return body


def test_the_fuzz_covers_every_form_route_and_the_study_s_scopes(app, api_ledger):
    posts = sorted(rule.rule for rule in app.url_map.iter_rules()
                   if rule.endpoint.startswith("pages.") and "POST" in (rule.methods or ()))
    assert posts == [f"/my/<token>/{route}" for route in sorted(FORM_ROUTES)]
    assert tuple(s["name"] for s in api_ledger.study()["scopes"]) == KNOWN


@pytest.mark.parametrize("route", FORM_ROUTES)
def test_hostile_form_posts_never_fail_and_never_write(client, staff, api_ledger, route):
    load_every_ledger_module()  # the same generated posts whatever else was collected
    link = _setup(client, staff, api_ledger)
    seen: Counter[str] = Counter()

    @settings(max_examples=EXAMPLES, derandomize=True, database=None, deadline=None,
              suppress_health_check=list(HealthCheck))
    @given(tok=tokens, form=forms, encoding=encodings, raw=st.binary(max_size=300),
           raw_type=raw_types, query=queries, address=addresses)
    def fuzz(tok: Tok, form: list[Pair], encoding: str, raw: bytes, raw_type: str | None,
             query: str, address: str) -> None:
        pairs = [(k, resolve_value(v, link)) for k, v in form]
        body, content_type, parsed = encode(encoding, pairs, raw, raw_type)
        qs = {"": "", "csrf": f"?csrf={link.csrf}&scope=record&all=yes",  # the query never counts
              "junk": "?" + quote(_b("".join(v for _, v in pairs)[:200]), safe="=&")}[query]
        path = f"/my/{resolve_token(tok, link)}/{route}{qs}"
        request: dict[str, Any] = {"method": "POST", "data": body,
                                   "environ_base": {"REMOTE_ADDR": address}}
        if content_type is not None:
            request["content_type"] = content_type
        what = (f"POST {path[:120]!r} {encoding} {content_type!r} {len(body)} bytes: "
                f"{body[:300]!r}")
        before, consents = _writes(api_ledger), _consents(api_ledger, link.pid)

        response = client.open(path, **request)

        status = response.status_code
        seen["examples"] += 1
        seen[f"status {status}"] += 1
        page = check_answer(response, [path, *(x for pair in pairs for x in pair)], what)
        if status != 303:
            assert _writes(api_ledger) == before, f"written by {what}"
            assert _consents(api_ledger, link.pid) == consents, what
        # The link in the path
        if tok.kind == "replaced":
            assert status == 410 and "does not work any more" in page, what
            seen["replaced link"] += 1
            return
        if not tok.live:
            assert status in (308, 404, 405, 413, 429), what
            seen["stopped at the link"] += 1
            return
        assert status in (200, 303, 400, 413), what  # a real link is never 404 or 429
        seen["past the link"] += 1
        if status == 400 and "Please start again" in page:
            seen["refused form"] += 1
        too_big = len(body) > MAX_BODY
        if too_big:  # said plainly, not "cannot find this page"
            assert status == 413 and "too much to send" in page, what
            seen["too large"] += 1
        # The form, where how it parses is certain: the outcome, predicted from the record
        if parsed is not None:
            seen["predicted"] += 1
            if too_big or next((v for k, v in parsed if k == "csrf"), "") != link.csrf:
                assert status == (413 if too_big else 400), what
                assert "Nothing has changed" in page, what
                return
            given_now = {n for n, c in consents.items() if c.get("state") == "given"}
            scopes = [v for k, v in parsed if k == "scope"]
            if route == "confirm":
                wanted = given_now if next((v for k, v in parsed if k == "all"), "") \
                    else set(scopes)
                chosen = [n for n in KNOWN if n in wanted and n in given_now]
                stopped_before = [n for n in dict.fromkeys(wanted) if n in KNOWN
                                  and consents.get(n, {}).get("state") == "withdrawn"]
                if chosen:  # on to the check page, a GET of its own (Back works after)
                    assert status == 303 and _writes(api_ledger) == before, what
                    location = urlsplit(response.headers["Location"])
                    assert location.path == f"/my/{link.token}/check", what
                    page = check_answer(client.get(location.path + "?" + location.query),
                                        [], what)
                    shown = re.findall(r'name="scope" value="([a-z_]+)"', page)
                    assert shown == chosen, what
                    seen["valid confirm"] += 1
                elif stopped_before or not given_now:  # sent again after stopping: say so
                    assert status == 303 and _writes(api_ledger) == before, what
                    _, already, nothing = _outcome(response.headers["Location"])
                    assert sorted(already) == sorted(stopped_before), what
                    assert nothing == (not stopped_before), what
                    seen["already stopped"] += 1
                else:  # asked again, on a page of its own
                    assert status == 303 and _writes(api_ledger) == before, what
                    location = urlsplit(response.headers["Location"])
                    assert (location.path, location.query) == (f"/my/{link.token}",
                                                               "missing=1"), what
                    asked = client.get(location.path + "?" + location.query)
                    assert "Tick at least one" in asked.get_data(as_text=True), what
                    seen["asked again"] += 1
                return
            if any(s not in KNOWN for s in scopes):
                assert status == 400 and "Nothing has changed" in page, what
                seen["unknown scope"] += 1
                return
            assert status == 303, what
            stopped, already, nothing = _outcome(response.headers["Location"])
            unique = list(dict.fromkeys(scopes))
            assert stopped == [s for s in unique if s in given_now], what
            assert already == [s for s in unique
                               if consents.get(s, {}).get("state") == "withdrawn"], what
            assert nothing == (not stopped and not already), what
        if status == 303 and route == "confirm":  # nothing left to stop: changes nothing
            assert _writes(api_ledger) == before, what
            return
        if status == 303:  # a real withdrawal, predicted or not
            assert route == "withdraw", what
            check_withdrawal(response, request, path, before, consents, what)

    def check_withdrawal(response, request: dict[str, Any], path: str, before: tuple[Any, ...],
                         consents: dict[str, dict[str, Any]], what: str) -> None:
        """One event per scope stopped, each scope's history one step longer, nothing else
        changed; the page after says so; the same post again writes nothing."""
        seen["withdrawal posts"] += 1
        stopped, already, _ = _outcome(response.headers["Location"])
        after = _writes(api_ledger)
        assert after[0] == before[0] + len(stopped) and after[1:] == before[1:], what
        now = _consents(api_ledger, link.pid)
        for scope in KNOWN:
            old, new = consents.get(scope, {}), now.get(scope, {})
            if scope in stopped:
                assert old["state"] == "given" and new["state"] == "withdrawn", what
                assert new["history"][:-1] == old["history"], what
                assert new["history"][-1]["channel"] == "participant_link", what
            else:
                assert new == old, what
        assert all(consents[scope]["state"] == "withdrawn" for scope in already), what
        done = client.get(response.headers["Location"])
        assert done.status_code == 200
        assert ("These are now stopped" in done.get_data(as_text=True)) == bool(stopped)
        again = client.open(path, **request)  # a double submit
        assert again.status_code == 303 and _writes(api_ledger) == after, what
        stopped_again, already_again, _ = _outcome(again.headers["Location"])
        assert stopped_again == [] and set(stopped) <= set(already_again), what
        assert _consents(api_ledger, link.pid) == now, what
        if stopped:
            seen["scopes withdrawn"] += len(stopped)
            seen["double submits"] += 1
            _rearm(client, staff, link.pid, stopped)

    fuzz()

    assert seen["examples"] >= EXAMPLES, seen
    assert seen["past the link"] >= EXAMPLES // 3, seen  # not everything stopped at a 404
    assert seen["stopped at the link"] >= EXAMPLES // 10, seen
    assert seen["replaced link"] >= 5 and seen["too large"] >= 5, seen
    assert seen["predicted"] >= EXAMPLES // 4 and seen["refused form"] >= EXAMPLES // 10, seen
    if route == "confirm":
        assert seen["valid confirm"] >= 20 and seen["asked again"] >= 5, seen
    else:
        assert seen["double submits"] >= 20 and seen["unknown scope"] >= 5, seen
    # the link survived: its page opens and a real withdrawal still works, once
    assert client.get(f"/my/{link.token}").status_code == 200
    before = _writes(api_ledger)
    done = client.post(f"/my/{link.token}/withdraw", data={"csrf": link.csrf, "scope": "record"})
    assert done.status_code == 303 and _outcome(done.headers["Location"])[0] == ["record"]
    assert _writes(api_ledger) == (before[0] + 1, *before[1:])


PAGE_ROUTES = {"": {"GET", "HEAD"}, "/confirm": {"POST"}, "/withdraw": {"POST"},
               "/done": {"GET", "HEAD"}, "/receipt": {"GET", "HEAD"},
               "/receipt.json": {"GET", "HEAD"}}
METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE", "TRACE", "PROPFIND", "CONNECT", "FUZZ")
wrong_methods = st.sampled_from(sorted(PAGE_ROUTES)).flatmap(lambda route: st.tuples(
    st.just(route), st.sampled_from([m for m in METHODS if m not in PAGE_ROUTES[route]])))


def test_methods_the_pages_do_not_take_get_the_kind_page(client, staff, api_ledger):
    """Every page route, with a method it does not take and a hostile body: 405 (or the link's
    own refusal), the kind page, nothing written."""
    load_every_ledger_module()
    link = _setup(client, staff, api_ledger)
    seen: Counter[str] = Counter()

    @settings(max_examples=METHOD_EXAMPLES, derandomize=True, database=None, deadline=None,
              suppress_health_check=list(HealthCheck))
    @given(call=wrong_methods, tok=tokens, form=forms, encoding=encodings,
           raw=st.binary(max_size=80), raw_type=raw_types)
    def fuzz(call: tuple[str, str], tok: Tok, form: list[Pair], encoding: str, raw: bytes,
             raw_type: str | None) -> None:
        route, method = call
        pairs = [(k, resolve_value(v, link)) for k, v in form]
        body, content_type, _ = encode(encoding, pairs, raw, raw_type)
        path = f"/my/{resolve_token(tok, link)}{route}"
        what = f"{method} {path[:120]!r} {content_type!r} {body[:200]!r}"
        before = _writes(api_ledger)

        response = client.open(path, method=method, data=body,
                               **({"content_type": content_type} if content_type else {}))

        seen["examples"] += 1
        check_answer(response, [path, *(x for pair in pairs for x in pair)], what)
        assert _writes(api_ledger) == before, what
        if tok.live or tok.kind == "replaced":
            assert response.status_code == 405, what
            seen[f"405 {route}"] += 1

    fuzz()

    assert seen["examples"] >= METHOD_EXAMPLES, seen
    assert all(seen[f"405 {route}"] >= 2 for route in PAGE_ROUTES), seen


def test_simultaneous_double_submits_withdraw_once(app, client, staff, api_ledger):
    """What the pages guarantee for a double submit: not a per-post key but the record itself.
    Eight identical posts at once (eight threads, one client each) stop each scope once; one
    answer says it stopped them, the others that they were already stopped."""
    link = _setup(client, staff, api_ledger)
    before = _writes(api_ledger)
    form = {"csrf": link.csrf, "scope": ["record", "analyse", "record"]}
    barrier = threading.Barrier(8)

    def post(_: int) -> tuple[list[str], list[str], bool]:
        own = app.test_client()
        barrier.wait()
        response = own.post(f"/my/{link.token}/withdraw", data=form)
        assert response.status_code == 303
        return _outcome(response.headers["Location"])

    with ThreadPoolExecutor(8) as pool:
        outcomes = list(pool.map(post, range(8)))

    stopped = sorted(s for outcome in outcomes for s in outcome[0])
    assert stopped == ["analyse", "record"]
    assert all(set(o[0]) | set(o[1]) == {"record", "analyse"} for o in outcomes)
    assert _writes(api_ledger) == (before[0] + 2, *before[1:])
    consents = _consents(api_ledger, link.pid)
    for scope in ("record", "analyse"):
        assert [h["state"] for h in consents[scope]["history"]] == ["given", "withdrawn"]


# -- what the fuzz found -------------------------------------------------------------------------

@pytest.mark.parametrize("route", FORM_ROUTES)
@pytest.mark.parametrize("csrf", ["é" * 64, "\u2603", "é", "\x80", "\ufffd" * 64],
                         ids=["e-acute x64", "snowman", "e-acute", "U+0080", "U+FFFD x64"])
def test_a_form_token_with_non_ascii_text_is_refused_not_a_server_error(
        client, staff, api_ledger, route, csrf):
    """Found by the fuzz (shrunk to ``csrf=%C2%80``): hmac.compare_digest raises TypeError for
    str holding non-ASCII characters, so such a form token got the 503 'Something went wrong'
    page instead of the refusal."""
    link = _setup(client, staff, api_ledger)
    before = _writes(api_ledger)

    response = client.post(f"/my/{link.token}/{route}", data={"csrf": csrf, "scope": "record"})

    assert response.status_code == 400
    assert "Nothing has changed" in response.get_data(as_text=True)
    assert _writes(api_ledger) == before


@pytest.mark.parametrize("tail", [b"&x=\xff", b"&scope=\xed\xa0\x80", b"&\xc0\xaf=1"],
                         ids=["invalid byte", "lone surrogate", "overlong slash"])
def test_a_form_that_is_not_utf_8_is_refused_as_a_whole(client, staff, api_ledger, tail):
    """Werkzeug drops the whole url-encoded form when its bytes are not UTF-8, so even the right
    form token beside one bad byte is refused: the post fails closed."""
    link = _setup(client, staff, api_ledger)
    before = _writes(api_ledger)

    response = client.post(f"/my/{link.token}/withdraw",
                           data=f"csrf={link.csrf}&scope=record".encode() + tail,
                           content_type="application/x-www-form-urlencoded")

    assert response.status_code == 400 and _writes(api_ledger) == before
    assert "Nothing has changed" in response.get_data(as_text=True)


def test_a_valid_post_in_the_fuzz_s_own_encoders_withdraws(client, staff, api_ledger):
    """The encoders above send what a browser would: a sanity check for the fuzz itself."""
    link = _setup(client, staff, api_ledger)
    for encoding in STRUCTURED:
        pairs = [("csrf", link.csrf), ("scope", "analyse"), ("scope", "analyse")]
        body, content_type, parsed = encode(encoding, pairs, b"", None)
        assert parsed == pairs
        response = client.post(f"/my/{link.token}/withdraw", data=body, content_type=content_type)
        assert response.status_code == 303
        _rearm(client, staff, link.pid, _outcome(response.headers["Location"])[0])
