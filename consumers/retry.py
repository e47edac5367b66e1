"""Retry of transient faults with capped exponential backoff and jitter."""

from __future__ import annotations

import logging
import random
import threading
from collections.abc import Callable
from typing import TypeVar

from consumers.domain import TransientError

T = TypeVar("T")
log = logging.getLogger(__name__)


def backoff_s(attempt: int, base_s: float = 0.2, cap_s: float = 10.0) -> float:
    """Delay before retry number ``attempt`` (1-based): full jitter under a capped exponential."""
    return random.uniform(base_s, min(cap_s, base_s * 2 ** max(0, attempt - 1)))  # noqa: S311


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
