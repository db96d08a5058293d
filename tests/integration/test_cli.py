"""The installed ``ledger`` command, run as a real subprocess on each store."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from ledger.application import Ledger
from tests.conftest import wait_for_postgres_backends
from tests.views import replayed_rows, view_rows

LEDGER = str(Path(sys.executable).parent / "ledger")  # the console script pip installed


def _run(store_env, *args):
    env = {**os.environ, **store_env}
    env.pop("LEDGER_DATABASE_URL", None)
    env.update(store_env)
    return subprocess.run([LEDGER, *args], env=env, capture_output=True, text=True, timeout=120)


def test_init_is_safe_to_run_twice(store_env):
    first = _run(store_env, "init")
    lg = Ledger(store_env)
    events_after_first = lg.recorder.max_notification_id()
    lg.close()

    second = _run(store_env, "init")
    lg = Ledger(store_env)
    events_after_second = lg.recorder.max_notification_id()
    study = lg.study()
    lg.close()

    assert (first.returncode, second.returncode) == (0, 0), first.stderr + second.stderr
    assert "Created" in first.stderr and "Already" in second.stderr
    assert events_after_first == events_after_second
    assert study["name"].startswith("Racism within co-production")
    assert [a["rate"] for a in study["activities"]] == ["25.00", "25.00"]


def test_demo_loads_twelve_fictional_people_in_varied_states_once(store_env):
    assert _run(store_env, "demo").returncode == 0
    again = _run(store_env, "demo")

    lg = Ledger(store_env)
    people = [lg.participant(pid) for pid in lg.participant_ids()]
    lg.close()

    assert again.returncode == 0 and "already" in again.stderr
    assert len(people) == 12
    states = Counter(c["state"] for p in people for c in p["consents"].values())
    assert {"given", "withdrawn", "requested", "refused"} <= set(states)
    methods = {pay["method"] for p in people for pay in p["payments"] if pay["status"] == "paid"}
    assert len(methods) >= 5
    assert any(a["declined"] for p in people for a in p["arrangements"].values())
    outcomes = [n["outcome"] for p in people for n in p["access_needs"]]
    assert "met" in outcomes and None in outcomes and "partly_met" in outcomes
    partly_withdrawn = [p for p in people
                        if {"given", "withdrawn"} <= {c["state"] for c in p["consents"].values()}]
    assert partly_withdrawn
    assert all("example" in p["email"] for p in people)


@pytest.mark.parametrize(("method", "nth", "whole"),
                         [("record_payment", 3, 2), ("record_expense", 1, 11)],
                         ids=["third person", "last person"])
def test_a_demo_stopped_midway_is_reported_not_called_loaded(store_env, method, nth, whole):
    """Ctrl-C (here at a given call) leaves a part-made demo, even when all twelve people are
    registered: running the demo again says so, in one line, and adds nothing."""
    from ledger.demo import load_demo

    lg = Ledger(store_env)
    lg.init_study(by="t")
    real, calls = getattr(lg, method), []

    def interrupted(*args, **kwargs):
        calls.append(1)
        if len(calls) == nth:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    setattr(lg, method, interrupted)
    with pytest.raises(KeyboardInterrupt):
        load_demo(lg)
    added = len(lg.participant_ids())
    events = lg.recorder.max_notification_id()
    lg.close()

    again = _run(store_env, "demo")

    assert added == whole + 1  # the person whose story stopped is registered
    assert again.returncode == 1 and "Traceback" not in again.stderr
    assert f"{whole} of its 12 fictional participants were added whole" in again.stderr
    if "LEDGER_DATABASE_URL" in store_env:  # the keys are in the data directory: keep them
        assert "drop the PostgreSQL schema" in again.stderr
        assert "keep LEDGER_DATA_DIR" in again.stderr
    else:
        assert "remove the data directory" in again.stderr
    lg = Ledger(store_env)
    assert lg.recorder.max_notification_id() == events  # nothing added
    lg.close()


def test_a_whole_demo_loaded_before_its_end_was_recorded_counts_as_loaded(store_env):
    """An earlier version recorded only the start of the load: whole once all twelve are
    there, and interrupted (one line, exit 1) with fewer."""
    from ledger.demo import load_demo

    lg = Ledger(store_env)
    lg.init_study(by="t")
    assert load_demo(lg)
    lg.sql.execute("DELETE FROM {t}ledger_meta WHERE name <> %s AND name LIKE %s",
                   ("demo_loaded", "demo%"))  # as that version left it
    lg.close()

    again = _run(store_env, "demo")

    assert again.returncode == 0 and "already" in again.stderr
    lg = Ledger(store_env)
    assert len(lg.participant_ids()) == 12 and lg.claimed("demo_complete")
    lg.close()

    fewer = {**store_env, "LEDGER_DATA_DIR": store_env["LEDGER_DATA_DIR"] + "-fewer"}
    if "LEDGER_DATABASE_URL" not in store_env:
        lg = Ledger(fewer)
        lg.init_study(by="t")
        lg.claim_once("demo_loaded")
        lg.register_participant("Amara Example-Okafor", by="demo")
        lg.close()
        stopped = _run(fewer, "demo")
        assert stopped.returncode == 1
        assert "1 of its 12 fictional participants are registered" in stopped.stderr


def test_the_demo_is_refused_on_a_ledger_that_holds_real_people(store_env):
    """A study's ledger got the twelve fictional people beside its real ones (13 in the
    report), and an append-only log cannot forget them."""
    lg = Ledger(store_env)
    lg.init_study(by="t")
    lg.register_participant("A Real Person", by="t")
    lg.close()

    refused = _run(store_env, "demo")

    lg = Ledger(store_env)
    try:
        people = len(lg.participant_ids())
    finally:
        lg.close()
    assert refused.returncode == 1 and "already holds 1 participant(s)" in refused.stderr
    assert "Traceback" not in refused.stderr and people == 1


def test_commands_print_nothing_personal(store_env):
    result = _run(store_env, "demo")

    assert "Example-" not in result.stdout + result.stderr


def test_the_report_command_gives_the_same_bytes_as_the_api(store_env, tmp_path):
    from datetime import UTC, datetime

    from ledger.api import create_app
    from ledger.audit.checkpoints import check_signature, load_public_key
    from ledger.reports.render import EXTENSIONS

    _run(store_env, "init")
    _run(store_env, "demo")
    moment = datetime.now(UTC).isoformat()
    ledger = Ledger(store_env)
    auditor = ledger.tokens.create("auditor", "cli test")[1]
    client = create_app({"LEDGER": ledger}).test_client()
    try:
        for fmt in ("json", "csv", "html", "pdf"):  # (WeasyPrint's PDF is deterministic too)
            out = tmp_path / f"report.{EXTENSIONS[fmt]}"
            done = _run(store_env, "report", "--as-of", moment, "--format", fmt, "-o", str(out))
            api = client.get("/api/v1/reports/compliance", query_string={
                "as_of": moment, "format": fmt}, headers={"Authorization": f"Bearer {auditor}"})
            assert done.returncode == 0, done.stderr
            assert api.status_code == 200 and out.read_bytes() == api.data
            assert ("a zip of one CSV file per section" in done.stderr) == (fmt == "csv")
            # Ed25519 is deterministic: the same bytes, the same signature, in the .sig file
            signature = (tmp_path / f"report.{EXTENSIONS[fmt]}.sig").read_text().strip()
            assert signature == api.headers["Ledger-Signature"]
            for written in (out, tmp_path / f"report.{EXTENSIONS[fmt]}.sig"):
                assert written.stat().st_mode & 0o777 == 0o600, written.name  # as backups
            assert check_signature(load_public_key(ledger.merkle.public_key), out.read_bytes(),
                                   signature)
        one = tmp_path / "summary.csv"
        done = _run(store_env, "report", "--as-of", moment, "--format", "csv", "--section",
                    "summary", "-o", str(one))
        api = client.get("/api/v1/reports/compliance", query_string={
            "as_of": moment, "format": "csv", "section": "summary"},
            headers={"Authorization": f"Bearer {auditor}"})
        assert done.returncode == 0, done.stderr
        assert api.status_code == 200 and one.read_bytes() == api.data
        assert one.read_text().startswith("name,value\n")
        assert (tmp_path / "summary.csv.sig").read_text().strip() == api.headers[
            "Ledger-Signature"]
        not_csv = _run(store_env, "report", "--section", "summary")
        bad = _run(store_env, "report", "--as-of", "not-a-date")
    finally:
        ledger.close()
    assert bad.returncode == 2 and "--as-of" in bad.stderr
    assert not_csv.returncode == 2 and "--section" in not_csv.stderr


def test_the_current_report_from_the_command_line_with_external_views_needs_no_follower(
        store_env, tmp_path):
    """Views kept by `ledger projections run`, which is not running: the command brings them
    up to date itself (before, it waited 5 s and said to try again, which could not help)."""
    external = {**store_env, "LEDGER_PROJECTIONS": "external"}
    _run(external, "init")
    ledger = Ledger(external)
    try:
        pid = ledger.register_participant("Report External", by="t")["id"]
        ledger.record_payment(pid, "conversation", "25.00", "cash", by="t")
        end = ledger.recorder.max_notification_id()
    finally:
        ledger.close()
    out = tmp_path / "report.json"

    done = _run(external, "report", "-o", str(out))

    assert done.returncode == 0, done.stderr
    report = json.loads(out.read_text())
    assert report["log"]["position"] == end and report["payments"]["paid"] == 1


def _children(pid: int) -> list[int]:
    return [int(c) for task in Path(f"/proc/{pid}/task").iterdir()
            for c in (task / "children").read_text().split()]


def _running(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


@pytest.mark.parametrize(("workers", "before"), [("1", "empty"), ("2", "empty"),
                                               ("1", "whole"), ("2", "whole")])
def test_a_rebuild_killed_midway_leaves_views_that_catch_up_exactly(store_env, workers, before):
    """Killed, a rebuild leaves the views at a page boundary (equal to a replay to there), also
    when worker processes share it (they stop once it is gone). The next ledger to open puts
    back the views it set aside if they were further on ("whole"), else keeps what it built
    ("empty": the views had never been filled); either way they catch up exactly."""
    import signal
    import time

    _run(store_env, "init")
    writer = Ledger({**store_env, "LEDGER_PROJECTIONS": "external"})
    for i in range(300):
        pid = writer.register_participant(f"Kill Test {i}", by="t")["id"]
        writer.grant_consent(pid, "take_part", "1.0", "online", by="t")
        writer.record_payment(pid, "conversation", "25.00", "cash", by="t")
    last = writer.recorder.max_notification_id()
    if before == "whole":
        writer.projector.catch_up()
    before_rows = view_rows(writer)
    env = {**os.environ, **store_env, "PGAPPNAME": f"killed rebuild {os.getpid()}"}
    proc = subprocess.Popen([LEDGER, "projections", "rebuild", "--page-size", "100",
                             "--workers", workers], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    views = writer.projector.views
    deadline = time.monotonic() + 60
    while not (views.prior_position() is not None and 600 <= views.position() < last) \
            and time.monotonic() < deadline:
        time.sleep(0.005)
    helpers = _children(proc.pid)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    if "LEDGER_DATABASE_URL" in store_env:
        wait_for_postgres_backends(store_env, env["PGAPPNAME"])  # (its COMMIT may still land)
    stopped_at = views.position()
    while any(map(_running, helpers)) and time.monotonic() < deadline:
        time.sleep(0.05)

    replayed = replayed_rows(writer, stopped_at)
    at_kill = view_rows(writer)
    copy_kept = writer.sql.all_exist("ledger_view_prior_participants")
    reader = Ledger({**store_env, "LEDGER_PROJECTIONS": "external"})  # puts back, or keeps
    opened_at, reopened = reader.projector.views.position(), view_rows(reader)
    reader.projector.catch_up()
    caught_up = view_rows(reader)
    copy_left = reader.sql.all_exist("ledger_view_prior_participants")
    reader.projector.rebuild()
    rebuilt = view_rows(reader)
    reader.close()
    writer.close()

    assert 0 < stopped_at < last  # really killed midway
    assert len(helpers) == (0 if workers == "1" else 3)  # 2 workers, and spawn's tracker
    assert not any(map(_running, helpers))
    assert at_kill == replayed
    assert copy_kept and not copy_left  # the set-aside copy is used or dropped when one opens
    assert caught_up == rebuilt
    if before == "whole":  # put back as they were (nothing was written since)
        assert opened_at == last and reopened == before_rows
    else:  # what the killed rebuild built is kept
        assert opened_at == stopped_at and reopened == at_kill


def test_form_versions_deadlines_and_rates_are_set_from_the_command_line(store_env, tmp_path):
    """The study's settings the design calls configurable, without writing Python: a new
    consent form version, a scope's withdrawal deadline, an activity's rate. A refused
    setting says why and writes nothing."""
    import hashlib

    _run(store_env, "init")
    form = tmp_path / "form-1.1.txt"
    form.write_text("Consent form 1.1\n\nYou can stop at any time, and keep your payment.\n")
    not_utf8 = tmp_path / "form.bin"
    not_utf8.write_bytes(b"\xff\xfe")

    done = [_run(store_env, "study", *args) for args in [
        ("form", "1.1", str(form)), ("deadline", "analyse", "2027-03-01T00:00:00+00:00"),
        ("deadline", "publish", "2027-06-01T12:00:00+01:00"), ("deadline", "publish", "none"),
        ("rate", "workshop", "30.00")]]
    ledger = Ledger(store_env)
    size = ledger.recorder.max_notification_id()
    ledger.close()
    refused = [_run(store_env, "study", *args) for args in [
        ("form", "1.1", str(form)), ("form", "2.0", str(not_utf8)),
        ("deadline", "analyse", "2027-03-01"), ("deadline", "analyse", "soon"),
        ("deadline", "nosuch", "none"), ("rate", "workshop", "30.001"),
        ("rate", "workshop", "GBP 25"), ("rate", "lunch", "5.00"),
        # a version is shown on one line, for ever (a review registered "1", a line break, "2")
        ("form", "1\n2", str(form)), ("form", "1\t2", str(form)), ("form", "2\u200b0", str(form))]]

    assert [r.returncode for r in done] == [0] * 5, [r.stderr for r in done]
    assert [r.returncode for r in refused] == [1, 2, 1, 2, 1, 1, 1, 1, 1, 1, 1], [
        r.stderr for r in refused]
    assert "version must be one line of visible text" in refused[-1].stderr
    assert all(r.stderr.strip().splitlines()[-1].startswith("Error: ")
               and "Traceback" not in r.stderr for r in refused), [r.stderr for r in refused]
    ledger = Ledger(store_env)
    try:
        study = ledger.study()
        assert ledger.recorder.max_notification_id() == size
    finally:
        ledger.close()
    current = [f for f in study["consent_forms"] if f["current"]]
    assert [(f["version"], f["sha256"]) for f in current] == [
        ("1.1", hashlib.sha256(form.read_bytes()).hexdigest())]
    scopes = {s["name"]: s["withdrawal_deadline"] for s in study["scopes"]}
    assert str(scopes["analyse"]).startswith("2027-03-01") and scopes["publish"] is None
    assert {a["name"]: a["rate"] for a in study["activities"]} == {
        "conversation": "25.00", "workshop": "30.00"}


def test_the_finance_retention_is_set_from_the_command_line(store_env):
    _run(store_env, "init")

    done = _run(store_env, "study", "finance-retention", "2190")
    bad = _run(store_env, "study", "finance-retention", "-5")

    assert done.returncode == 0, done.stderr
    assert bad.returncode == 2 and "-5 is not in the range 0<=x<=7300" in bad.stderr
    ledger = Ledger(store_env)
    try:
        assert ledger.study()["finance_retention_days"] == 2190
    finally:
        ledger.close()
