"""Per-partition offset watermarks: commit only below the first unfinished message.

Pure and single-threaded: the consumer loop owns these objects (completions from worker threads
are handed back to it before calling :meth:`PartitionWatermark.done`).
"""

from __future__ import annotations

import heapq
from collections.abc import Hashable, Iterable
from typing import Generic, TypeVar

P = TypeVar("P", bound=Hashable)


class PartitionWatermark:
    """Offsets of one partition handed to the pipeline, and the next offset safe to commit.

    Offsets are tracked in increasing order (gaps allowed, as on compacted or transactional
    topics) and finished in any order. Memory is proportional to the unfinished offsets: finished
    ones are forgotten, the heap is compacted when it holds more finished entries than live ones.
    """

    __slots__ = ("_unfinished", "_heap", "_last_tracked", "_committed")

    def __init__(self) -> None:
        self._unfinished: set[int] = set()
        self._heap: list[int] = []
        self._last_tracked: int | None = None
        self._committed: int | None = None

    def track(self, offset: int) -> None:
        """Record that ``offset`` was handed to the pipeline.

        Raises ``ValueError`` when ``offset`` is not above the last tracked one (after a seek
        back, call :meth:`reset` first).
        """
        if self._last_tracked is not None and offset <= self._last_tracked:
            raise ValueError(f"offset {offset} tracked after {self._last_tracked}")
        if offset < 0:
            raise ValueError(f"negative offset {offset}")
        self._last_tracked = offset
        self._unfinished.add(offset)
        heapq.heappush(self._heap, offset)

    def done(self, offset: int) -> bool:
        """Record that ``offset``'s result is stored or its DLQ record acknowledged.

        Returns False, changing nothing, for an offset that is not in flight: already done, or
        tracked before a :meth:`reset` (late completions of revoked work are harmless).
        """
        if offset not in self._unfinished:
            return False
        self._unfinished.remove(offset)
        if len(self._heap) > 2 * len(self._unfinished) + 16:
            self._heap = sorted(self._unfinished)
        return True

    def commit_offset(self) -> int | None:
        """The next offset to commit (Kafka's "next message to read"), or None when nothing new.

        That is the lowest unfinished offset, or the last tracked + 1 when all are done. Each
        value is returned once: the watermark remembers it as committed. If the commit then
        fails, call :meth:`commit_failed` so that the next call offers it again.
        """
        candidate = self._candidate()
        if candidate is None or (self._committed is not None and candidate <= self._committed):
            return None
        self._committed = candidate
        return candidate

    def commit_failed(self, offset: int) -> None:
        """Forget that ``offset`` was committed (the commit request failed)."""
        if self._committed == offset:
            self._committed = None

    def reset(self) -> None:
        """Forget everything (partition revoked, or the consumer seeked)."""
        self._unfinished.clear()
        self._heap.clear()
        self._last_tracked = None
        self._committed = None

    @property
    def in_flight(self) -> int:
        """How many tracked offsets are not done yet."""
        return len(self._unfinished)

    def _candidate(self) -> int | None:
        heap = self._heap
        while heap and heap[0] not in self._unfinished:
            heapq.heappop(heap)
        if heap:
            return heap[0]
        return None if self._last_tracked is None else self._last_tracked + 1


class Watermarks(Generic[P]):
    """A :class:`PartitionWatermark` per partition, keyed by ``(topic, partition)`` tuples.

    kafka-python's ``TopicPartition`` is such a tuple, so it can be used directly as the key.
    """

    def __init__(self) -> None:
        self._partitions: dict[P, PartitionWatermark] = {}

    def track(self, partition: P, offset: int) -> None:
        """See :meth:`PartitionWatermark.track`."""
        self._partitions.setdefault(partition, PartitionWatermark()).track(offset)

    def done(self, partition: P, offset: int) -> bool:
        """See :meth:`PartitionWatermark.done`; False for a partition not tracked."""
        watermark = self._partitions.get(partition)
        return watermark is not None and watermark.done(offset)

    def commit_offsets(self) -> dict[P, int]:
        """Next offset to commit for every partition that advanced since the last call."""
        offsets = {tp: wm.commit_offset() for tp, wm in self._partitions.items()}
        return {tp: offset for tp, offset in offsets.items() if offset is not None}

    def commit_failed(self, offsets: dict[P, int]) -> None:
        """Offer ``offsets`` (as returned by :meth:`commit_offsets`) again on the next call."""
        for tp, offset in offsets.items():
            if tp in self._partitions:
                self._partitions[tp].commit_failed(offset)

    def partitions(self) -> list[P]:
        """The partitions tracked now."""
        return list(self._partitions)

    def revoke(self, partitions: Iterable[P]) -> None:
        """Drop the state of revoked partitions; their late completions are then ignored."""
        for tp in partitions:
            self._partitions.pop(tp, None)

    def in_flight(self) -> int:
        """Unfinished messages over all partitions (the ``tagfleet_in_flight`` gauge)."""
        return sum(wm.in_flight for wm in self._partitions.values())

    def __contains__(self, partition: object) -> bool:
        return partition in self._partitions
