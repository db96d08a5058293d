"""A real `ledger serve` (gunicorn, several worker processes) on a free local port."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

LEDGER = str(Path(sys.executable).parent / "ledger")


@dataclass
class Server:
    """A running server and how to reach it."""

    url: str
    env: dict[str, str]
    log: Path

    def request(self, method: str, path: str, body: object = None,
                headers: dict[str, str] | None = None) -> tuple[int, dict, bytes]:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.url + path, data=data, method=method,
                                     headers={"Content-Type": "application/json",
                                              **(headers or {})})
        try:
            with urllib.request.urlopen(req, timeout=60) as r:
                return r.status, dict(r.headers), r.read()
        except urllib.error.HTTPError as e:
            with e:
                return e.code, dict(e.headers), e.read()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def clean_environ() -> dict[str, str]:
    """This process's environment without the developer's LEDGER_* settings, but keeping the
    suite's LEDGER_CHECK_DUMPS (every response dump checked against marshmallow's)."""
    return {k: v for k, v in os.environ.items()
            if not k.startswith("LEDGER_") or k == "LEDGER_CHECK_DUMPS"}


def start_server(env: dict[str, str], log: Path, workers: int = 4, *,
                 new_session: bool = False) -> tuple[subprocess.Popen, Server]:
    """Start `ledger serve` and wait until it is ready. ``new_session``: in its own process
    group, so that one ``os.killpg`` reaches the workers too (the crash test)."""
    port = _free_port()
    full_env = clean_environ()
    full_env["LEDGER_BASE_URL"] = f"http://127.0.0.1:{port}"  # links point at this server
    full_env.update(env)
    with log.open("wb") as out:  # the child keeps its own copy of the descriptor
        proc = subprocess.Popen([LEDGER, "serve", "--port", str(port), "--workers", str(workers)],
                                env=full_env, stdout=out, stderr=subprocess.STDOUT,
                                cwd=log.parent, start_new_session=new_session)
    server = Server(f"http://127.0.0.1:{port}", env, log)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"ledger serve exited: {log.read_text()[-2000:]}")
        try:
            if server.request("GET", "/readyz")[0] == 200:
                return proc, server
        except OSError:
            pass
        time.sleep(0.2)
    if new_session:
        os.killpg(proc.pid, 9)
    else:
        proc.terminate()
    raise RuntimeError("ledger serve did not become ready")


@pytest.fixture
def server(store_env, tmp_path) -> Iterator[Server]:
    proc, srv = start_server(store_env, tmp_path / "server.log")
    yield srv
    proc.terminate()
    proc.wait(timeout=30)
