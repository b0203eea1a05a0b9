"""Caps on long-polls (`GET ...?wait=N`), per token and per web process.

Each wait holds a web thread for up to two minutes. Without a cap, a few dozen
waits from one token take every thread of every process, and the API, the
webhook, the dashboard and the liveness probe queue behind them. A wait beyond
a cap is refused at once with 429 and Retry-After; a caller can poll instead.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager

RETRY_AFTER_SECONDS = 5


class WaitSlots:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._total = 0
        self._per_key: Counter[object] = Counter()

    @contextmanager
    def hold(self, key: object, per_key: int, total: int) -> Iterator[str]:
        """Yields "" while holding a slot, or the reason none is free (then nothing is held)."""
        with self._lock:
            if self._per_key[key] >= per_key:
                reason = f"this token already holds {self._per_key[key]} waiting requests, its maximum"
            elif self._total >= total:
                reason = f"{self._total} requests are already waiting, the most this server holds"
            else:
                reason = ""
                self._per_key[key] += 1
                self._total += 1
        if reason:
            yield reason
            return
        try:
            yield ""
        finally:
            with self._lock:
                self._per_key[key] -= 1
                if not self._per_key[key]:
                    del self._per_key[key]
                self._total -= 1

    @property
    def held(self) -> int:
        return self._total


SLOTS = WaitSlots()
