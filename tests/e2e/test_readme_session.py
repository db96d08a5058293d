"""The README's staff session with curl, run as written against a real `ledger serve`: every
request in it must succeed when pasted, in order."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.e2e.conftest import LEDGER, clean_environ

README = Path(__file__).resolve().parents[2] / "README.md"


def _session() -> str:
    text = README.read_text()
    start = text.index("### A staff session with curl")
    return re.search(r"```sh\n(.*?)```", text[start:], re.S).group(1)  # type: ignore[union-attr]


@pytest.mark.skipif(shutil.which("curl") is None, reason="needs curl")
def test_the_readme_curl_session_runs_as_written(server, tmp_path):
    session = _session()
    assert "B=http://127.0.0.1:8000/api/v1\n" in session and ".venv/bin/ledger " in session
    statuses_file = tmp_path / "statuses"
    script = (
        # every curl also writes its status to a file of its own, for this test to read (on the
        # shell's stderr, `field`'s copy of a body could land in the middle of it)
        "curl() { command curl -w '%{stderr}%{http_code}\\n' \"$@\" 2>>\"$STATUSES\"; }\n"
        + session.replace("http://127.0.0.1:8000", server.url).replace(".venv/bin/ledger", LEDGER)
        + 'echo; echo "ID=$ID NEED_ID=$NEED_ID"\n')
    done = subprocess.run(["bash", "-e", "-o", "pipefail", "-c", script],
                          env={**clean_environ(), **server.env, "STATUSES": str(statuses_file)},
                          capture_output=True, text=True, timeout=120, cwd=tmp_path)

    statuses = statuses_file.read_text().split() if statuses_file.exists() else []
    assert done.returncode == 0, done.stderr
    assert len(statuses) == session.count("curl -s") and all(s.startswith("2") for s in statuses), \
        statuses
    lines = [line for line in done.stdout.splitlines() if line.strip()]
    ids = dict(pair.split("=") for pair in lines[-1].split())
    record = json.loads(lines[-2])  # the last request's answer
    assert record["id"] == ids["ID"] and record["name"] == "Ada Example"
    assert [n["outcome"] for n in record["access_needs"] if n["id"] == ids["NEED_ID"]] == ["met"]
    assert [(p["amount"], p["reference"]) for p in record["payments"]] == [("25.00", "VCH-0042")]
    assert record["consents"]["quote"]["state"] == "withdrawn"
    assert record["consents"]["take_part"]["state"] == "given"
