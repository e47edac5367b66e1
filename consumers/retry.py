"""Retries of transient faults: one backoff, one policy, two ways to wait.

Every retry waits :func:`backoff_s` (capped exponential, full jitter). An item's fetch and
decode wait on the pipeline's one :class:`~consumers.scheduler.RetryScheduler` thread and
give up under :class:`RetryPolicy` (the item is then dead-lettered). The sinks (store,
result topic, dead-letter topic) retry inline, without limit, with :func:`retry_transient`:
their batches must land in order, and a writer that waits is the backpressure that pauses
the source while a sink is down (transient faults are never dead-lettered).
"""

from __future__ import annotations

import logging
import random
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from consumers.domain import TransientError

T = TypeVar("T")
log = logging.getLogger(__name__)


def backoff_s(attempt: int, base_s: float = 0.2, cap_s: float = 10.0) -> float:
    """Delay before retry number ``attempt`` (1-based): full jitter under a capped exponential."""
    return random.uniform(base_s, min(cap_s, base_s * 2 ** max(0, attempt - 1)))  # noqa: S311


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How long one item's fetch and decode are retried after transient faults.

    An item is dead-lettered (``retries_exhausted``) once it has had ``max_attempts`` tries
    over at least ``budget_s`` seconds *and* another item succeeded since its first failure:
    the fault then belongs to this item (a key one server node cannot serve, a decoder that
    cannot start for it). While nothing succeeds at all it is an outage, and outages are
    waited out, never dead-lettered (DESIGN.md, delivery rules).
    """

    max_attempts: int = 12
    budget_s: float = 600.0

    def exhausted(self, attempts: int, failing_s: float, others_succeeded: bool) -> bool:
        return attempts >= self.max_attempts and failing_s >= self.budget_s and others_succeeded


class GaveUp(Exception):
    """The retry loop was told to stop (shutdown deadline) before the call succeeded."""


def retry_transient(
    call: Callable[[], T],
    stage: str,
    should_stop: Callable[[], bool],
    on_error: Callable[[str, TransientError], None] | None = None,
    sleeper: threading.Event | None = None,
) -> T:
    """Call ``call`` until it succeeds, retrying :class:`TransientError` without limit.

    Transient faults are never dead-lettered: while a sink is down the pipeline fills up and
    the source pauses. Raises :class:`GaveUp` once ``should_stop()`` is true between attempts.
    """
    attempt = 0
    wait = sleeper or threading.Event()
    while True:
        try:
            return call()
        except TransientError as exc:
            attempt += 1
            if on_error:
                on_error(stage, exc)
            if attempt == 1 or attempt % 10 == 0:
                log.warning(
                    "transient fault, retrying",
                    extra={"stage": stage, "attempt": attempt, "error": str(exc)},
                )
            if should_stop():
                raise GaveUp(stage) from exc
            wait.wait(backoff_s(attempt))
            if should_stop():
                raise GaveUp(stage) from exc
