"""The installed ``ledger`` command, run as a real subprocess on each store."""

from __future__ import annotations

import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

from ledger.application import Ledger

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


def test_commands_print_nothing_personal(store_env):
    result = _run(store_env, "demo")

    assert "Example-" not in result.stdout + result.stderr
