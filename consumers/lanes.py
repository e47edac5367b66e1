"""Priority lanes: the upload lane first, the backfill lane with the capacity uploads leave.

Uploads (bucket notifications, the topic ``topic``) and backfill (``tagfleet publish``, the
topic ``backfill_topic``) are two topics of one consumer group. This module decides, before
each poll, how many backfill messages the loop may take now; the loop pauses the backfill
partitions when the answer is 0 and hands back (rewinds) the backfill records past it. It is
pure logic: no Kafka, no clock of its own (the loop passes ``now``).

The rules (docs/operations.md, "Priority lanes"):

- backfill never holds more than ``backfill_max_in_flight`` messages between poll and
  completion, so an upload that arrives waits behind at most that many in the stages;
- while the upload lane is busy (upload messages in flight, or one polled less than
  ``quiet_s`` ago), backfill takes nothing new, except its minimum share: of the last
  ``window`` messages dispatched, at least ``min_share`` are backfill, so a steady stream of
  uploads never starves it for ever;
- when uploads are quiet, backfill takes whatever room its bound leaves.

Every delivery rule stays the loop's: a paused or rewound record is fetched again later from
the same offset, so commits, order per object and the dead-letter path do not change.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Collection, Sequence
from dataclasses import dataclass

UPLOAD = "upload"
BACKFILL = "backfill"
LANES = (UPLOAD, BACKFILL)


def present_lanes(topics: Sequence[str], existing: Collection[str]) -> list[str]:
    """The topics to subscribe to: the upload lane's (first) always, the backfill lane's only
    when the cluster has it at start, so that a subscription never makes one on a cluster
    that creates topics on demand; without it the upload lane alone is served."""
    return [topic for i, topic in enumerate(topics) if i == 0 or topic in existing]


@dataclass(frozen=True, slots=True)
class LaneLimits:
    """The lane settings (``Settings.backfill_*``)."""

    backfill_max_in_flight: int
    min_share: float
    quiet_s: float
    window: int = 100

    def __post_init__(self) -> None:
        if self.backfill_max_in_flight < 1:
            raise ValueError("backfill_max_in_flight must be at least 1")
        if not 0.0 <= self.min_share <= 1.0:
            raise ValueError("min_share must be between 0 and 1")
        if self.quiet_s < 0 or self.window < 1:
            raise ValueError("quiet_s must be >= 0 and window >= 1")


class LanePolicy:
    """How many backfill messages the loop may take now. Called from the loop's thread."""

    def __init__(self, limits: LaneLimits) -> None:
        self.limits = limits
        self._recent: deque[str] = deque(maxlen=limits.window)
        self._backfill_recent = 0
        self._last_upload = -math.inf

    def note_dispatched(self, lane: str, count: int, now: float) -> None:
        """``count`` messages of ``lane`` were taken into the stages at ``now``."""
        if lane not in LANES:
            raise ValueError(f"unknown lane {lane!r}")
        if lane == UPLOAD and count > 0:
            self._last_upload = now
        for _ in range(min(count, self.limits.window)):
            if len(self._recent) == self._recent.maxlen and self._recent[0] == BACKFILL:
                self._backfill_recent -= 1
            self._recent.append(lane)
            self._backfill_recent += lane == BACKFILL

    def uploads_busy(self, upload_in_flight: int, now: float) -> bool:
        """Upload work in flight, or an upload taken less than ``quiet_s`` ago."""
        return upload_in_flight > 0 or now - self._last_upload < self.limits.quiet_s

    def backfill_share(self) -> float:
        """Backfill's share of the last ``window`` messages dispatched (1.0 when none)."""
        return self._backfill_recent / len(self._recent) if self._recent else 1.0

    def backfill_allowance(self, upload_in_flight: int, backfill_in_flight: int, now: float) -> int:
        """Backfill messages the loop may take now (0: pause the backfill partitions)."""
        room = max(0, self.limits.backfill_max_in_flight - backfill_in_flight)
        if room == 0 or not self.uploads_busy(upload_in_flight, now):
            return room
        share, n, b = self.limits.min_share, len(self._recent), self._backfill_recent
        if share <= 0.0 or n == 0 or b >= share * n:
            return 0
        if share >= 1.0:
            return room
        # the fewest x with (b + x) / (n + x) >= share, at least one
        needed = math.ceil((share * n - b) / (1.0 - share) - 1e-9)
        return min(room, max(1, needed))
