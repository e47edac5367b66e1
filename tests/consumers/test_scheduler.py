"""The retry scheduler: one thread, callbacks in due order, none after close."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import cast

from consumers.scheduler import RetryScheduler


def test_callbacks_run_in_due_order_on_one_thread() -> None:
    scheduler = RetryScheduler()
    ran: list[tuple[str, str]] = []
    done = threading.Event()
    before = threading.active_count()
    for name, delay in (("c", 0.15), ("a", 0.01), ("b", 0.05)):

        def record(n: str = name) -> None:
            ran.append((n, threading.current_thread().name))

        scheduler.call_later(delay, record)
    scheduler.call_later(0.2, done.set)
    assert threading.active_count() == before  # no thread per waiting callback
    assert done.wait(5)
    assert [n for n, _ in ran] == ["a", "b", "c"]
    assert {t for _, t in ran} == {"retry-scheduler"}
    scheduler.close()


def test_a_failing_callback_does_not_stop_the_others_and_close_drops_the_rest() -> None:
    scheduler = RetryScheduler()
    ran: list[int] = []
    scheduler.call_later(0.0, cast(Callable[[], None], lambda: 1 / 0))
    scheduler.call_later(0.02, lambda: ran.append(1))
    scheduler.call_later(30, lambda: ran.append(2))
    deadline = time.monotonic() + 5
    while not ran and time.monotonic() < deadline:
        time.sleep(0.01)
    assert ran == [1] and len(scheduler) == 1
    scheduler.close()
    assert len(scheduler) == 0
    scheduler.call_later(0, lambda: ran.append(3))
    time.sleep(0.05)
    assert ran == [1]
