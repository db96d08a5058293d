"""Compliance reports: what was true at any moment, from the views (now) or a replay (the past)."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from ..domain.errors import InvalidInput
from ..projections.projector import Replay
from ..projections.rows import summary_row
from ..projections.store import Filter
from ..store import decoded
from .build import compliance_report

# A command takes its time from the clock, then commits within the store's lock timeout (30 s),
# so an event recorded "at" or before a moment is never more than this far down the log past
# the first event recorded after it: a replay can stop reading there.
SKEW = timedelta(minutes=5)
PAGE = 1000
DEFAULT_OUTSTANDING_DAYS = 30


def replay_until(ledger: Any, as_of: datetime) -> Replay:
    """Every aggregate as it stood at ``as_of``: the log applied in order, leaving out each
    event recorded after that moment (and everything after it on the same aggregate)."""
    replay = Replay(ledger.mapper, ledger.events, keep=None)
    mapper, recorder = ledger.mapper, ledger.recorder
    later: set[Any] = set()
    start = 1
    while True:
        page = ledger.sql.read_page(recorder, start, PAGE)
        for n in page:
            event = decoded(mapper, n)
            at = getattr(event, "at", None) or event.timestamp
            if at > as_of or n.originator_id in later:
                if at > as_of + SKEW:
                    return replay
                later.add(n.originator_id)
                continue
            replay.apply(n, event)
        if len(page) < PAGE:
            return replay
        start = page[-1].id + 1


def report_filters(study: Any) -> dict[str, Filter]:
    """SQL conditions that keep, from the views' log-like tables, every row the report's own
    rules could pick (a superset: the report applies its exact rules to what is read). Without
    them the current report would read every grant and every use ever recorded."""
    registered = []
    params: list[Any] = []
    for version, form in study.forms.items():
        # A grant on this version, with its text, recorded after the form was registered, is in
        # order. Times are compared as ISO text, so the bound is a second late: a grant in that
        # second is read and left to the exact rule.
        registered.append("(form_version = %s AND (form_sha256 IS NULL OR form_sha256 = %s) "
                          "AND at >= %s)")
        params += [version, form.sha256, (form.registered_at + timedelta(seconds=1)).isoformat()]
    grants = (f"(CASE WHEN {' OR '.join(registered)} THEN 0 ELSE 1 END) = 1", tuple(params)) \
        if registered else ("1 = 1", ())
    return {
        "grants": grants,
        "uses": ("consent_state IS NULL OR consent_state <> %s OR (attribution = %s AND "
                 "(consented_attribution IS NULL OR consented_attribution <> %s))",
                 ("given", "named", "named")),
        "withdrawals": ("past_deadline = %s", (1,)),
    }


def check_as_of(as_of: datetime, *, now: datetime, study_created: datetime) -> None:
    """A moment with an offset, not in the future, not before the study existed."""
    if as_of.tzinfo is None or as_of.utcoffset() is None:
        raise InvalidInput("as_of must include a UTC offset, e.g. 2026-03-01T17:00:00+00:00",
                           field="as_of")
    if as_of > now:
        raise InvalidInput("as_of is in the future", field="as_of")
    if as_of < study_created:
        raise InvalidInput("as_of is before the study was set up", field="as_of")


def report_data(ledger: Any, as_of: datetime | None = None,
                outstanding_days: int = DEFAULT_OUTSTANDING_DAYS) -> dict[str, Any]:
    """The compliance report at ``as_of`` (default: now, read from the views)."""
    if not 0 <= outstanding_days <= 3650:
        raise InvalidInput("outstanding_days must be from 0 to 3650", field="outstanding_days")
    now = ledger.clock()
    study = ledger._study()
    if as_of is not None:
        check_as_of(as_of, now=now, study_created=study.created_at)
        replay = replay_until(ledger, as_of)
        assert replay.study is not None
        people = [summary_row(p, replay.seq[p.id]) for p in replay.participants()]
        return with_checkpoint(ledger, compliance_report(
            rows=replay.all_rows(), people=people, study=replay.study, as_of=as_of,
            log={"events": replay.count, "position": replay.position},
            outstanding_days=outstanding_days))
    # Everything saved so far (external views: waited for; before, taken as they stood, a
    # current report left out what they had not reached yet).
    ledger.views_at_least(ledger.recorder.max_notification_id())
    position, count, rows, people = ledger.projector.views.snapshot(
        ledger.recorder.events_table_name, report_filters(study))
    # The moment the report is "as of" is read after the views: every event they hold was
    # stamped before it (read before them, a write landing in between was in a report dated
    # earlier than it, which a past report for that moment then disagreed with).
    now = ledger.clock()
    return with_checkpoint(ledger, compliance_report(
        rows=rows, people=people, study=study, as_of=now,
        log={"events": count, "position": position}, outstanding_days=outstanding_days))


def with_checkpoint(ledger: Any, report: dict[str, Any]) -> dict[str, Any]:
    """The report with the signed checkpoint it was built on (signed now: it covers every event
    the report read, ``size`` >= ``log.position``) and the last full verification of the log."""
    cp = ledger.merkle.checkpoint()
    report["checkpoint"] = {**{k: cp[k] for k in ("size", "root", "time", "signature")},
                            "verification": ledger.merkle.last_verification()}
    return report


def sign_report(ledger: Any, body: bytes) -> str:
    """The signature (Ed25519, base64) over a rendered report's exact bytes, with the key that
    signs the checkpoints: anyone with the exported public key can check a copy later."""
    return str(ledger.merkle.sign(body))
