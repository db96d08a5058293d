"""Read side at scale: a study of 10,000 participants and about 1,000,000 events, then the time
and peak memory of rebuilding every view, the current compliance report and a report as of the
midpoint, each next to the bare cost of reading and decoding (and replaying) the same events with
the library, measured in the same run, on SQLite and PostgreSQL.

    python bench/reports.py [--participants 10000] [--events-per-person 100]
                            [--postgres URL | --no-postgres]

The study is written through the domain model (the same events the API would record, with
registration details sealed under each person's own key), ten participants per save so that a
million events take minutes, not hours. Each person's history is spread over 120 days of a
synthetic clock: registration, four rounds of consent on successive form versions, personal
links issued and revoked, access needs and their outcomes, two withdrawals and their follow-up,
two payments (one a voucher for a supporter), and uses of their story until the person has
``--events-per-person`` events.

The rebuild is timed as ``ledger projections rebuild`` runs it (one worker process per core, up
to four; the peak RSS of the rebuilding process and of the largest worker) over views never
filled, then in one process, then as ``ledger projections rebuild`` again over the whole views,
which it first copies aside (to put them back if it cannot finish).
Every figure is taken in a fresh child process, so each peak RSS belongs to that step alone;
``idle_rss_mb`` is the same child before it starts. The bare figures use the library only:
``recorder.select_notifications`` in pages and ``mapper.to_domain_event`` on each (read and
decode), plus ``event.mutate`` into a dict of aggregates (replay). Ends with one JSON line.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import random
import resource
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from api import drop_schema  # noqa: E402 - bench/ is on the path: these run as scripts

from ledger.application import Ledger  # noqa: E402
from ledger.domain.participant import Participant, PersonalDetails  # noqa: E402

PAGE = 1000
PER_SAVE = 10
SPAN = timedelta(days=120)
FORMS = ["1.0", "1.1", "1.2", "2.0"]


class Clock:
    """A synthetic clock: each call returns the next moment (events ``step`` apart)."""

    def __init__(self, start: datetime, step: timedelta) -> None:
        self.now, self.step = start, step

    def __call__(self) -> datetime:
        self.now += self.step
        return self.now


def _person(ledger: Ledger, clock: Clock, rng: random.Random, n: int, events: int
            ) -> tuple[Participant, list[Any]]:
    """One participant's whole history, built with the domain's own commands."""
    study = ledger._study()
    by = "bench"
    details = PersonalDetails.check(f"Bench Person {n}", f"bench{n}@example.invalid", None,
                                    ["Bench community"], None)
    pid = uuid.uuid4()
    p = Participant.register(id=pid, study_id=study.id, reference=f"ST-B{n:07d}",
                             details=details, at=clock(), by=by)
    payments: list[Any] = []
    scopes = list(study.scopes.values())
    for round_, version in enumerate(FORMS):
        form = study.form(version)
        for scope in scopes:
            attribution = "anonymous" if scope.takes_attribution else None
            p.grant_consent(scope, form, "online", attribution, at=clock(), by=by)
        at = clock()
        p.issue_withdrawal_link(uuid.uuid4(), at + timedelta(days=30), at=at, by=by)
        if round_:
            p.revoke_withdrawal_link(at=clock(), by=by)
        if round_ < 3:
            need = uuid.uuid4()
            p.request_access_need(need, "captions", "Live captions on the call", at=clock(), by=by)
            p.record_access_outcome(need, rng.choice(["met", "met", "partly_met"]), None,
                                    at=clock(), by=by)
    for scope in rng.sample(scopes[2:], 2):
        for obligation in p.withdraw_consent(scope, "phone", None, at=clock(), by=by):
            p.discharge_obligation(obligation.id, None, at=clock(), by=by)
    for activity, method in (("conversation", "bank_transfer"), ("workshop", "voucher")):
        a = study.activity(activity)
        p.arrange_payment(a, method, "self", True, at=clock(), by=by)
        payments.append(p.pay(a, a.rate_pence, "GBP", method, f"B-{n}", None, at=clock(), by=by))
    given = [s for s in scopes if p.consent(s.name).state == "given"]
    while len(p.pending_events) + sum(len(x.pending_events) for x in payments) < events:
        p.record_use(rng.choice(given), "analysis session", at=clock(), by=by)
    return p, payments


def generate(env: dict[str, str], participants: int, events: int) -> dict[str, Any]:
    """Write the study; returns its size and how long writing it took."""
    clock = Clock(datetime.now(UTC) - SPAN - timedelta(hours=1), timedelta(0))
    ledger = Ledger(env, clock=clock)
    ledger.init_study(by="bench")
    for version in FORMS[1:]:
        ledger.register_form(version, f"Consent form, version {version}.", by="bench")
    # A person's history has a floor (every round of consent, the two payments...) that a small
    # --events-per-person does not lower: space the events by what will really be written, with
    # a tenth to spare (withdrawals vary), so the last is still in the past.
    p, payments = _person(ledger, Clock(clock.now, timedelta(seconds=1)), random.Random(0), -1, 1)
    floor = len(p.pending_events) + sum(len(x.pending_events) for x in payments)
    clock.step = SPAN / (participants * max(events, floor) * 1.1 + 100)
    rng = random.Random(7)
    start = time.perf_counter()
    n = 0
    while n < participants:
        batch: list[Any] = []
        for _ in range(min(PER_SAVE, participants - n)):
            p, payments = _person(ledger, clock, rng, n, events)
            ledger.keys.create(p.id)
            batch += [p, *payments]
            n += 1
        ledger.save(*batch)
        if n % 1000 == 0:
            print(f"  {n} participants written", file=sys.stderr, flush=True)
    seconds = time.perf_counter() - start
    last = ledger.recorder.max_notification_id() or 0
    ledger.close()
    return {"events": last, "participants": participants, "write_s": round(seconds, 1)}


# -- the steps, each in a fresh child process -------------------------------------------------

def _open(env: dict[str, str]) -> Ledger:
    return Ledger({**env, "LEDGER_PROJECTIONS": "external"})  # opening must not project


def _bare(ledger: Ledger, until: int | None, replay: bool) -> int:
    """Read and decode every event up to ``until`` (and apply each to its aggregate)."""
    aggregates: dict[Any, Any] = {}
    start, count = 1, 0
    while True:
        page = ledger.recorder.select_notifications(start=start, limit=PAGE, stop=until)
        for n in page:
            event = ledger.mapper.to_domain_event(n)
            if replay:
                aggregates[n.originator_id] = event.mutate(aggregates.get(n.originator_id))
            count += 1
        if len(page) < PAGE:
            return count
        start = page[-1].id + 1


def _step(ledger: Ledger, name: str, arg: Any) -> Any:
    from ledger.reports import report_data
    from ledger.reports.render import render

    if name == "idle":
        return None
    if name == "read_decode":
        return _bare(ledger, arg, replay=False)
    if name == "replay":
        return _bare(ledger, arg, replay=True)
    if name == "rebuild":  # as `ledger projections rebuild` does: one worker per core, up to 4
        return ledger.projector.rebuild()
    if name == "rebuild_full_views":  # the same over whole views: it first copies them aside
        return ledger.projector.rebuild()
    if name == "rebuild_one_process":
        return ledger.projector.rebuild(workers=1)
    if name == "midpoint":
        n = ledger.recorder.select_notifications(start=arg, limit=1)[0]
        return ledger.mapper.to_domain_event(n).at.isoformat()
    if name == "leaves":  # what the follower of a running ledger keeps up to date
        return ledger.merkle.catch_up()[0]
    if name == "current_report":
        return len(render(report_data(ledger), "json"))
    if name == "past_report":
        return len(render(report_data(ledger, datetime.fromisoformat(arg)), "json"))
    raise ValueError(name)


StepFn = Callable[[Ledger, str, Any], Any]


def _child(name: str, env: dict[str, str], arg: Any, out: Any, run_step: StepFn) -> None:
    ledger = _open(env)  # not timed: every step starts from an open ledger
    start = time.perf_counter()
    result = run_step(ledger, name, arg)
    seconds = time.perf_counter() - start
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    # the largest of the step's own child processes (a rebuild's workers), 0 if none
    children_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    ledger.close()
    out.send((seconds, rss_mb, result, children_mb))


def step(name: str, env: dict[str, str], arg: Any = None, run_step: StepFn = _step
         ) -> tuple[float, float, Any]:
    """(seconds, peak RSS in MiB, result) of one step (``run_step``, a module-level function)
    in a fresh process."""
    return step_and_children(name, env, arg, run_step)[:3]  # type: ignore[return-value]


def step_and_children(name: str, env: dict[str, str], arg: Any = None,
                      run_step: StepFn = _step) -> tuple[float, float, Any, float]:
    """``step``, and the peak RSS in MiB of the largest process the step started (0 if none)."""
    ctx = multiprocessing.get_context("spawn")
    parent, child = ctx.Pipe()
    process = ctx.Process(target=_child, args=(name, env, arg, child, run_step))
    process.start()
    child.close()  # the child's end is the child's: if it dies, recv() ends instead of waiting
    try:
        result = parent.recv()
    except EOFError:
        result = None
    process.join()
    if process.exitcode or result is None:
        raise RuntimeError(f"step {name} failed ({process.exitcode})")
    return result  # type: ignore[no-any-return]


def measure(env: dict[str, str], participants: int, events: int) -> dict[str, Any]:
    size = generate(env, participants, events)
    print(f"  written: {size}", file=sys.stderr, flush=True)
    mid = size["events"] // 2
    _, idle_rss, _ = step("idle", env)
    read_s, read_rss, decoded = step("read_decode", env)
    replay_s, replay_rss, _ = step("replay", env)
    rebuild_s, rebuild_rss, position, worker_rss = step_and_children("rebuild", env)
    single_s, single_rss, single_position = step("rebuild_one_process", env)
    again_s, _, again_position, _ = step_and_children("rebuild_full_views", env)
    assert decoded == size["events"] == position == single_position == again_position, \
        (decoded, position)
    _, _, as_of = step("midpoint", env, mid)
    mid_replay_s, mid_replay_rss, _ = step("replay", env, mid)
    # The Merkle leaves are hashed as the log grows, by the same follower as the views: not
    # timed here (the study was written in bulk), or the first report would include them.
    _, _, leaves = step("leaves", env)
    assert leaves == size["events"], leaves
    report_s, report_rss, report_bytes = step("current_report", env)
    past_s, past_rss, past_bytes = step("past_report", env, as_of)
    return {
        **size,
        "idle_rss_mb": round(idle_rss),
        "bare_read_decode_s": round(read_s, 2), "bare_read_decode_rss_mb": round(read_rss),
        "bare_replay_s": round(replay_s, 2), "bare_replay_rss_mb": round(replay_rss),
        "rebuild_s": round(rebuild_s, 2), "rebuild_rss_mb": round(rebuild_rss),
        "rebuild_ratio_to_read_decode": round(rebuild_s / read_s, 2),
        "rebuild_workers": rebuild_workers(size["events"]),
        "rebuild_worker_rss_mb": round(worker_rss),
        "rebuild_one_process_s": round(single_s, 2),
        "rebuild_one_process_rss_mb": round(single_rss),
        "rebuild_one_process_ratio_to_read_decode": round(single_s / read_s, 2),
        "rebuild_over_full_views_s": round(again_s, 2),
        "rebuild_over_full_views_ratio_to_read_decode": round(again_s / read_s, 2),
        "current_report_s": round(report_s, 2), "current_report_rss_mb": round(report_rss),
        "current_report_bytes": report_bytes,
        "midpoint_events": mid,
        "bare_midpoint_replay_s": round(mid_replay_s, 2),
        "bare_midpoint_replay_rss_mb": round(mid_replay_rss),
        "past_report_s": round(past_s, 2), "past_report_rss_mb": round(past_rss),
        "past_report_bytes": past_bytes,
        "past_report_ratio_to_replay": round(past_s / mid_replay_s, 2),
    }


def rebuild_workers(events: int) -> int:
    """The worker processes a default rebuild of this log starts on this machine."""
    from ledger.projections.projector import MAX_WORKERS, PARALLEL_FROM

    if events < PARALLEL_FROM:
        return 1
    return 1 << (min(os.cpu_count() or 1, MAX_WORKERS).bit_length() - 1)


def run(bench: str, doc: str | None, measure_one: Any, line: Any) -> None:
    """The command line both study benchmarks share: build the study on each store (a fresh
    temporary directory; on PostgreSQL a fresh schema, dropped afterwards), ``measure_one(env,
    participants, events_per_person)`` it, print ``line(figures)`` per store to stderr, and end
    with one JSON line."""
    parser = argparse.ArgumentParser(description=doc,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--participants", type=int, default=10_000)
    parser.add_argument("--events-per-person", type=int, default=100)
    parser.add_argument("--postgres", default="postgresql://postgres@127.0.0.1:5432/test")
    parser.add_argument("--no-postgres", action="store_true")
    args = parser.parse_args()
    results: dict[str, Any] = {"participants": args.participants,
                               "events_per_person": args.events_per_person}
    stores = ["sqlite"] + ([] if args.no_postgres else ["postgres"])
    for store in stores:
        print(f"== {store}", file=sys.stderr, flush=True)
        with tempfile.TemporaryDirectory() as d:
            env = {"LEDGER_DATA_DIR": d, "LEDGER_PROJECTIONS": "external"}
            schema = f"bench_{bench}_{uuid.uuid4().hex[:8]}"
            if store == "postgres":
                env["LEDGER_DATABASE_URL"] = f"{args.postgres}?schema={schema}"
            try:
                results[store] = measure_one(env, args.participants, args.events_per_person)
            finally:
                if store == "postgres":
                    drop_schema(schema, args.postgres)
        print(f"{store:9} {line(results[store])}", file=sys.stderr, flush=True)
    print(json.dumps({"bench": bench, **results}))


def main() -> None:
    run("reports", __doc__, measure, lambda r: (
        f"{r['events']} events: read+decode {r['bare_read_decode_s']} s, rebuild "
        f"{r['rebuild_s']} s ({r['rebuild_ratio_to_read_decode']}x, {r['rebuild_workers']} "
        f"workers, {r['rebuild_rss_mb']} MiB + {r['rebuild_worker_rss_mb']} MiB each; one "
        f"process {r['rebuild_one_process_s']} s, "
        f"{r['rebuild_one_process_ratio_to_read_decode']}x; over whole views "
        f"{r['rebuild_over_full_views_s']} s, "
        f"{r['rebuild_over_full_views_ratio_to_read_decode']}x), current report "
        f"{r['current_report_s']} s, past "
        f"report {r['past_report_s']} s ({r['past_report_ratio_to_replay']}x the bare "
        f"replay of {r['bare_midpoint_replay_s']} s)"))


if __name__ == "__main__":
    main()
