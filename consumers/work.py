"""In-flight bookkeeping: messages, the work items they carry, and per-asset ordering.

Pure data and logic; owned by the pipeline's source thread except where noted.
"""

from __future__ import annotations

import queue
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from consumers.domain import AssetRemoval, AssetRequest, SourcePosition
from consumers.sequencer import is_older


@dataclass(eq=False, slots=True)
class Message:
    """One Kafka record between poll and commit. ``pending`` counts its unfinished items.

    ``position`` is None for work with no Kafka record behind it (``tagfleet tag``)."""

    position: SourcePosition | None
    key: bytes | None
    value: bytes | None
    timestamp_ms: int | None = None
    polled_at: float = field(default_factory=time.monotonic)
    pending: int = 0
    items: int = 0  # work items the message became (records of a notification)
    failures: list[tuple[str | None, Any]] = field(default_factory=list)  # (asset id, error)
    backfill: bool = False  # from the backfill lane: the stages serve the upload lane first


@dataclass(eq=False, slots=True)
class WorkItem:
    """One asset of a message as it moves through fetch, decode, inference and the sinks."""

    @property
    def event_time(self) -> datetime | None:
        """When the asset event happened: its ``event_time``, else the Kafka record timestamp."""
        stated = getattr(self.request, "event_time", None)
        if stated is not None:
            return stated if stated.tzinfo else stated.replace(tzinfo=UTC)
        if self.message.timestamp_ms is not None and self.message.timestamp_ms > 0:
            try:  # a producer chooses CreateTime: year 146140482 must not crash a stage
                return datetime.fromtimestamp(self.message.timestamp_ms / 1000, UTC)
            except (OverflowError, OSError, ValueError):
                return None
        return None

    message: Message
    request: AssetRequest | AssetRemoval | None
    attempts: int = 0
    failing_since: float | None = None  # monotonic time of the first transient failure
    reserved: int = 0  # bytes of the raw-bytes budget this item holds
    aggregate: bool = False  # the one dead letter of a message whose records failed
    gate_key: str | None = None  # the asset id the KeyGate admitted it under
    missing_checks: int = 0  # times its object was found missing, waiting for a removal
    data: bytes | None = None
    etag: str | None = None  # the ETag of the bytes fetched (the event's may be stale)
    content_hash: str | None = None  # SHA-256 (hex) of the bytes fetched
    decoded: Any = None

    @property
    def asset_id(self) -> str | None:
        """The asset's id, or None for a message that did not parse."""
        return None if self.request is None else self.request.asset_id


class KeyGate:
    """Keeps the items of one asset in offset order: at most one in the pipeline at a time.

    A create then a remove of the same object in one partition must apply in that order even
    though fetches finish out of order. ``admit`` returns the item when it may start now, or
    None when it waits; ``release`` returns the next waiting item of that asset, if any.
    The loop thread admits and releases; :meth:`removal_waits` may be asked from any thread.
    """

    def __init__(self) -> None:
        self._waiting: dict[str, deque[WorkItem]] = {}
        self._lock = threading.Lock()

    def admit(self, item: WorkItem) -> WorkItem | None:
        assert item.asset_id is not None
        item.gate_key = item.asset_id  # kept: the fetch may find the object by another key
        with self._lock:
            queue = self._waiting.get(item.gate_key)
            if queue is None:
                self._waiting[item.gate_key] = deque()
                return item
            queue.append(item)
            return None

    def release(self, item: WorkItem) -> WorkItem | None:
        key = item.gate_key
        with self._lock:
            queue = self._waiting.get(key) if key is not None else None
            if queue is None:
                return None
            if queue:
                return queue.popleft()
            del self._waiting[key]  # type: ignore[arg-type]
            return None

    def removal_waits(self, asset_id: str, sequencer: str | None) -> bool:
        """Whether a removal of ``asset_id`` newer than ``sequencer`` waits behind the item
        in the pipeline (a create whose object is gone: the Delete that followed it was
        polled after it); False for an unordered create."""
        if sequencer is None:
            return False
        with self._lock:
            waiting = list(self._waiting.get(asset_id, ()))
        return any(
            isinstance(w.request, AssetRemoval) and is_older(sequencer, w.request.sequencer)
            for w in waiting
        )

    def __len__(self) -> int:
        return len(self._waiting)


class LaneQueue(queue.Queue[WorkItem]):
    """A FIFO of work items per priority lane, uploads taken first (``Message.backfill``);
    ``maxsize`` bounds both together. The queue between decode and inference."""

    def _init(self, maxsize: int) -> None:
        self._uploads: deque[WorkItem] = deque()
        self._backfill: deque[WorkItem] = deque()

    def _qsize(self) -> int:
        return len(self._uploads) + len(self._backfill)

    def _put(self, item: WorkItem) -> None:
        (self._backfill if item.message.backfill else self._uploads).append(item)

    def _get(self) -> WorkItem:
        return self._uploads.popleft() if self._uploads else self._backfill.popleft()
