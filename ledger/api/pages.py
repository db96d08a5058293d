"""The participant pages, reached only through a personal link: see your choices, stop any of
them (with a check first), and keep a receipt. Server-rendered; no JavaScript; GET never changes
anything (mail scanners follow links)."""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from flask import Blueprint, Response, current_app, g, json, redirect, render_template, request, url_for
from flask.typing import ResponseReturnValue

from ..domain.errors import (
    LedgerError,
    LinkNoLongerWorks,
    LinkNotFound,
    LinkOfErasedPerson,
    UnknownScope,
)
from ..privacy.links import TOKEN, LinkRef
from ..store import refused_by_the_store
from .common import ledger

blp = Blueprint("pages", __name__, template_folder="templates", static_folder="static")
log = logging.getLogger("ledger.api")
LONDON = ZoneInfo("Europe/London")
STATE_WORDS = {"given": "Yes", "withdrawn": "You stopped this", "refused": "You said no",
               "requested": "Not answered yet", "expired": "Ended"}


@blp.app_template_filter("long_date")
def long_date(value: Any) -> str:
    """1 March 2027, in UK time."""
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    if not isinstance(value, datetime):
        return ""
    return value.astimezone(LONDON).strftime("%-d %B %Y")


@blp.app_template_filter("long_datetime")
def long_datetime(value: Any) -> str:
    """1 March 2027 at 17:00, in UK time (from a datetime or ISO 8601 text; "" for none)."""
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    if not isinstance(value, datetime):
        return ""
    return value.astimezone(LONDON).strftime("%-d %B %Y at %H:%M")


@blp.app_template_filter("state_words")
def state_words(state: str) -> str:
    """A consent state in everyday words."""
    return STATE_WORDS.get(state, state)


@blp.app_template_filter("attribution_words")
def attribution_words(attribution: str) -> str:
    """A quote's agreed attribution as the person chose it ("named" or "anonymous")."""
    return "use my name" if attribution == "named" else "do not use my name"


@blp.app_template_filter("step_words")
def step_words(state: str) -> str:
    """One step of a choice's history in everyday words (being asked is not "not answered")."""
    return "We asked you" if state == "requested" else STATE_WORDS.get(state, state)


def agreed_forms(receipt: dict[str, Any]) -> list[dict[str, Any]]:
    """Each form version the person said yes on, with its check code and the choices they
    agreed to on it: a form they were only asked about, or said no to, is not one they agreed
    to. One line a form, so the same code is not read out once a choice."""
    forms: dict[tuple[str, str | None], list[str]] = {}
    for p in receipt["services"][0]["purposes"]:
        for h in p["history"]:
            if h["state"] == "given" and h["formVersion"]:
                agreed = forms.setdefault((h["formVersion"], h["formSha256"]), [])
                if p["purpose"] not in agreed:
                    agreed.append(p["purpose"])
    return [{"version": v, "sha256": sha, "purposes": purposes}
            for (v, sha), purposes in forms.items()]


def _page(template: str, status: int = 200, **context: Any) -> Response:
    try:
        study = ledger().study()
        name, email = study["name"], study["controller"].get("email", "")
    except Exception:  # noqa: BLE001 - an error page must still render if the store is down
        # ... and still give the one other way to stop: the contact address, as last read
        name, email = ledger().last_known_contact()
    context.setdefault("study", name)
    context.setdefault("contact_email", email)
    # (from the path: a 405 is raised before the route's arguments are known)
    parts = request.path.split("/")
    token = parts[2] if len(parts) > 2 and parts[1] == "my" and TOKEN.match(parts[2]) else None
    if template == "my/gone.html" and status not in (410, 429) and token \
            and "closed" not in context:  # (not when the caller knows: no such link, say)
        # The way back to the choices only if the link still works; and an erased person's
        # link never promises a new one. (A review found both offered on a 405 for an erased
        # person's link, and a way back on a made-up one: the shape of a token is not a link.)
        try:
            ledger().open_link(token)
        except LinkOfErasedPerson:
            context.setdefault("closed", True)
        except LinkNotFound:  # a guess, counted as the link pages count them
            current_app.extensions["link_failures"].record(request.remote_addr or "?")
        except Exception:  # noqa: BLE001 - an old link, or the store is down
            pass
        else:
            if status != 404:
                context.setdefault("back", url_for("pages.choices", token=token))
    return Response(render_template(template, **context), status=status,
                    mimetype="text/html")


@blp.before_request
def note_link() -> None:
    """Log a prefix of the link's hash, never the link."""
    token = (request.view_args or {}).get("token")
    if token:
        g.token_id = "link:" + ledger().links.digest(token)[:10]


@blp.errorhandler(LinkNotFound)
def not_found(_: Exception) -> Response:
    """An unknown link: a kind page, and nothing about whether anyone exists. An address that
    keeps guessing gets 429 instead; a real link always works, whoever shares the address."""
    limiter, client = current_app.extensions["link_failures"], request.remote_addr or "?"
    wait = limiter.retry_after(client)
    limiter.record(client)
    if wait:
        response = _page("my/gone.html", 429, heading="Please wait a moment",
                         message="There have been too many tries from here. Try again in a "
                                 "few minutes.")
        response.headers["Retry-After"] = str(wait)
        return response
    return _page("my/gone.html", 404, heading="We cannot find this page",
                 message="The link may be mistyped, or it may be old.", closed=False)


@blp.errorhandler(LinkNoLongerWorks)
def gone(error: LinkNoLongerWorks) -> Response:
    """A replaced, stopped or expired link. An erased person's says nothing of sending a new
    one (none can be sent: nothing of theirs is left to show)."""
    # A form sent to it (a stop, after the link was replaced or ran out) changed nothing: say so.
    unchanged = " Nothing has changed." if request.method == "POST" else ""
    if isinstance(error, LinkOfErasedPerson):
        return _page("my/gone.html", 410, heading="This link does not work any more",
                     message="There is nothing left to see or change here." + unchanged,
                     closed=True)
    return _page("my/gone.html", 410, heading="This link does not work any more",
                 message="Links stop working after a while, or when we send you a new one."
                         + unchanged)


def incomplete_form() -> Response:
    """A form that did not arrive whole (the connection dropped while it was being sent)."""
    return _page("my/gone.html", 400, heading="Your answer did not reach us in full",
                 message="Nothing has changed. Please go back to your link and try again.")


def kind_error(status: int, allowed: list[str] | None = None) -> Response:
    """Any error under /my/: the kind page, never an API problem document. A 405 says which
    methods the address takes (``Allow``, which RFC 9110 requires)."""
    if status == 405:
        response = _page("my/gone.html", 405, heading="Please start again",
                         message="This page cannot be used like that.")  # (the way back, if
        # the link works, is a link on the page: not "go back to your link" for a dead one)
        if allowed:
            response.headers["Allow"] = ", ".join(sorted(allowed))
        return response
    if status == 413:
        return _page("my/gone.html", 413, heading="That was too much to send",
                     message="Nothing has changed. Please go back to your link and try again.")
    if status >= 500 or status == 409:
        # Only a form post can have changed anything, and the one that can (stopping) says
        # for itself what it knows (``withdraw``); a page that failed to show changed nothing
        # either, but "nothing was changed" would read as "your choice was lost" just after
        # stopping, when it was kept.
        return _page("my/gone.html", 503 if status >= 500 else 409,
                     heading="Something went wrong on our side",
                     message=("Nothing was changed. Please try again in a few minutes."
                              if request.method == "POST" else
                              "We cannot show this page just now. Anything you have already "
                              "told us is kept. Please try again in a few minutes."))
    return _page("my/gone.html", status if status in (404, 410) else 400,
                 heading="We cannot find this page",
                 message="The link may be mistyped, or it may be old.", back=None)


def _chosen(view: dict[str, Any], names: list[str]) -> list[dict[str, Any]]:
    return [s for s in view["scopes"] if s["name"] in names]


def _csrf_ok(ref: LinkRef) -> bool:
    return ledger().links.check_csrf(ref, request.form.get("csrf", ""))


def _bad_form() -> Response:
    return _page("my/gone.html", 400, heading="Please start again",
                 message="This form was not sent from your page, or it is out of date. Go back "
                         "to your link and try again. Nothing has changed.")


@blp.get("/my/<token>")
def choices(token: str) -> ResponseReturnValue:
    """Your choices, scope by scope, with a way to stop any of them. ``?scope=`` ticks those
    choices again (back from the check page: nothing to tick twice, WCAG 2.2's 3.3.7);
    ``?missing=1`` says that nothing was ticked (the form's answer, by 303, so that Back to
    it never asks to send the form again)."""
    ref, view = ledger().open_link(token)
    ticked = set(request.args.getlist("scope"))
    missing = request.args.get("missing") == "1"
    return _page("my/choices.html", view=view, token=token, csrf=ledger().links.csrf_token(ref),
                 ticked=ticked, error="Tick at least one thing you want us to stop."
                 if missing and view["can_withdraw"] else None,
                 first=view["can_withdraw"][0] if view["can_withdraw"] else "")


def _already_stopped(token: str, view: dict[str, Any], names: list[str]) -> ResponseReturnValue | None:
    """Nothing of ``names`` left to stop (sent again after stopping, or Back to the check
    page): where that is said, not "tick one"."""
    if any(s["state"] == "given" for s in _chosen(view, names)):
        return None
    already = [s["name"] for s in _chosen(view, names) if s["state"] == "withdrawn"]
    if not already and view["can_withdraw"]:
        return None
    return redirect(url_for("pages.done", token=token, already=",".join(already),
                            nothing="" if already else "1"), code=303)


@blp.post("/my/<token>/confirm")
def confirm(token: str) -> ResponseReturnValue:
    """The choices ticked: on to the check page (303 to a GET, so that Back from the page after
    stopping finds a page, not the browser's "Confirm form resubmission")."""
    ref, view = ledger().open_link(token)
    if not _csrf_ok(ref):
        return _bad_form()
    names = view["can_withdraw"] if request.form.get("all") else request.form.getlist("scope")
    stopped = _already_stopped(token, view, names)
    if stopped is not None:
        return stopped
    chosen = [s["name"] for s in _chosen(view, names) if s["state"] == "given"]
    if not chosen:  # asked again, on a GET of its own (Back to it sends nothing again)
        return redirect(url_for("pages.choices", token=token, missing="1"), code=303)
    return redirect(url_for("pages.check", token=token, scope=chosen), code=303)


@blp.get("/my/<token>/check")
def check(token: str) -> ResponseReturnValue:
    """Check before anything changes: what stopping each choice means (reading only)."""
    ref, view = ledger().open_link(token)
    names = request.args.getlist("scope")
    stopped = _already_stopped(token, view, names)
    if stopped is not None:
        return stopped
    chosen = [s for s in _chosen(view, names) if s["state"] == "given"]
    if not chosen:  # an address made by hand: back to the choices
        return redirect(url_for("pages.choices", token=token), code=303)
    return _page("my/confirm.html", chosen=chosen, token=token,
                 csrf=ledger().links.csrf_token(ref))


@blp.post("/my/<token>/withdraw")
def withdraw(token: str) -> ResponseReturnValue:
    """Stop the confirmed choices, then show what happened (303 to a page that changes nothing)."""
    ref, _ = ledger().open_link(token)
    if not _csrf_ok(ref):
        return _bad_form()
    names = request.form.getlist("scope")
    try:
        done = ledger().withdraw_by_link(token, names)
    except UnknownScope:
        return _bad_form()
    except LedgerError:
        raise  # the kind pages say what the refusal means
    except Exception as error:  # noqa: BLE001 - the store failed: was the choice kept anyway?
        return _withdrawal_unsure(token, names, error)
    return redirect(url_for("pages.done", token=token, stopped=",".join(done["withdrawn"]),
                            already=",".join(done["already"]),
                            nothing="1" if not done["withdrawn"] and not done["already"] else ""),
                    code=303)


def _withdrawal_unsure(token: str, names: list[str], error: Exception) -> ResponseReturnValue:
    """After the store failed while stopping: look again. The stop may have been kept (the
    store committed, then its reply was lost), and a person must never be told "nothing was
    changed" then; nor be told it worked when it did not."""
    log.error("withdrawal through a link: %s", type(error).__name__)
    try:
        _, view = ledger().open_link(token)
    except Exception:  # noqa: BLE001 - still down: say what is known, which is nothing
        return _could_not_tell()
    chosen = _chosen(view, names)
    if chosen and all(s["state"] == "withdrawn" for s in chosen):
        return redirect(url_for("pages.done", token=token, stopped=",".join(names)), code=303)
    if not refused_by_the_store(error):  # the answer was lost: the save may yet show up
        return _could_not_tell()
    return _page("my/gone.html", 503, heading="Something went wrong on our side",
                 message="Your choice was not saved, and nothing was changed. Please try "
                         "again in a few minutes.")


def _could_not_tell() -> Response:
    return _page("my/gone.html", 503, heading="We could not tell if that worked",
                 message="Something went wrong on our side while we were saving your choice. "
                         "Please open your link again in a few minutes to see whether it was "
                         "kept.")


@blp.get("/my/<token>/done")
def done(token: str) -> ResponseReturnValue:
    """What just changed, with the receipt (reading only)."""
    _, view = ledger().open_link(token)
    stopped = request.args.get("stopped", "").split(",")
    already = request.args.get("already", "").split(",")
    nothing = bool(request.args.get("nothing"))
    withdrawn = [s for s in _chosen(view, stopped) if s["state"] == "withdrawn"]
    earlier = [s for s in _chosen(view, already) if s["state"] == "withdrawn"]
    if not (nothing or withdrawn or earlier):  # an old or hand-made address: "Done" with
        return redirect(url_for("pages.choices", token=token), code=303)  # nothing in it
    return _page("my/done.html", token=token, nothing=nothing, withdrawn=withdrawn,
                 already=earlier)


@blp.get("/my/<token>/receipt")
def receipt(token: str) -> ResponseReturnValue:
    """A printable receipt of your choices."""
    data = ledger().consent_receipt(token)
    return _page("my/receipt.html", token=token, receipt=data, agreed=agreed_forms(data))


@blp.get("/my/<token>/receipt.json")
def receipt_json(token: str) -> ResponseReturnValue:
    """The same receipt as a file (ISO/IEC TS 27560 shape)."""
    data = ledger().consent_receipt(token)
    response = Response(json.dumps(data, indent=2), mimetype="application/json")
    response.headers["Content-Disposition"] = (
        f'attachment; filename="consent-receipt-{data["piiPrincipalId"]}.json"')
    return response


@blp.get("/assets/ledger.css")
def stylesheet() -> ResponseReturnValue:
    """The pages' one stylesheet."""
    return blp.send_static_file("ledger.css")
