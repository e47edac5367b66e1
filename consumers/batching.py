"""Micro-batching: full batches under load, low latency when idle."""

from __future__ import annotations

import queue
import time
from typing import TypeVar

T = TypeVar("T")


def collect_batch(
    source: queue.Queue[T], max_size: int, max_wait_s: float, idle_timeout_s: float
) -> list[T]:
    """Take up to ``max_size`` items from ``source``.

    Blocks up to ``idle_timeout_s`` for the first item (returns ``[]`` if none came), then waits
    at most ``max_wait_s`` more to fill the batch, and returns at once when it is full. Items
    already queued are always taken without waiting, so under load batches are full.
    """
    try:
        first = source.get(timeout=idle_timeout_s)
    except queue.Empty:
        return []
    batch = [first]
    deadline = time.monotonic() + max_wait_s
    while len(batch) < max_size:
        try:
            batch.append(source.get_nowait())
            continue
        except queue.Empty:
            pass
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            break
        try:
            batch.append(source.get(timeout=remaining))
        except queue.Empty:
            break
    return batch
