"""Store, then publish, then finish: the write stage, which attributes refusals to items."""

from __future__ import annotations

import contextlib
import functools
import logging
import queue
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime
from typing import Any

from consumers import failpoints
from consumers.batching import collect_batch
from consumers.domain import (
    AssetRemoval,
    AssetResult,
    PermanentError,
    Reason,
)
from consumers.ports import (
    EmbeddingSink,
    OutRecord,
    RecordProducer,
    StaleEvent,
    Store,
    StoreUnusable,
)
from consumers.results import encode_event, removal_event, result_event
from consumers.retag.active import ActiveMappings
from consumers.retry import GaveUp, retry_transient
from consumers.stages.base import Outlets, Stage
from consumers.work import WorkItem

log = logging.getLogger(__name__)


class _Rejected(Exception):
    """A sink refused a group for a reason not known to be transient."""

    def __init__(self, sink: str, error: Exception) -> None:
        super().__init__(f"{sink}: {type(error).__name__}: {error}")
        self.sink, self.error = sink, error


class Storer(Stage):
    """Writes results (and removals) to the store in one transaction per drained group, then
    publishes their result events and waits for the acks; only then are the items finished.

    A group that a sink refuses with an error not known to be transient is split in halves
    and each half written again, down to the item at fault, which is dead-lettered
    (``store_rejected`` or ``publish_rejected``) while the rest of its group is stored: one
    hostile event cannot stop the service. It stays fatal when no item can be at fault: the
    store refuses writes whatever the row (:class:`StoreUnusable`: a revoked grant, a
    read-only database, SQLSTATE classes 0A/28/3D/42), the store is not at its schema
    (:class:`SchemaMissing`, checked before any dead letter), or ``max_rejections`` items in a
    row are refused with nothing stored in between (a bug), which stops the service instead
    of dead-lettering the topic.
    """

    def __init__(
        self,
        *,
        store: Store,
        producer: RecordProducer | None,
        results_topic: str,
        inbox: queue.Queue[tuple[WorkItem, AssetResult | None]],
        out: Outlets,
        abandon: threading.Event,
        max_rejections: int = 8,
        max_group: int = 512,
        review: Callable[[Sequence[AssetResult]], None] | None = None,
        embeddings: EmbeddingSink | None = None,
    ) -> None:
        """``abandon``: set at the end of shutdown; retries stop and the group is abandoned.
        ``review``: called with the results of a group once stored and published, before its
        items finish; it must not raise (``consumers.review.queue.ReviewQueue``).
        ``embeddings``: where the images' pooled embeddings go, after the store and before
        the result events (a removal drops them); ``None``: not kept."""
        self._embeddings = embeddings
        self._store, self._producer, self._topic = store, producer, results_topic
        self._inbox, self._fail, self._finish = inbox, out.fail, out.finish
        self._metrics, self._give_up, self._max_group = out.metrics, abandon.is_set, max_group
        self._max_rejections, self._rejected_in_a_row = max_rejections, 0
        self._review = review
        load = getattr(store, "active_mappings", None)  # taxonomy and thresholds (retag)
        self._mappings = None if load is None else ActiveMappings(load)
        self._spawn("store")

    def _run(self) -> None:
        while not self._give_up():
            group = collect_batch(self._inbox, self._max_group, 0.0, 0.1)
            if not group:
                continue
            try:
                self._write_isolating(group)
            except GaveUp:
                return

    def _write_isolating(self, group: list[tuple[WorkItem, AssetResult | None]]) -> None:
        """Write ``group``, or find and dead-letter the items a sink refuses. Raises
        :class:`GaveUp` at shutdown, with this group's items abandoned (those of halves
        already written were finished)."""
        try:
            self._write(group)
        except GaveUp:
            for item, _ in group:
                self._finish(item, "abandoned")
            raise
        except _Rejected as exc:
            if len(group) > 1:
                log.warning(
                    "a sink refused a group; splitting it to find the item at fault",
                    extra={"size": len(group), "error": str(exc)},
                )
                half = len(group) // 2
                self._write_isolating(group[:half])
                self._write_isolating(group[half:])
                return
            self._reject(group[0][0], exc)
            return
        self._rejected_in_a_row = 0

    def _reject(self, item: WorkItem, exc: _Rejected) -> None:
        self._retry(self._store.verify_schema, "store")  # SchemaMissing: fatal, nothing lost
        self._rejected_in_a_row += 1
        if self._rejected_in_a_row >= self._max_rejections:
            raise RuntimeError(
                f"the sinks refused {self._rejected_in_a_row} items in a row with nothing"
                f" stored in between; last: {exc}"
            ) from exc.error
        reason = Reason.PUBLISH_REJECTED if exc.sink == "publish" else Reason.STORE_REJECTED
        log.error("a sink refused one item", extra={"asset_id": item.asset_id, "error": str(exc)})
        self._fail(item, PermanentError(reason, str(exc)[:2000]))

    def _write(self, group: list[tuple[WorkItem, AssetResult | None]]) -> None:
        """Store then publish ``group``; an item older than what the store holds for its
        object (``stale``) is neither applied nor published, and finishes as ``stale``."""
        if self._mappings is not None:  # the active mapping's tag sets, stored and published
            self._retry(self._mappings.refresh, "store")
            group = [(i, r if r is None else self._mappings.apply(r)) for i, r in group]
        results = [r for _, r in group if r is not None]
        removals = [item for item, r in group if r is None]
        now = datetime.now(UTC)
        started = time.perf_counter()
        stale: set[int] = set()
        with _sink("store"):
            if results:
                stats = self._retry(lambda: self._store.save(results), "store")
                older = set(getattr(stats, "stale", ()))
                stale |= {id(i) for i, r in group if r is not None and r.asset_id in older}
            for item in removals:
                if self._remove(item):
                    stale.add(id(item))
        if self._embeddings is not None:
            self._write_embeddings(group, stale)
        self._metrics.stage_seconds.labels("store").observe(time.perf_counter() - started)
        if self._producer is not None and self._topic:
            records = [
                self._record(item, result, now) for item, result in group if id(item) not in stale
            ]
            started = time.perf_counter()
            with _sink("publish"):
                self._retry(lambda: self._producer.send_all(records), "publish")  # type: ignore[union-attr]
            self._metrics.stage_seconds.labels("publish").observe(time.perf_counter() - started)
        failpoints.hit("after_store")
        if self._review is not None:
            fresh = [r for i, r in group if r is not None and id(i) not in stale]
            if fresh:
                self._review(fresh)
        for item, result in group:
            if id(item) in stale:
                self._finish(item, "stale")
                continue
            event_time = item.event_time
            if result is not None and event_time is not None:
                age = (now - event_time).total_seconds()
                self._metrics.end_to_end.observe(max(0.0, age))
            self._finish(item, "stored" if result is not None else "removed")

    def _write_embeddings(
        self, group: list[tuple[WorkItem, AssetResult | None]], stale: set[int]
    ) -> None:
        """The embeddings of what was stored (not of stale items), and the removals'."""
        sink = self._embeddings
        assert sink is not None
        fresh = [r for i, r in group if r is not None and id(i) not in stale]
        gone: list[str] = []
        for item, result in group:
            if result is None and id(item) not in stale and isinstance(item.request, AssetRemoval):
                gone.append(item.request.asset_id)
                if item.request.alternative_key is not None:
                    gone.append(item.request.with_key(item.request.alternative_key).asset_id)
        started = time.perf_counter()
        with _sink("embeddings"):
            if fresh:
                self._retry(lambda: sink.write(fresh), "embeddings")
            if gone:
                self._retry(lambda: sink.remove(gone), "embeddings")
        self._metrics.stage_seconds.labels("embeddings").observe(time.perf_counter() - started)

    def _remove(self, item: WorkItem) -> bool:
        """Apply one removal (each reading of its key whose object is gone); True when every
        reading is stale (the store holds a newer event of the object)."""
        request = item.request
        assert isinstance(request, AssetRemoval)
        readings = [request]
        if request.alternative_key is not None:  # both readings are gone (prepare)
            readings.append(request.with_key(request.alternative_key))
        stale = 0
        for removal in readings:
            remove = functools.partial(
                self._store.remove,
                [removal.asset_id],
                item.message.position,
                uri=removal.uri,
                sequencer=removal.sequencer,
            )
            try:
                self._retry(remove, "store")
            except StaleEvent:
                stale += 1
        return stale == len(readings)

    def _record(self, item: WorkItem, result: AssetResult | None, now: datetime) -> OutRecord:
        if result is None:
            assert isinstance(item.request, AssetRemoval)
            event = removal_event(item.request, now)
        else:
            event = result_event(result)
        assert item.asset_id is not None  # results and removals name their asset
        return OutRecord(self._topic, item.asset_id.encode(), encode_event(event))

    def _retry(self, call: Callable[[], Any], stage: str) -> Any:
        return retry_transient(
            call,
            stage,
            self._give_up,
            on_error=lambda s, _e: self._metrics.transient_errors.labels(s).inc(),
        )


@contextlib.contextmanager
def _sink(name: str) -> Iterator[None]:
    """Errors of the block that are neither transient (retried inside) nor a shutdown are
    the sink refusing what it was given: :class:`_Rejected`."""
    try:
        yield
    except (GaveUp, StoreUnusable, _Rejected):
        raise
    except Exception as exc:  # noqa: BLE001 - attributed to the items by Storer
        raise _Rejected(name, exc) from exc
