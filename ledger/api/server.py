"""Run the app under gunicorn: each worker process builds its own app and Ledger."""

from __future__ import annotations

import functools
import gc
import io
import json
import logging
import re
import socket
import sys
import time
from http import HTTPStatus
from typing import Any

from gunicorn import util
from gunicorn.app.base import BaseApplication
from gunicorn.glogging import Logger
from gunicorn.http import errors as http_errors
from gunicorn.http.unreader import SocketUnreader
from gunicorn.workers.gthread import _DEFER, ThreadWorker

TOKEN_PATH = re.compile(r"/my/[^/\s?]+")
H = r"[0-9a-fA-F]{1,4}"
IP = re.compile(
    rf"(?<![\w:])(?:{H}(?::{H}){{0,5}})?::(?:{H}:){{0,5}}(?:\d{{1,3}}\.){{3}}\d{{1,3}}\b"  # ::ffff:IPv4
    r"|\b(?:\d{1,3}\.){3}\d{1,3}\b"  # IPv4
    rf"|\b(?:{H}:){{7}}{H}\b"  # IPv6 in full
    rf"|(?<![\w:])(?:{H}(?::{H}){{0,6}})?::(?:{H}(?::{H}){{0,6}})?(?!\w)"  # IPv6 with "::"
)  # (a single colon, as in "pid:1234" or "12:30", is not an address)


def scrub(text: str) -> str:
    """No link tokens and no client addresses in the server's own log lines."""
    return IP.sub("<address>", TOKEN_PATH.sub("/my/<token>", text))


class ScrubbingLogger(Logger):  # type: ignore[misc]
    """gunicorn's error log, minus link tokens and client IP addresses (it logs both for
    malformed requests)."""

    def _clean(self, msg: object, args: tuple[Any, ...]) -> str:
        text = str(msg)
        if args:
            try:
                text = text % args
            except (TypeError, ValueError):
                text = " ".join([text, *map(str, args)])
        return scrub(text)

    # Each level is checked before cleaning: gunicorn logs every request at debug level, and
    # formatting and scrubbing those lines for nothing was a fortieth of a worker's CPU.
    def critical(self, msg: object, *args: Any, **kwargs: Any) -> None:
        if self.error_log.isEnabledFor(logging.CRITICAL):
            super().critical(self._clean(msg, args), **kwargs)

    def error(self, msg: object, *args: Any, **kwargs: Any) -> None:
        if self.error_log.isEnabledFor(logging.ERROR):
            super().error(self._clean(msg, args), **kwargs)

    def warning(self, msg: object, *args: Any, **kwargs: Any) -> None:
        if self.error_log.isEnabledFor(logging.WARNING):
            super().warning(self._clean(msg, args), **kwargs)

    def info(self, msg: object, *args: Any, **kwargs: Any) -> None:
        if self.error_log.isEnabledFor(logging.INFO):
            super().info(self._clean(msg, args), **kwargs)

    def debug(self, msg: object, *args: Any, **kwargs: Any) -> None:
        if self.error_log.isEnabledFor(logging.DEBUG):
            super().debug(self._clean(msg, args), **kwargs)

    def exception(self, msg: object, *args: Any, **kwargs: Any) -> None:
        # The traceback could quote the request too: log the cleaned line without it.
        super().error(self._clean(msg, args))


# A request gunicorn itself refuses (it never reaches the app): its status, as gunicorn gives it.
# Any other ParseException is a plain 400; anything else, or a response header the app got
# wrong, is our fault: 500.
REFUSED = [
    ((http_errors.InvalidResponseHeader, http_errors.InvalidResponseHeaderName), 500),
    ((http_errors.ConfigurationProblem,), 500),
    ((http_errors.LimitRequestLine,), 414),
    ((http_errors.LimitRequestHeaders,), 431),
    ((http_errors.UnsupportedTransferCoding,), 501),
    ((http_errors.ExpectationFailed,), 417),
    ((http_errors.ForbiddenProxyRequest,), 403),
    ((http_errors.ParseException,), 400),
]


def refused_status(error: BaseException) -> int:
    """The status gunicorn would answer ``error`` with."""
    return next((status for kinds, status in REFUSED if isinstance(error, kinds)), 500)


# Slow clients. gunicorn reads a request on one of a worker's few threads, with no time limit once
# its first byte came: forty connections that each sent half a request and waited held every
# thread, and the whole service (the participant pages too) stopped answering for as long as
# they stayed open. So:
# - a request is read by a thread only once it has all arrived (its head, and a body of the
#   length it declares, or to its last chunk): until then what comes is gathered without
#   waiting, and the connection waits in the worker's poller, holding no thread, for at most
#   READ_WHOLE seconds, and for at most the keep-alive time between two packets;
# - a request larger than PEEK_UP_TO bytes goes to a thread as it comes, and there, as for any
#   request, a read that waits READ_IDLE seconds, or goes on past READ_WHOLE seconds, ends it
#   as if the client had gone;
# - a response gets SEND_TIMEOUT seconds per write.
# A proxy that buffers whole requests before passing them on (nginx does) is still the way to
# face a determined flood: see the README.
READ_IDLE = 10.0
READ_WHOLE = 30.0
SEND_TIMEOUT = 60.0
PEEK_UP_TO = 16 * 1024


@functools.cache
def _served_over_https() -> bool:
    """Whether the links say the server is reached over TLS (as the app decides it)."""
    from ..config import load_environment

    return (load_environment().get("LEDGER_BASE_URL") or "").startswith("https://")


HEX = re.compile(rb"[0-9A-Fa-f]+")


def _whole(data: bytes) -> bool:
    """Whether ``data`` (what a socket holds, unread) is a whole request, or at least as much of
    one as it needs before a thread should read it: its head, and its body if it declares one
    (not when it asks the client to wait for "100 Continue", which the thread sends). A body
    declared longer than PEEK_UP_TO, and anything not read here as a plain request, goes at
    once: gunicorn's parser decides, and refuses what is malformed."""
    end = data.find(b"\r\n\r\n")
    if end < 0:
        return b"\n\n" in data  # (a head ended by bare line feeds: gunicorn refuses it)
    lengths, chunked = [], False
    for line in data[:end].split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        name, value = name.strip().lower(), value.strip().lower()
        if name == b"expect":
            return True
        if name == b"transfer-encoding":
            chunked = chunked or b"chunked" in value
        elif name == b"content-length":
            lengths.append(value)
    if len(lengths) > 1 or (lengths and (chunked or not lengths[0].isdigit())):
        return True
    body = data[end + 4:]
    if not chunked:
        length = int(lengths[0]) if lengths else 0
        return length > PEEK_UP_TO or len(body) >= length
    at = 0  # walk the chunks: size line, data, CRLF; the last chunk has size 0
    while True:
        line_end = body.find(b"\r\n", at)
        if line_end < 0:
            return False
        size_text = body[at:line_end].split(b";")[0].strip()
        if not HEX.fullmatch(size_text):
            return True
        size = int(size_text, 16)
        at = line_end + 2  # (always forward: the walk ends)
        if size == 0:  # then trailers, if any, and an empty line
            return body.startswith(b"\r\n", at) or body.find(b"\r\n\r\n", at) >= 0
        at += size + 2
        if at > len(body):
            return False


def _timed(conn: Any) -> None:
    """Give a connection's reads the limits above: wraps its ``init``, which gunicorn calls on
    a thread each time it starts to read a request on it (the socket then blocking, no limit)."""
    init = conn.init

    def timed_init() -> None:
        init()
        conn.ledger_deadline = time.monotonic() + READ_WHOLE
        unreader = getattr(conn.parser, "unreader", None)
        if isinstance(unreader, SocketUnreader) and not getattr(unreader, "ledger_timed", False):
            unreader.ledger_timed = True
            read = unreader.chunk

            def chunk(size_hint: int | None = None) -> bytes:
                left = conn.ledger_deadline - time.monotonic()
                if left <= 0:
                    return b""  # (as if the client closed: the request ends unread)
                unreader.sock.settimeout(min(READ_IDLE, left))
                try:
                    return read(size_hint)  # type: ignore[no-any-return]
                except TimeoutError:
                    return b""
                finally:
                    unreader.sock.settimeout(SEND_TIMEOUT)

            unreader.chunk = chunk
        conn.sock.settimeout(SEND_TIMEOUT)

    conn.init = timed_init
    conn.ledger_timed = True


class LedgerWorker(ThreadWorker):  # type: ignore[misc]
    """gunicorn's threaded worker, except that reading a request has a time limit (see
    ``READ_IDLE``), and except for requests it refuses before the app sees them
    (a malformed request line or header, a chunk gone wrong, a line too long).

    gunicorn logs those with the offending text ("Invalid HTTP Version: 'Quarrington
    HTTP/1.1'", so a name in a query string reached the log) and answers with an HTML page
    quoting it, without the security headers every other response has. Here the log says only
    what kind of request was refused, and the answer is problem+json with the API's headers."""

    def enqueue_req(self, conn: Any) -> None:
        if not getattr(conn, "ledger_timed", False):
            _timed(conn)
        super().enqueue_req(conn)

    def handle(self, conn: Any) -> Any:
        """Read and answer a request once it has all arrived (see ``PEEK_UP_TO``)."""
        waiting = self._not_yet_whole(conn)
        if waiting is None or (waiting and not self.alive):
            # Too long in coming, or the worker is stopping: closed unanswered. Shut both ways
            # first, so that gunicorn's graceful close (which waits up to 2 s for the client
            # to stop sending, on the worker's main loop) returns at once.
            try:
                conn.sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            return False
        if waiting:
            return _DEFER  # (back to the poller until more comes; no thread waits for it)
        conn.ledger_started = None
        return super().handle(conn)

    def _not_yet_whole(self, conn: Any) -> bool | None:
        """True while the connection's request has not all arrived, None once it has taken
        longer than READ_WHOLE, False when a thread should read it.

        What has come is taken from the socket without waiting, into the buffer gunicorn's
        parser reads first (taken, not peeked at: the poller would otherwise wake at once
        for bytes it had already seen)."""
        if self.cfg.is_ssl:
            return False  # (what TLS holds cannot be read without waiting: as gunicorn does)
        now = time.monotonic()
        started = getattr(conn, "ledger_started", None) or now
        conn.ledger_started = started
        conn.init()  # (the parser and its buffer; the socket is left blocking)
        buffer = conn.parser.unreader.buf
        held = buffer.getvalue()
        try:
            conn.sock.setblocking(False)
            while len(held) < PEEK_UP_TO and not _whole(held):
                more = conn.sock.recv(PEEK_UP_TO)
                if not more:
                    return False  # (closed: the thread finds the request cut short, ends it)
                buffer.seek(0, io.SEEK_END)
                buffer.write(more)
                held = buffer.getvalue()
        except BlockingIOError:
            pass
        except OSError:
            return False  # (the thread meets the error and deals with it)
        finally:
            conn.sock.setblocking(True)
        if len(held) >= PEEK_UP_TO or _whole(held):
            return False
        return None if now - started > READ_WHOLE else True

    def handle_request(self, req: Any, conn: Any) -> Any:
        keepalive = super().handle_request(req, conn)
        req.ledger_answered = True  # see handle_error
        return keepalive

    def handle_error(self, req: Any, client: Any, addr: Any, exc: BaseException) -> None:
        from . import API_CSP, HSTS, SECURITY_HEADERS
        from .errors import CODES, TITLES

        if getattr(req, "ledger_answered", False):
            # The request was answered; what failed is reading the rest of its body (a chunk
            # gone wrong) before the connection's next request. A second answer would follow
            # the first on the same connection: close it instead (gunicorn does, after this).
            self.log.debug("a malformed body after the answer (%s)", type(exc).__name__)
            return
        status = refused_status(exc)
        if status == 500:
            self.log.error("error handling a request (%s)", type(exc).__name__)
        else:
            self.log.warning("refused a malformed request (%s): %d", type(exc).__name__, status)
        phrase = HTTPStatus(status).phrase
        detail = ("The request could not be read as HTTP." if status != 500 else
                  "Something went wrong on our side. Please try again.")
        body = json.dumps({"type": "about:blank", "status": status,
                           "title": TITLES.get(status, phrase),
                           "code": CODES.get(status, "BadRequest"), "detail": detail}).encode()
        headers = {"Connection": "close", "Content-Type": "application/problem+json",
                   "Content-Length": str(len(body)), **SECURITY_HEADERS,
                   "Content-Security-Policy": API_CSP}
        if _served_over_https():
            headers["Strict-Transport-Security"] = HSTS  # as the app sends it
        head = f"HTTP/1.1 {status} {phrase}\r\n" + "".join(
            f"{name}: {value}\r\n" for name, value in headers.items()) + "\r\n"
        try:
            util.write_nonblock(client, head.encode("ascii") + body)
        except Exception:  # noqa: BLE001 - the client may be gone; nothing to tell it
            self.log.debug("could not send the refusal")


class LedgerServer(BaseApplication):  # type: ignore[misc]
    """gunicorn, configured in code rather than by a config file."""

    def __init__(self, options: dict[str, Any]) -> None:
        self.options = options
        super().__init__()

    def load_config(self) -> None:
        for key, value in self.options.items():
            self.cfg.set(key, value)

    def load(self) -> Any:
        from . import create_app

        return create_app()


def _post_fork(server: Any, worker: Any) -> None:
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(process)d %(name)s %(message)s")


# The cyclic garbage collector, in a worker: once the app is loaded, what exists is frozen (never
# scanned again), and collections come about 70 times less often. Measured under 16 connections
# of payments: with the defaults each worker's full collection stopped every thread for 70-110 ms
# (whatever was in flight waited that long) and collections took half a second in 8 s; with these,
# the longest pause was 15-24 ms and collections took 30-45 ms. Reference counting frees everything
# else at once; only reference cycles wait longer to be found. (The same thresholds as a rebuild's
# replay, ``projections.projector.fewer_collections``.)
GC_THRESHOLDS = (50_000, 20, 100)


def _post_worker_init(worker: Any) -> None:
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


def _pre_request(worker: Any, req: Any) -> None:
    """gunicorn's own hook logs each request's raw path at debug level: a path can hold a
    mistyped name or a link token. Ours logs the method alone (the access log has the route)."""
    worker.log.debug("%s request", req.method)


def _worker_exit(server: Any, worker: Any) -> None:
    """A worker stopping (SIGTERM, a restart): its ledger finishes what the follower had still
    to do for its saves (the views, the Merkle leaves, a signed checkpoint), then closes."""
    ledger = getattr(getattr(worker, "wsgi", None), "extensions", {}).get("ledger")
    if ledger is not None:
        ledger.close()


def serve(host: str, port: int, workers: int, threads: int = 4) -> None:
    """Serve until SIGTERM/SIGINT; in-flight requests get ``graceful_timeout`` to finish."""
    LedgerServer(options(host, port, workers, threads)).run()


def options(host: str, port: int, workers: int, threads: int = 4) -> dict[str, Any]:
    """gunicorn's settings for ``ledger serve``."""
    return {
        # An IPv6 address in brackets, as gunicorn reads "host:port" (either form is taken).
        "bind": f"[{host.strip('[]')}]:{port}" if ":" in host else f"{host}:{port}",
        "workers": workers,
        "threads": threads,
        "worker_class": "ledger.api.server.LedgerWorker",
        "accesslog": None,  # our own access log records route patterns, never raw paths
        "errorlog": "-",
        "loglevel": "info",
        "graceful_timeout": 20,
        "timeout": 60,
        "keepalive": 5,  # seconds: an idle connection kept open, or a request's next packet
        "limit_request_line": 4094,
        "limit_request_fields": 50,
        "post_fork": _post_fork,
        "post_worker_init": _post_worker_init,
        "worker_exit": _worker_exit,
        "pre_request": _pre_request,
        "logger_class": "ledger.api.server.ScrubbingLogger",
        "preload_app": False,
        # gunicorn 25.1+ opens a control socket (~/.gunicorn/gunicorn.ctl) by default, through
        # which its workers can be added, removed or reloaded; a second server on the host takes
        # it over. The ledger is run by its own command and signals: no such socket.
        "control_socket_disable": True,
    }
