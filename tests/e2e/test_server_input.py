"""What a real `ledger serve` does with input that never reaches a Flask test client: chunked
bodies, and requests gunicorn refuses before the app sees them."""

from __future__ import annotations

import http.client
import json
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ledger.application import Ledger

from .conftest import Server, start_server

NAME = "Zebedee Quarrington"
SECURITY_HEADERS = {"x-content-type-options": "nosniff", "cache-control": "no-store",
                    "referrer-policy": "no-referrer", "x-frame-options": "DENY"}


@pytest.fixture(scope="module")
def served(tmp_path_factory) -> Iterator[tuple[Server, str]]:
    """One server on SQLite for the module, and a staff token."""
    import subprocess

    from .conftest import LEDGER, clean_environ

    home = tmp_path_factory.mktemp("served")
    env = {"LEDGER_DATA_DIR": str(home / "data")}
    subprocess.run([LEDGER, "init"], env={**clean_environ(), **env}, check=True,
                   capture_output=True)
    made = subprocess.run([LEDGER, "tokens", "create", "--role", "staff", "--name", "input"],
                          env={**clean_environ(), **env}, check=True, capture_output=True,
                          text=True)
    token = next(w for w in made.stdout.split() if w.startswith("lgr_"))
    proc, server = start_server(env, home / "server.log", workers=2)
    yield server, token
    proc.terminate()
    proc.wait(timeout=30)


def _chunked(server: Server, token: str, body: bytes) -> tuple[int, dict[str, str], bytes]:
    host, port = server.url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=60)
    try:
        conn.request("POST", "/api/v1/participants", body=iter([body[i:i + 8192] for i in
                                                                range(0, len(body), 8192)]),
                     headers={"Authorization": f"Bearer {token}",
                              "Content-Type": "application/json"},
                     encode_chunked=True)
        response = conn.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        conn.close()


def _raw(server: Server, request: bytes) -> bytes:
    host, port = server.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=30) as s:
        s.sendall(request)
        received = b""
        while chunk := s.recv(65536):
            received += chunk
        return received


def _count(server: Server, token: str) -> int:
    status, _, body = server.request("GET", "/api/v1/participants?limit=200",
                                     headers={"Authorization": f"Bearer {token}"})
    assert status == 200
    return len(json.loads(body)["items"])


def test_a_chunked_body_over_the_limit_is_413_and_writes_nothing(served):
    server, token = served
    before = _count(server, token)
    valid_start = b'{"name": "Chunk Tail"}' + b" " * 70_000 + b" and then not JSON {{{"

    status, headers, body = _chunked(server, token, valid_start)

    assert status == 413, body
    assert headers["content-type"] == "application/problem+json"
    assert _count(server, token) == before


def test_a_chunked_body_within_the_limit_is_read_whole(served):
    server, token = served
    before = _count(server, token)

    status, _, body = _chunked(server, token, json.dumps({"name": "Chunk " + "x" * 150})
                               .encode() + b" " * 60_000)

    assert status == 201, body
    assert _count(server, token) == before + 1


def test_a_chunked_body_cut_short_of_valid_json_is_400(served):
    server, token = served

    status, _, _ = _chunked(server, token, b'{"name": "Chunk' + b" " * 1000)

    assert status == 400


@pytest.mark.parametrize("request_line", [
    f"GET /api/v1/participants?name={NAME} HTTP/1.1".encode(),  # a space: not a request line
    "GET /api/v1/participants?name=Zébédée-Quarrington HTTP/1.1".encode(),
    b"GET /api/v1/participants?name=Zebedee-Quarrington-" + b"x" * 5000 + b" HTTP/1.1",
])
def test_a_request_gunicorn_refuses_is_answered_as_problem_json_and_logged_without_it(
        served, request_line):
    server, _ = served

    answer = _raw(server, request_line + b"\r\nHost: x\r\n\r\n")

    head, _, body = answer.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (h.partition(":") for h in header_lines)}
    assert status_line.split()[1] in {"400", "414"}, status_line
    assert headers["content-type"] == "application/problem+json"
    for name, value in SECURITY_HEADERS.items():
        assert headers[name] == value
    assert "default-src 'none'" in headers["content-security-policy"]
    assert b"Quarrington" not in answer
    problem = json.loads(body)
    assert problem["status"] == int(status_line.split()[1]) and problem["title"]
    assert problem["code"] in {"BadRequest", "RequestLineTooLong"}

    time.sleep(0.3)
    log = Path(server.log).read_text(errors="replace")
    assert "Quarrington" not in log
    assert "refused a malformed request" in log


def test_serve_warns_when_links_would_only_work_on_this_machine(tmp_path, served):
    import subprocess

    from .conftest import LEDGER, _free_port, clean_environ

    env = {**clean_environ(), "LEDGER_DATA_DIR": str(tmp_path / "data")}  # no LEDGER_BASE_URL
    port = _free_port()
    proc = subprocess.Popen([LEDGER, "serve", "--port", str(port), "--workers", "1"],
                            env=env, cwd=tmp_path, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stderr is not None
        lines = [proc.stderr.readline() for _ in range(2)]  # written before gunicorn starts
        own = Server(f"http://127.0.0.1:{port}", env, tmp_path / "unused.log")
        for _ in range(300):
            try:
                if own.request("GET", "/readyz")[0] == 200:
                    break
            except OSError:
                pass
            time.sleep(0.1)
        lg = Ledger({"LEDGER_DATA_DIR": env["LEDGER_DATA_DIR"]})
        try:
            staff = {"Authorization": f"Bearer {lg.tokens.create('staff', 'links')[1]}"}
        finally:
            lg.close()
        _, _, body = own.request("POST", "/api/v1/participants", {"name": "Lin Kport"}, staff)
        pid = json.loads(body)["id"]
        _, _, body = own.request("POST", f"/api/v1/participants/{pid}/withdrawal-link", {},
                                 staff)
        url = json.loads(body)["url"]
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        if proc.stderr is not None:
            proc.stderr.close()

    assert lines[0].startswith("Serving the ledger")
    assert lines[1].startswith("LEDGER_BASE_URL is not set")
    assert f"http://127.0.0.1:{port}." in lines[1]
    # The links point at the port it serves on (they said 8000 whatever --port was)
    assert url.startswith(f"http://127.0.0.1:{port}/my/"), url
    server, _ = served  # started with LEDGER_BASE_URL: no warning
    assert "LEDGER_BASE_URL is not set" not in Path(server.log).read_text()


def test_a_malformed_chunk_after_the_answer_gets_no_second_answer(served):
    """The app answers 413 at 64 KiB; gunicorn then reads the rest of the body to reuse the
    connection and finds a broken chunk: the connection closes, with only the one answer."""
    server, token = served
    chunk = b"x" * 10_000
    body = b"".join(b"%x\r\n%s\r\n" % (len(chunk), chunk) for _ in range(7))
    request = (b"POST /api/v1/participants HTTP/1.1\r\nHost: x\r\n"
               b"Authorization: Bearer " + token.encode() + b"\r\n"
               b"Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
               + body + b"zz\r\nabc\r\n0\r\n\r\n")

    answer = _raw(server, request)

    assert answer.startswith(b"HTTP/1.1 413")
    assert answer.count(b"HTTP/1.1 ") == 1, answer[:600]


def test_an_idempotency_key_sent_twice_is_refused_not_joined_into_a_third(served):
    """gunicorn hands a repeated header to the app joined by commas: refused (400), so a retry
    with either key alone cannot miss the payment the pair made."""
    server, token = served
    status, _, body = server.request("POST", "/api/v1/participants", {"name": NAME},
                                     headers={"Authorization": f"Bearer {token}"})
    pid = json.loads(body)["id"]
    payment = json.dumps({"activity": "conversation", "amount": "25.00",
                          "method": "cash"}).encode()
    request = (f"POST /api/v1/participants/{pid}/payments HTTP/1.1\r\nHost: x\r\n"
               f"Authorization: Bearer {token}\r\nContent-Type: application/json\r\n"
               "Idempotency-Key: dupA\r\nIdempotency-Key: dupB\r\nConnection: close\r\n"
               f"Content-Length: {len(payment)}\r\n\r\n").encode() + payment

    answer = _raw(server, request)
    status_after, _, record = server.request("GET", f"/api/v1/participants/{pid}",
                                             headers={"Authorization": f"Bearer {token}"})

    assert status == 201 and answer.startswith(b"HTTP/1.1 400 ")
    assert b'"Idempotency-Key"' in answer and b"application/problem+json" in answer
    assert status_after == 200 and json.loads(record)["payments"] == []


def test_the_server_opens_no_control_socket(tmp_path):
    """gunicorn 25.1+ opens one by default (in $XDG_RUNTIME_DIR or ~/.gunicorn), through which
    workers can be added, removed or reloaded, and which a second server on the host takes
    over. `ledger serve` opens none."""
    home, runtime = tmp_path / "home", tmp_path / "runtime"
    home.mkdir()
    runtime.mkdir()
    proc, _ = start_server({"LEDGER_DATA_DIR": str(tmp_path / "data"), "HOME": str(home),
                            "XDG_RUNTIME_DIR": str(runtime)}, tmp_path / "server.log", workers=1)
    try:
        made = [p.relative_to(tmp_path).as_posix() for p in (*home.rglob("*"),
                                                             *runtime.rglob("*"))]
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    assert made == []


def _sent_then_closed(server: Server, path: str, content_type: str, body: bytes,
                      declared: int, token: str | None = None) -> tuple[int, bytes]:
    """POST with ``Content-Length: declared`` and only ``body`` after it, then close the
    sending side (as a client that drops or times out mid-body does); the answer's status and
    bytes."""
    head = (f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: {content_type}\r\n"
            f"Content-Length: {declared}\r\nConnection: close\r\n")
    if token is not None:
        head += f"Authorization: Bearer {token}\r\n"
    host, port = server.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=30) as s:
        s.sendall(head.encode() + b"\r\n" + body)
        s.shutdown(socket.SHUT_WR)
        received = b""
        while chunk := s.recv(65536):
            received += chunk
    status = int(received.split(b" ", 2)[1])
    return status, received


def test_a_body_that_ends_before_its_content_length_is_400_and_writes_nothing(served):
    """gunicorn hands the app what arrived, and Werkzeug trusts it: a registration whose body
    stopped short of its Content-Length, after a whole JSON object, was recorded (201). It is
    refused, naming the body, and no one is registered; the same bytes with their true length
    register the person."""
    server, token = served
    body = json.dumps({"name": NAME}).encode()
    before = _count(server, token)

    cut_status, cut = _sent_then_closed(server, "/api/v1/participants", "application/json",
                                        body, len(body) + 100, token)
    after_cut = _count(server, token)
    whole_status, _ = _sent_then_closed(server, "/api/v1/participants", "application/json",
                                        body, len(body), token)

    assert cut_status == 400, cut
    problem = json.loads(cut.split(b"\r\n\r\n", 1)[1])
    assert problem["code"] == "IncompleteBody" and "body" in problem["errors"]
    assert b"application/problem+json" in cut and NAME.encode() not in cut
    assert after_cut == before
    assert whole_status == 201 and _count(server, token) == before + 1


def test_a_withdrawal_form_cut_short_withdraws_nothing_and_says_so(served):
    """A participant ticks two choices and the connection drops after the first: before, that
    one was withdrawn alone (303 to "stopped"), the person's choice only partly carried out.
    Now nothing is withdrawn and the page says the answer did not arrive in full."""
    import re

    server, token = served
    staff = {"Authorization": f"Bearer {token}"}
    _, _, made = server.request("POST", "/api/v1/participants", {"name": NAME}, staff)
    pid = json.loads(made)["id"]
    for scope, extra in [("take_part", {}), ("record", {}),
                         ("quote", {"attribution": "anonymous"})]:
        granted = server.request("POST", f"/api/v1/participants/{pid}/consents",
                                 {"scope": scope, "form_version": "1.0", "method": "online",
                                  **extra}, staff)
        assert granted[0] == 201, granted
    _, _, link = server.request("POST", f"/api/v1/participants/{pid}/withdrawal-link", {}, staff)
    path = json.loads(link)["url"].removeprefix(server.url)
    _, _, page = server.request("GET", path)
    csrf = re.search(rb'name="csrf" value="([^"]+)"', page).group(1).decode()
    form = f"csrf={csrf}&scope=quote&scope=record".encode()

    status, answer = _sent_then_closed(server, path + "/withdraw",
                                       "application/x-www-form-urlencoded",
                                       form[:form.index(b"&scope=record")], len(form))
    _, _, shown = server.request("GET", f"/api/v1/participants/{pid}", headers=staff)
    states = {s: c["state"] for s, c in json.loads(shown)["consents"].items()}
    whole, _ = _sent_then_closed(server, path + "/withdraw",
                                 "application/x-www-form-urlencoded", form, len(form))
    _, _, shown = server.request("GET", f"/api/v1/participants/{pid}", headers=staff)

    assert status == 400, answer
    assert b"did not reach us in full" in answer and b"Nothing has changed" in answer
    assert (states["quote"], states["record"]) == ("given", "given")
    assert whole == 303
    assert {s: c["state"] for s, c in json.loads(shown)["consents"].items()
            if s in ("quote", "record")} == {"quote": "withdrawn", "record": "withdrawn"}


def test_requests_that_never_finish_arriving_hold_no_thread_and_are_closed(served):
    """Slow clients: a request is read on one of a worker's few threads (here 2 workers of 4)
    only once it has all arrived. Forty connections that send half a request head, or a head
    and a body promised but never sent (no token: nothing is answered before the body, lest
    a request be judged on part of itself), or a chunked body never finished, hold no thread:
    a request on another connection is answered at once. Each is closed once nothing more
    comes for the keep-alive time (5 s). Ten that keep sending a header line every second, and
    never read, are closed once they have taken READ_WHOLE (30 s), and closing them does not
    hold up the worker (gunicorn's graceful close waited 2 s for each, on its main loop)."""
    from ledger.api.server import READ_WHOLE

    server, token = served
    host, port = server.url.removeprefix("http://").split(":")
    starts = [b"GET /api/v1/study HTTP/1.1\r\nHost: x\r\n",
              b"POST /api/v1/participants HTTP/1.1\r\nHost: x\r\nContent-Type: application/json"
              b"\r\nContent-Length: 1000\r\n\r\n",
              b"POST /api/v1/participants HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
              b"Content-Type: application/json\r\n\r\n10\r\n{\"name\": \"Zeb"]
    held = []
    for i in range(40):
        s = socket.create_connection((host, int(port)), timeout=60)
        s.sendall(starts[i % len(starts)])
        held.append(s)
    drips = [socket.create_connection((host, int(port)), timeout=60) for _ in range(10)]
    for d in drips:
        d.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
    began = time.monotonic()
    drips_closed_after: list[float] = []

    def keep_dripping(d: socket.socket) -> None:
        while time.monotonic() - began < READ_WHOLE + 15:
            try:
                d.sendall(b"X-Slow: 1\r\n")
            except OSError:  # reset: the server closed it
                drips_closed_after.append(time.monotonic() - began)
                return
            time.sleep(1)

    dripping = [threading.Thread(target=keep_dripping, args=(d,)) for d in drips]
    for t in dripping:
        t.start()
    try:
        answered = time.monotonic()
        status, _, _ = server.request("GET", "/api/v1/participants?limit=1",
                                      headers={"Authorization": f"Bearer {token}"})
        answered = time.monotonic() - answered
        assert status == 200 and answered < 2, answered

        closed_after = []
        for s in held:
            assert s.recv(100) == b""  # closed by the server, unanswered
            closed_after.append(time.monotonic() - began)
        assert max(closed_after) < 15, max(closed_after)

        slowest = 0.0
        while any(t.is_alive() for t in dripping):  # answers while the drips are closed
            asked = time.monotonic()
            assert server.request("GET", "/healthz")[0] == 200
            slowest = max(slowest, time.monotonic() - asked)
            time.sleep(0.25)
        assert slowest < 1.5, slowest
        assert len(drips_closed_after) == len(drips)
        assert READ_WHOLE - 1 < min(drips_closed_after) <= max(drips_closed_after) \
            < READ_WHOLE + 10, drips_closed_after
    finally:
        for t in dripping:
            t.join()
        for s in [*held, *drips]:
            s.close()


def test_behind_tls_even_a_request_gunicorn_refuses_is_answered_with_hsts(tmp_path):
    """With links on https (served behind TLS), every answer carries Strict-Transport-Security:
    the app's, and those gunicorn gives before the app sees the request."""
    import subprocess

    from .conftest import LEDGER, clean_environ

    env = {"LEDGER_DATA_DIR": str(tmp_path / "data"), "LEDGER_BASE_URL": "https://ledger.example"}
    subprocess.run([LEDGER, "init"], env={**clean_environ(), **env}, check=True,
                   capture_output=True)
    proc, server = start_server(env, tmp_path / "server.log", workers=1)
    try:
        refused = [_raw(server, line + b"\r\nHost: x\r\n\r\n") for line in (
            b"GET /healthz HTTP/9.9", b"GET /" + b"x" * 5000 + b" HTTP/1.1")]
        refused.append(_raw(server, b"GET /healthz HTTP/1.1\r\n" + b"X-A: b\r\n" * 60 + b"\r\n"))
        _, app_headers, _ = server.request("GET", "/no-such-page")
    finally:
        proc.terminate()
        proc.wait(timeout=30)

    statuses = [answer.split(b" ", 2)[1] for answer in refused]
    assert statuses == [b"400", b"414", b"431"]
    assert [json.loads(answer.split(b"\r\n\r\n", 1)[1])["code"] for answer in refused] == [
        "BadRequest", "RequestLineTooLong", "HeadersTooLarge"]
    assert all(b"\r\nStrict-Transport-Security: max-age=31536000\r\n" in answer
               for answer in refused)
    assert {k.lower(): v for k, v in app_headers.items()}[
        "strict-transport-security"] == "max-age=31536000"
