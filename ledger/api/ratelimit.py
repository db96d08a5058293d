"""A per-client limit on failed authentications (per worker process, in memory)."""

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
            if len(self._failures) > 10_000:  # forget idle clients rather than grow forever
                for key in [k for k, v in self._failures.items() if not v]:
                    del self._failures[key]
