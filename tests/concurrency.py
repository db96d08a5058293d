"""Run callables at the same moment on real threads and collect what each returned or raised."""

from __future__ import annotations

import threading
from collections.abc import Callable


def race(commands: list[Callable[[], object]], timeout: float = 120) -> list[object]:
    """Start every command together (a barrier); each outcome is its result or its exception."""
    barrier = threading.Barrier(len(commands))
    outcomes: list[object] = [None] * len(commands)

    def run(i: int, command: Callable[[], object]) -> None:
        barrier.wait()
        try:
            outcomes[i] = command()
        except Exception as e:  # noqa: BLE001 - the caller inspects every outcome
            outcomes[i] = e

    threads = [threading.Thread(target=run, args=(i, c)) for i, c in enumerate(commands)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=timeout)
    return outcomes
