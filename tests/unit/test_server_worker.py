"""How `ledger serve` sets up each gunicorn worker."""

from __future__ import annotations


def test_a_worker_freezes_what_it_loaded_and_collects_cycles_less_often():
    import gc

    from ledger.api.server import GC_THRESHOLDS, _post_worker_init

    before = gc.get_threshold()
    try:
        _post_worker_init(None)

        assert gc.get_threshold() == GC_THRESHOLDS and GC_THRESHOLDS[0] > 10 * before[0]
        assert gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)


HEAD = b"POST /api/v1/participants HTTP/1.1\r\nHost: x\r\n"


def _chunked(body: bytes) -> bytes:
    return HEAD + b"Transfer-Encoding: chunked\r\n\r\n" + body


def test_a_request_is_whole_once_its_head_and_declared_body_have_come():
    """What a worker waits for before a thread reads a request (see ledger.api.server)."""
    from ledger.api.server import PEEK_UP_TO, _whole

    cases = {
        HEAD: False,  # head not ended
        HEAD + b"\r\n": True,  # no body
        HEAD + b"Content-Length: 10\r\n\r\n12345": False,
        HEAD + b"content-length: 10\r\n\r\n1234567890": True,
        HEAD + f"Content-Length: {PEEK_UP_TO + 1}\r\n\r\n".encode(): True,  # goes as it comes
        HEAD + b"Expect: 100-continue\r\nContent-Length: 10\r\n\r\n": True,
        _chunked(b"7\r\nabcdefg\r\n"): False,
        _chunked(b"7\r\nabcdefg\r\n0\r\n\r\n"): True,
        _chunked(b"7\r\nabcdefg\r\n0\r\nX-Trailer: 1\r\n"): False,
        _chunked(b"7\r\nabcdefg\r\n0\r\nX-Trailer: 1\r\n\r\n"): True,
        _chunked(b"7;name=" + b"a" * 60 + b"\r\nabcdefg\r\n0\r\n\r\n"): True,  # long extension
        _chunked(b"0" * 40 + b"7\r\nabcdefg\r\n0\r\n\r\n"): True,  # leading zeros
        _chunked(b"00000"): False,  # a size line still coming
    }
    assert {request: _whole(request) for request in cases} == cases


def test_what_gunicorn_refuses_is_let_through_at_once_and_never_loops():
    """A malformed request goes to gunicorn's parser at once (it answers 400); a negative or
    otherwise odd chunk size is never walked (-6 walked back and forth for ever)."""
    from ledger.api.server import _whole

    refused = [_chunked(b"-6\r\n"), _chunked(b"+6\r\nabcdef\r\n"), _chunked(b"0x6\r\nabcdef\r\n"),
               _chunked(b"6_0\r\n"), _chunked(b"zz\r\n"),
               b"GET / HTTP/1.1\nHost: x\n\n",  # bare line feeds
               HEAD + b"Content-Length: 0\r\nContent-Length: 10\r\n\r\n",
               HEAD + b"Content-Length: 1e3\r\n\r\n",
               HEAD + b"Content-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n"]

    assert [_whole(request) for request in refused] == [True] * len(refused)
