"""The process-wide stop request, set by SIGTERM or SIGINT.

Installed first thing by the ``consume`` command, before the heavy imports (torch), so a
SIGTERM at any moment of start-up leads to a clean exit 0 instead of death by signal.
"""

from __future__ import annotations

import logging
import signal
import threading
from typing import Any

STOP = threading.Event()
log = logging.getLogger(__name__)


def install_signal_handlers() -> None:
    def handle(signum: int, _frame: Any) -> None:
        log.info("signal received, draining", extra={"signal": signal.Signals(signum).name})
        STOP.set()

    signal.signal(signal.SIGTERM, handle)
    signal.signal(signal.SIGINT, handle)
