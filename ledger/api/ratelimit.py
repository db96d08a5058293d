"""A per-client limit on failed authentications and link guesses.

It is kept in memory in each worker process, so with N workers an address may fail up to N times
the limit before every worker answers 429. That is enough to make guessing 256-bit secrets
pointless and noisy; it is not a defence against a flood (put the server behind a proxy that
limits connections for that).
"""

from __future__ import annotations

import threading
import time
from collections import deque

FAILURES = 20  # failed authentications allowed per client ...
WINDOW = 60.0  # ... in this many seconds; then 429 until the oldest failure ages out


class FailureLimiter:
    """Count failures per client in a sliding window."""

    def __init__(self, limit: int = FAILURES, window: float = WINDOW) -> None:
        self.limit, self.window = limit, window
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
        with self._lock:
            q = self._recent(client, now)
            if len(q) < self.limit:
                return 0
            return max(1, int(q[0] + self.window - now) + 1)

    def record(self, client: str) -> None:
        """Note one failed authentication."""
        now = time.monotonic()
        with self._lock:
            self._recent(client, now).append(now)
            self._records += 1
            if self._records % 1000 == 0:  # forget clients whose failures have all aged out
                stale = [k for k, q in self._failures.items() if not q or q[-1] <= now - self.window]
                for key in stale:
                    del self._failures[key]
