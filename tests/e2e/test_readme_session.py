"""The README's staff session with curl, run as written against a real `ledger serve`: every
request in it must succeed when pasted, in order."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
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
    assert len(record["access_needs"]) == 1  # the need sent twice with its key: recorded once
    assert [(p["amount"], p["reference"]) for p in record["payments"]] == [("25.00", "VCH-0042")]
    assert record["consents"]["quote"]["state"] == "withdrawn"
    assert record["consents"]["take_part"]["state"] == "given"
    links = [line for line in lines if "/my/" in line]  # the link, printed by `field url`
    assert len(links) == 1 and links[0].split("/my/")[0].endswith(server.url.rstrip("/")), links


def _blocks(section: str) -> list[tuple[str, str]]:
    text = README.read_text()
    start = text.index(f"## {section}\n")
    end = text.index("\n## ", start + 1)
    return re.findall(r"```(sh|python)\n(.*?)```", text[start:end], re.S)


@pytest.mark.skipif(shutil.which("curl") is None, reason="needs curl")
def test_the_readme_tamper_evidence_snippets_run_as_written(server, tmp_path):
    """An auditor's commands and the Python that checks a kept checkpoint and a report's
    signature, pasted in order (they once used an $AUDITOR the README never made)."""
    blocks = _blocks("Tamper evidence")
    assert [kind for kind, _ in blocks] == ["sh", "python", "sh", "python"]
    script = "".join(  # one shell, as when pasted into a terminal
        code.replace("http://127.0.0.1:8000", server.url).replace(".venv/bin/ledger", LEDGER)
        if kind == "sh" else f"'{sys.executable}' - <<'PYTHON'\n{code}PYTHON\n"
        for kind, code in blocks)
    done = subprocess.run(["bash", "-e", "-o", "pipefail", "-c", script],
                          env={**clean_environ(), **server.env}, capture_output=True, text=True,
                          timeout=120, cwd=tmp_path)

    assert done.returncode == 0, done.stderr
    checkpoint = json.loads((tmp_path / "checkpoint.json").read_text())
    assert checkpoint["size"] > 0
    assert (tmp_path / "report.pdf").read_bytes().startswith(b"%PDF")
