"""What every stage shares: its outlets and a worker thread whose crash stops the service."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass

from consumers.domain import (
    PermanentError,
)
from consumers.metrics import Metrics
from consumers.work import WorkItem

log = logging.getLogger(__name__)


Finish = Callable[[WorkItem, str], None]
Fail = Callable[[WorkItem, PermanentError], None]


@dataclass(frozen=True, slots=True)
class Outlets:
    """Where a stage hands an item it is done with, and what it counts.

    Every item that enters a stage leaves it through exactly one of: the next stage's queue,
    ``fail`` (a permanent error: dead-letter it) or ``finish`` (stored, removed,
    dead-lettered or abandoned at shutdown).
    """

    fail: Fail
    finish: Finish
    metrics: Metrics


class Stage:
    """One worker thread. An unexpected exception in it calls ``on_crash`` (the pipeline
    stops with exit 3 and /healthz turns red) instead of leaving a dead thread behind while
    the consume loop keeps turning and nothing drains."""

    on_crash: Callable[[str], None] | None = None
    _thread: threading.Thread

    def _spawn(self, name: str) -> None:
        self._thread = threading.Thread(target=self._guarded, name=name, daemon=True)

    def _run(self) -> None:
        raise NotImplementedError

    def _guarded(self) -> None:
        try:
            self._run()
        except Exception as exc:  # noqa: BLE001 - any crash must stop the service visibly
            self.crashed(self._thread.name, exc)

    def crashed(self, where: str, exc: BaseException) -> None:
        """Report a crash of this stage (or of a pool it runs) and stop the service."""
        log.critical("pipeline stage crashed", exc_info=exc, extra={"stage": where})
        if self.on_crash is not None:
            self.on_crash(f"the {where} stage crashed: {exc!r}")

    def start(self) -> None:
        self._thread.start()
