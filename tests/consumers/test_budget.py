"""The byte budget bounds what is held at once, lets one oversized item through alone, and
wakes waiters on close."""

from __future__ import annotations

import random
import threading
import time

import pytest

from consumers.budget import BudgetClosed, ByteBudget


def test_concurrent_reservations_never_exceed_the_limit() -> None:
    budget = ByteBudget(1000)
    rng = random.Random(3)
    sizes = [rng.randint(1, 400) for _ in range(400)]

    def work(size: int) -> None:
        budget.reserve(size)
        time.sleep(0.0005)
        budget.release(size)

    threads = [threading.Thread(target=work, args=(s,)) for s in sizes]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert budget.used == 0
    assert 400 <= budget.peak <= 1000


def test_an_oversized_reservation_waits_for_an_empty_budget_then_passes() -> None:
    budget = ByteBudget(100)
    budget.reserve(60)
    got = threading.Event()

    def reserve_then_signal() -> None:
        budget.reserve(500)
        got.set()

    waiter = threading.Thread(target=reserve_then_signal)
    waiter.start()
    assert not got.wait(0.1)
    budget.release(60)
    assert got.wait(5) and budget.used == 500


def test_close_wakes_waiters() -> None:
    budget = ByteBudget(10)
    budget.reserve(10)
    errors: list[BaseException] = []

    def wait() -> None:
        try:
            budget.reserve(5)
        except BudgetClosed as exc:
            errors.append(exc)

    waiter = threading.Thread(target=wait)
    waiter.start()
    time.sleep(0.05)
    budget.close()
    waiter.join(5)
    assert len(errors) == 1
    with pytest.raises(BudgetClosed):
        budget.reserve(1)
