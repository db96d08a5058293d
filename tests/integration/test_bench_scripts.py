"""The benchmark scripts still run and end with their JSON line (tiny sizes; no timing asserted)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _run(script: str, *args: str) -> dict:
    result = subprocess.run([sys.executable, str(ROOT / "bench" / script), *args],
                            capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert result.returncode == 0, result.stderr[-2000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_the_append_benchmark_runs_and_reports_its_ratio():
    figures = _run("append.py", "--commands", "40", "--rounds", "2", "--no-postgres")

    assert figures["bench"] == "append" and figures["sqlite"]["ratio"] > 0


def test_the_api_benchmark_runs_without_errors():
    figures = _run("api.py", "--requests", "40", "--connections", "4", "--rounds", "1",
                   "--no-postgres")

    assert figures["sqlite"]["ledger"]["write"]["errors"] == 0
    assert figures["sqlite"]["ledger"]["read"]["errors"] == 0


def test_the_reports_benchmark_builds_its_study_and_reports_every_step():
    figures = _run("reports.py", "--participants", "30", "--events-per-person", "60",
                   "--no-postgres")

    sqlite = figures["sqlite"]
    assert figures["bench"] == "reports" and sqlite["events"] >= 30 * 60
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
