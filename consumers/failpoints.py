"""Test-only failpoints: inject a crash, a stall or an error at a named point of the pipeline.

Off unless the environment variable ``TAGFLEET_FAILPOINTS`` is set when this module is first
imported; :func:`hit` is then a no-op. The fault suite (``tests/faults``) sets it on the
consumer processes it starts. Never set it in production.

Syntax: comma-separated ``POINT=ACTION[:ARG][@FROM][xTIMES][~MATCH]``::

    after_store=kill:0.3        SIGKILL the process with probability 0.3 at each hit
    predict=raise               raise FailpointError at every hit (a head that always fails)
    infer=sleep:40@2x1          sleep 40 s at the 2nd hit only
    store=raise~poison          raise at hits whose asset ids include one containing "poison"

``FROM`` is the 1-based hit from which the action may trigger (default 1); ``TIMES`` is how
many times it may trigger (default: unlimited); ``kill`` and ``raise`` take a probability
(default 1), ``sleep`` takes seconds. Points (see ``consumers/stages/``): ``fetch`` (before an
S3 GET), ``decode``, ``decode_process`` (in a decode child process before it decodes: a
``kill`` there kills that child only), ``predict`` (every call of the fleet, canary included),
``after_infer`` (predictions made, not yet handed to the store), ``after_store`` (store written
and result published, offsets not yet committed), ``store`` (in the store's save and remove,
with their asset ids; a ``raise`` there is a database error of an unknown kind),
``kafka_fetch`` (each partition a poll returned, as ``topic/partition``: a ``raise`` there
withholds its records, so that a poll never returns the partition). Every
trigger is logged (``failpoint``) before it acts.
"""

from __future__ import annotations

import logging
import os
import random
import signal
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

log = logging.getLogger(__name__)

ENV = "TAGFLEET_FAILPOINTS"
POINTS = frozenset(
    {
        "fetch",
        "kafka_fetch",
        "decode",
        "decode_process",
        "predict",
        "after_infer",
        "after_store",
        "store",
    }
)
_ACTIONS = frozenset({"kill", "sleep", "raise"})


class FailpointError(RuntimeError):
    """Raised by a ``raise`` failpoint."""


@dataclass(slots=True)
class Failpoint:
    action: str
    arg: float
    start: int = 1
    times: int | None = None
    match: str | None = None
    hits: int = 0
    triggered: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def should_trigger(self) -> bool:
        with self.lock:
            self.hits += 1
            if self.hits < self.start or (self.times is not None and self.triggered >= self.times):
                return False
            if self.action != "sleep" and random.random() >= self.arg:  # noqa: S311
                return False
            self.triggered += 1
            return True


def parse(spec: str) -> dict[str, Failpoint]:
    """``POINT=ACTION[:ARG][@FROM][xTIMES],...`` -> failpoints; raises ValueError when malformed."""
    points: dict[str, Failpoint] = {}
    for part in filter(None, (p.strip() for p in spec.split(","))):
        name, sep, rule = part.partition("=")
        if not sep or name not in POINTS:
            raise ValueError(f"{ENV}: unknown failpoint {name!r} (known: {sorted(POINTS)})")
        rule, _, match = rule.partition("~")
        times = None
        if "x" in rule:
            rule, _, count = rule.rpartition("x")
            times = int(count)
        start = 1
        if "@" in rule:
            rule, _, first = rule.partition("@")
            start = int(first)
        action, _, arg = rule.partition(":")
        if action not in _ACTIONS:
            raise ValueError(f"{ENV}: unknown action {action!r} (known: {sorted(_ACTIONS)})")
        if action == "sleep" and not arg:
            raise ValueError(f"{ENV}: sleep needs seconds: {part!r}")
        points[name] = Failpoint(action, float(arg or 1.0), start, times, match or None)
    return points


_ACTIVE: dict[str, Failpoint] = parse(os.environ.get(ENV, ""))
ACTIVE = bool(_ACTIVE)  # any failpoint set: callers may skip work done only for one


def hit(name: str, subjects: Sequence[str] = ()) -> None:
    """Act on failpoint ``name`` if it is configured; nothing (one dict lookup) otherwise.

    A failpoint with a ``~MATCH`` acts only at hits whose ``subjects`` (asset ids, or
    ``topic/partition`` for ``kafka_fetch``) include one containing MATCH.
    """
    point = _ACTIVE.get(name) if _ACTIVE else None
    if point is None:
        return
    if point.match is not None and not any(point.match in s for s in subjects):
        return
    if not point.should_trigger():
        return
    log.warning("failpoint", extra={"point": name, "action": point.action, "hit": point.hits})
    if point.action == "kill":
        for handler in logging.getLogger().handlers:
            handler.flush()
        os.kill(os.getpid(), signal.SIGKILL)
    elif point.action == "sleep":
        time.sleep(point.arg)
    else:
        raise FailpointError(f"failpoint {name} (hit {point.hits})")
