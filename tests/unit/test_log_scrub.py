"""The server's own log lines lose client addresses and link tokens, and keep everything else."""

from __future__ import annotations

import pytest

from ledger.api.server import scrub


@pytest.mark.parametrize("address", [
    "10.0.0.1", "192.168.100.254", "::1", "::", "fe80::1", "2001:db8::1", "2001:db8:0:0:1::",
    "2001:0db8:85a3:0000:0000:8a2e:0370:7334", "::ffff:10.0.0.1", "64:ff9b::192.0.2.33",
])
def test_every_kind_of_client_address_is_removed(address):
    line = f"Invalid request from ip={address}: Invalid HTTP request line"

    assert scrub(line) == "Invalid request from ip=<address>: Invalid HTTP request line"


@pytest.mark.parametrize("line", [
    "Worker (pid:11773) was sent SIGTERM!",  # gunicorn's own message, which lost its pid before
    "Booting worker with pid: 4242",
    "Listening at: http://127.0.0.1:8000 (11772)".replace("127.0.0.1", "localhost"),
    "finished at 01:28:43 after 12:30",
    "deadbeef and cafe: not addresses",
])
def test_lines_without_an_address_are_kept_as_they_are(line):
    assert scrub(line) == line


def test_a_link_token_in_a_path_is_removed():
    assert scrub("GET /my/Q2x9abc/withdraw HTTP/1.1") == "GET /my/<token>/withdraw HTTP/1.1"


def _server_logger(level: str):  # type: ignore[no-untyped-def]
    import logging

    from gunicorn.config import Config

    from ledger.api.server import ScrubbingLogger

    cfg = Config()
    cfg.set("loglevel", level)
    logger = ScrubbingLogger(cfg)
    lines: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: lines.append(record.getMessage())  # type: ignore[method-assign]
    logger.error_log.handlers = [handler]
    return logger, lines


def test_the_server_log_scrubs_what_it_writes_and_skips_levels_it_does_not():
    class NeverFormatted:
        def __str__(self) -> str:
            raise AssertionError("a debug line was formatted at info level")

    logger, lines = _server_logger("info")

    logger.debug(NeverFormatted())  # what gunicorn does for every request
    logger.info("GET %s from %s", "/my/secret-token", "10.1.2.3")
    logger.error("Invalid request from ip=%s", "::ffff:10.0.0.1")

    assert lines == ["GET /my/<token> from <address>", "Invalid request from ip=<address>"]



def test_at_debug_level_the_server_logs_no_request_path():
    """gunicorn's default hook logs every request's raw path at debug level; a path can hold a
    mistyped name (a review found one in a debug log) or a link token. The server's own hook
    logs the method alone."""
    from types import SimpleNamespace

    from gunicorn.config import Config

    from ledger.api.server import options

    logger, lines = _server_logger("debug")
    worker = SimpleNamespace(log=logger)
    request = SimpleNamespace(method="GET", path="/api/v1/participants/Zebediah%20Quillfeather")

    Config().pre_request(worker, request)  # gunicorn's own: the path
    options("127.0.0.1", 8000, 2)["pre_request"](worker, request)

    assert lines == ["GET /api/v1/participants/Zebediah%20Quillfeather", "GET request"]
