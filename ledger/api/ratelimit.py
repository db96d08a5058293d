"""A per-client limit on failed authentications and link guesses.

It is kept in memory in each worker process, so with N workers an address may fail up to N times
the limit before every worker answers 429. That is enough to make guessing 256-bit secrets
pointless and noisy; it is not a defence against a flood (put the server behind a proxy that
limits connections for that).

A client is an IPv4 address, or an IPv6 address's /64 network: one ordinary IPv6 subscriber holds
a whole /64, and counting each address alone let them fail without end. Each worker remembers at
most ``MAX_CLIENTS`` clients (the least recently failing are forgotten first), so a stream of
new addresses cannot grow its memory without bound.
"""

from __future__ import annotations

import ipaddress
import threading
import time
from collections import deque

FAILURES = 20  # failed authentications allowed per client ...
WINDOW = 60.0  # ... in this many seconds; then 429 until the oldest failure ages out
MAX_CLIENTS = 10_000
NAT64 = ipaddress.IPv6Network("64:ff9b::/96")  # RFC 6052's well-known prefix


def client_key(address: str) -> str:
    """Whom failures are counted against: an IPv4 address (also when written IPv4-mapped or
    through NAT64), or the /64 network of an IPv6 address; anything else as it is."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        if ip in NAT64:  # an IPv4 client reached through a NAT64 gateway: that client
            return str(ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF))
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return str(ip)


class FailureLimiter:
    """Count failures per client in a sliding window."""

    def __init__(self, limit: int = FAILURES, window: float = WINDOW,
                 max_clients: int = MAX_CLIENTS) -> None:
        self.limit, self.window, self.max_clients = limit, window, max_clients
        self._failures: dict[str, deque[float]] = {}
        self._lock = threading.Lock()
        self._records = 0

    def _recent(self, client: str, now: float) -> deque[float]:
        q = self._failures.setdefault(client, deque())
        while q and q[0] <= now - self.window:
            q.popleft()
        return q

    def retry_after(self, client: str) -> int:
        """Seconds until this client may try again (0 if it is not blocked)."""
        now = time.monotonic()
        client = client_key(client)
        with self._lock:
            if client not in self._failures:  # asked on every request: remember only failures
                return 0
            q = self._recent(client, now)
            if len(q) < self.limit:
                return 0
            return max(1, int(q[0] + self.window - now) + 1)

    def record(self, client: str) -> None:
        """Note one failed authentication."""
        now = time.monotonic()
        client = client_key(client)
        with self._lock:
            q = self._recent(client, now)
            q.append(now)
            self._failures[client] = self._failures.pop(client)  # now the most recent
            while len(self._failures) > self.max_clients:
                del self._failures[next(iter(self._failures))]  # the least recently failing
            self._records += 1
            if self._records % 1000 == 0:  # forget clients whose failures have all aged out
                stale = [k for k, q in self._failures.items() if not q or q[-1] <= now - self.window]
                for key in stale:
                    del self._failures[key]
