"""One thread that runs callbacks after a delay: where items wait for their next retry.

Why: a ``threading.Timer`` per waiting item is one OS thread per item, and a burst of failing
fetches (an S3 outage under a full backlog) would start thousands of them.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import threading
import time
from collections.abc import Callable

log = logging.getLogger(__name__)


class RetryScheduler:
    """Runs each ``call_later`` callback on its own thread, in due order, after its delay.

    Callbacks must be quick (they hand the item back to a pool). One that raises is logged and
    the others still run. :meth:`close` drops what has not run yet.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._heap: list[tuple[float, int, Callable[[], None]]] = []
        self._order = itertools.count()
        self._wake = threading.Condition()
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="retry-scheduler", daemon=True)
        self._thread.start()

    def call_later(self, delay_s: float, callback: Callable[[], None]) -> None:
        with self._wake:
            if self._closed:
                return
            heapq.heappush(self._heap, (self._clock() + delay_s, next(self._order), callback))
            self._wake.notify()

    def __len__(self) -> int:
        with self._wake:
            return len(self._heap)

    def close(self) -> None:
        with self._wake:
            self._closed = True
            self._heap.clear()
            self._wake.notify()
        self._thread.join(5)

    def _run(self) -> None:
        while True:
            with self._wake:
                while not self._closed and (not self._heap or self._heap[0][0] > self._clock()):
                    timeout = self._heap[0][0] - self._clock() if self._heap else None
                    self._wake.wait(timeout)
                if self._closed:
                    return
                _, _, callback = heapq.heappop(self._heap)
            try:
                callback()
            except Exception:  # noqa: BLE001 - one bad callback must not stop the others
                log.exception("retry callback failed")
