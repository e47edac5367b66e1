"""Process hardening of the service: its secrets stay in its own memory.

The decode processes start with a minimal environment, but a process of the same user can
read another's initial environment through ``/proc/PID/environ`` (and its memory through
``/proc/PID/mem``) while that process is dumpable. A decoder taken over by a hostile image
would find the database URL and the Kafka password there. ``PR_SET_DUMPABLE`` 0 makes those
files readable by root only (and disables core dumps, which would hold the same secrets).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import sys

log = logging.getLogger(__name__)

_PR_SET_DUMPABLE = 4


def make_undumpable() -> bool:
    """Mark this process not dumpable (Linux); True when it worked. Children started after
    this cannot read its environment or memory through ``/proc``."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
        if libc.prctl(_PR_SET_DUMPABLE, 0, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_DUMPABLE, 0) failed")
    except (OSError, AttributeError) as exc:
        log.warning("could not make the process undumpable", extra={"error": str(exc)})
        return False
    return True
