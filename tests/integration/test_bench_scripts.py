"""The benchmark scripts still run and end with their JSON line (tiny sizes; no timing asserted)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
# bench/api.py drives its load with wrk; in CI (.ci/run installs it) the test must run.
NO_WRK = shutil.which("wrk") is None and os.environ.get("CI", "").lower() != "true"


def _run(script: str, *args: str) -> dict:
    result = subprocess.run([sys.executable, str(ROOT / "bench" / script), *args],
                            capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert result.returncode == 0, result.stderr[-2000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_the_append_benchmark_runs_and_reports_its_ratio():
    figures = _run("append.py", "--commands", "40", "--rounds", "2", "--no-postgres")

    assert figures["bench"] == "append" and figures["sqlite"]["ratio"] > 0


@pytest.mark.skipif(NO_WRK, reason="wrk is not installed (apt-get install wrk)")
def test_the_api_benchmark_runs_without_errors_and_reports_cpu_per_request():
    figures = _run("api.py", "--seconds", "1", "--connections", "4", "--rounds", "1",
                   "--max-rate", "1500", "--no-postgres")

    sqlite = figures["sqlite"]
    assert figures["client"] == "wrk"
    for side in ("bare", "ledger"):
        for kind in ("write", "read"):
            run = sqlite[side][kind]
            assert run["errors"] == 0 and run["requests_per_s"] > 0
            assert run["p99_ms"] >= run["p50_ms"] > 0 and run["server_cpu_ms_per_request"] > 0
    assert sqlite["write_ratio"] > 0 and sqlite["write_cpu_ratio"] > 0


def test_the_payment_cost_benchmark_times_every_layer():
    figures = _run("payment_cost.py", "--payments", "30", "--rounds", "1", "--no-postgres")

    sqlite = figures["sqlite"]
    layers = ("bare_save", "bare_http", "bare_save_encrypted", "ledger_command", "ledger_http",
              "ledger_http_views")
    assert figures["bench"] == "payment_cost" and all(sqlite[k] > 0 for k in layers)
    assert sqlite["ratio_ledger_http_views_to_bare_http"] > 0


def test_the_reports_benchmark_builds_its_study_and_reports_every_step():
    # 10 a person is below what every history holds (rounds of consent, two payments...): the
    # study grows past it, and its synthetic clock must still end in the past, or the report
    # at its midpoint is refused as in the future.
    figures = _run("reports.py", "--participants", "30", "--events-per-person", "10",
                   "--no-postgres")

    sqlite = figures["sqlite"]
    assert figures["bench"] == "reports" and sqlite["events"] > 30 * 40
    assert sqlite["current_report_bytes"] > sqlite["past_report_bytes"] > 0
    assert sqlite["rebuild_ratio_to_read_decode"] > 0 and sqlite["past_report_ratio_to_replay"] > 0
    assert sqlite["rebuild_one_process_ratio_to_read_decode"] > 0
    assert sqlite["rebuild_workers"] == 1  # a log this small is rebuilt in one process


def test_the_verify_benchmark_hashes_its_study_and_verifies_it():
    figures = _run("verify.py", "--participants", "20", "--events-per-person", "50",
                   "--no-postgres")

    sqlite = figures["sqlite"]
    assert figures["bench"] == "verify" and sqlite["events"] >= 20 * 50
    assert sqlite["verify_ok"] is True and sqlite["cli_verify_exit"] == 0
    assert sqlite["cli_verify_views_exit"] == 0 and sqlite["views_ratio_to_cli_verify"] > 0
    assert sqlite["verify_checkpoints"] >= 1
    for key in ("first_hashing_s", "bare_read_hash_s", "bare_read_hash_rss_mb", "verify_s",
                "verify_rss_mb", "verify_ratio_to_bare", "cli_verify_s", "cli_verify_rss_mb"):
        assert key in sqlite


def test_the_load_benchmark_runs_its_mix_without_errors_and_checks_every_write():
    figures = _run("load.py", "--seconds", "3", "--workers", "1", "--connections", "4",
                   "--participants", "20", "--no-postgres")

    run = figures["runs"][0]
    assert figures["bench"] == "load" and run["store"] == "sqlite" and run["workers"] == 1
    assert figures["errors"] == 0 and figures["payments_lost"] == 0
    assert figures["consent_states_mismatched"] == 0
    assert set(run["ledger"]["by_kind"]) >= {"read", "list", "grant"}
    assert run["ledger"]["acknowledged"]["consent_states_checked"] >= 20
    assert len(run["ledger"]["requests_per_s_by_sixth"]) == 6
    assert run["ledger"]["memory"]["rss_end_mib"] > 0 and run["throughput_ratio"] > 0
