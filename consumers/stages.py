"""The pipeline's worker stages, each on its own threads, linked by queues.

Every item that enters a stage leaves it through exactly one of: the next stage's queue,
``fail`` (a permanent error: dead-letter it), or ``finish`` (stored, removed, dead-lettered or
abandoned at shutdown). Transient faults are retried inside the stage, never dead-lettered.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np

from consumers import failpoints
from consumers.batching import collect_batch
from consumers.budget import BudgetClosed, ByteBudget
from consumers.domain import (
    AssetRemoval,
    AssetRequest,
    AssetResult,
    PermanentError,
    Reason,
    TransientError,
)
from consumers.metrics import Metrics
from consumers.results import build_result, dlq_headers, encode_event, removal_event, result_event
from consumers.retry import GaveUp, backoff_s, retry_transient
from consumers.scheduler import RetryScheduler
from consumers.sinks import OutRecord, Producer, RecordRejected
from consumers.store.errors import SchemaMissing
from consumers.work import WorkItem

log = logging.getLogger(__name__)

Finish = Callable[[WorkItem, str], None]
Fail = Callable[[WorkItem, PermanentError], None]


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


class _Stage:
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
            log.exception("pipeline stage crashed", extra={"stage": self._thread.name})
            if self.on_crash is not None:
                self.on_crash(f"the {self._thread.name} stage crashed: {exc!r}")

    def start(self) -> None:
        self._thread.start()

    def join(self, timeout: float) -> None:
        self._thread.join(timeout)


class Preparer:
    """Fetch (I/O threads) then decode (CPU threads) each item, then put it on ``ready``.

    ``raw_bytes`` bounds the fetched-but-undecoded bytes held in memory (a fetch reserves the
    object's size once S3 has said it, before the body is read). Transient faults are retried
    after a backoff on one scheduler thread, within ``retry`` (:class:`RetryPolicy`), or until
    shutdown abandons the item (not committed, so it is redelivered). ``ready`` is bounded:
    decode threads wait for room, so a slow model holds back decoding, not memory.
    """

    def __init__(
        self,
        fetch: Callable[[AssetRequest, Callable[[int], None]], bytes],
        decode: Callable[[bytes], Any],
        ready: queue.Queue[WorkItem],
        fail: Fail,
        finish: Finish,
        metrics: Metrics,
        workers: tuple[int, int],
        stopping: threading.Event,
        retry: RetryPolicy,
        raw_bytes: ByteBudget,
    ) -> None:
        self._fetch, self._decode, self._ready = fetch, decode, ready
        self._fail, self._finish, self._metrics = fail, finish, metrics
        self._stopping, self._retry, self._raw_bytes = stopping, retry, raw_bytes
        self._fetch_pool = ThreadPoolExecutor(workers[0], thread_name_prefix="fetch")
        self._decode_pool = ThreadPoolExecutor(workers[1], thread_name_prefix="decode")
        self._scheduler = RetryScheduler()
        self._last_success = 0.0
        self._closed = False

    def submit(self, item: WorkItem) -> None:
        self._fetch_pool.submit(self._fetch_one, item)

    def _reserve(self, item: WorkItem, size: int) -> None:
        self._raw_bytes.reserve(size)
        item.reserved += size

    def _release(self, item: WorkItem) -> None:
        item.data = None
        if item.reserved:
            self._raw_bytes.release(item.reserved)
            item.reserved = 0

    def _fetch_one(self, item: WorkItem) -> None:
        assert isinstance(item.request, AssetRequest)
        started = time.perf_counter()
        try:
            failpoints.hit("fetch")
            item.data = self._fetch(item.request, lambda size: self._reserve(item, size))
        except PermanentError as exc:
            self._release(item)
            self._fail(item, exc)
            return
        except BudgetClosed:
            self._release(item)
            self._finish(item, "abandoned")
            return
        except TransientError as exc:
            self._release(item)
            self._retry_later(item, exc)
            return
        except Exception as exc:  # noqa: BLE001 - an unexpected fault must not lose the item
            self._release(item)
            log.exception("unexpected fetch error", extra={"asset_id": item.asset_id})
            self._retry_later(item, TransientError(repr(exc)))
            return
        self._last_success = time.monotonic()
        self._metrics.stage_seconds.labels("fetch").observe(time.perf_counter() - started)
        self._decode_pool.submit(self._decode_one, item)

    def _decode_one(self, item: WorkItem) -> None:
        started = time.perf_counter()
        try:
            assert item.data is not None
            failpoints.hit("decode")
            item.decoded = self._decode(item.data)
        except PermanentError as exc:
            self._fail(item, exc)
            return
        except TransientError as exc:  # the decode processes could not be restarted
            self._retry_later(item, exc, "decode")
            return
        except Exception as exc:  # noqa: BLE001 - Pillow raises many types on hostile input
            self._fail(
                item, PermanentError(Reason.IMAGE_DECODE_FAILED, f"{type(exc).__name__}: {exc}")
            )
            return
        finally:
            self._release(item)
        self._metrics.stage_seconds.labels("decode").observe(time.perf_counter() - started)
        while True:
            try:
                self._ready.put(item, timeout=0.5)
                return
            except queue.Full:
                if self._closed:
                    self._finish(item, "abandoned")
                    return

    def _retry_later(self, item: WorkItem, exc: TransientError, stage: str = "fetch") -> None:
        """Fetch and decode ``item`` again after a backoff (the fetched bytes are not kept),
        or dead-letter it once its :class:`RetryPolicy` is spent."""
        self._metrics.transient_errors.labels(stage).inc()
        item.attempts += 1
        now = time.monotonic()
        if item.failing_since is None:
            item.failing_since = now
        if self._stopping.is_set():
            self._finish(item, "abandoned")
            return
        failing_s = now - item.failing_since
        if self._retry.exhausted(item.attempts, failing_s, self._last_success > item.failing_since):
            self._fail(
                item,
                PermanentError(
                    Reason.RETRIES_EXHAUSTED,
                    f"{stage} failed {item.attempts} times over {failing_s:.0f} s while other"
                    f" images succeeded; last error: {exc}",
                ),
            )
            return
        if item.attempts == 1 or item.attempts % 10 == 0:
            log.warning(
                f"{stage} failed, will retry",
                extra={"asset_id": item.asset_id, "attempt": item.attempts, "error": str(exc)},
            )
        self._scheduler.call_later(backoff_s(item.attempts), lambda: self.submit(item))

    def shutdown(self) -> None:
        self._closed = True
        self._scheduler.close()
        self._raw_bytes.close()
        self._fetch_pool.shutdown(wait=False, cancel_futures=True)
        self._decode_pool.shutdown(wait=False, cancel_futures=True)


class Inferencer(_Stage):
    """Micro-batches ready items through the fleet and hands results to the store stage.

    When a batch raises, each image is retried alone and a known-good canary image is run:
    if the canary works the failing image is at fault and is dead-lettered
    (``inference_failed``); if the canary fails too the model is broken (a bad deploy), so
    nothing is dead-lettered and after ``max_failures`` consecutive broken batches ``fatal``
    is called and the service stops instead of dead-lettering the topic.
    """

    def __init__(
        self,
        fleet: Any,
        ready: queue.Queue[WorkItem],
        to_store: queue.Queue[tuple[WorkItem, AssetResult | None]],
        fail: Fail,
        fatal: Callable[[str], None],
        metrics: Metrics,
        batch_size: int,
        batch_wait_s: float,
        max_failures: int,
        stopping: threading.Event,
    ) -> None:
        self._fleet, self._ready, self._to_store = fleet, ready, to_store
        self._fail, self._fatal, self._metrics = fail, fatal, metrics
        self._batch_size, self._batch_wait_s = batch_size, batch_wait_s
        self._max_failures, self._stopping = max_failures, stopping
        self._broken = 0
        self._held: list[WorkItem] = []  # retried after a broken batch, before new ones
        self.busy_since: float | None = None
        self._spawn("infer")

    def _run(self) -> None:
        while not (self._stopping.is_set() and self._ready.empty()):
            if self._held:
                batch, self._held = self._held[: self._batch_size], self._held[self._batch_size :]
            else:
                batch = collect_batch(self._ready, self._batch_size, self._batch_wait_s, 0.1)
            if batch:
                self.busy_since = time.monotonic()
                try:
                    self._infer(batch)
                finally:
                    self.busy_since = None

    def _infer(self, batch: list[WorkItem]) -> None:
        started = time.perf_counter()
        try:
            predictions = self._predict(batch)
        except Exception:  # noqa: BLE001 - isolate the culprit below
            log.exception("batch inference failed; retrying images one by one")
            self._infer_one_by_one(batch)
            return
        self._broken = 0
        self._metrics.stage_seconds.labels("infer").observe(time.perf_counter() - started)
        self._metrics.batch_size.observe(len(batch))
        self._emit(batch, predictions)

    def _predict(self, batch: Sequence[WorkItem]) -> list[dict[str, dict]]:
        images = [item.decoded.array for item in batch]
        sizes = [(item.decoded.width, item.decoded.height) for item in batch]
        functions = [item.request.functions for item in batch]  # type: ignore[union-attr]
        return self._call_fleet(images, sizes, functions)

    def _call_fleet(self, images: Any, sizes: Any, functions: Any) -> list[dict[str, dict]]:
        failpoints.hit("predict")
        return self._fleet.predict(images, sizes, functions)

    def _infer_one_by_one(self, batch: list[WorkItem]) -> None:
        for item in batch:
            try:
                prediction = self._predict([item])
            except Exception as exc:  # noqa: BLE001
                self._metrics.inference_failures.inc()
                if self._canary_works():
                    self._fail(
                        item,
                        PermanentError(Reason.INFERENCE_FAILED, f"{type(exc).__name__}: {exc}"),
                    )
                    continue
                self._broken += 1
                if self._broken >= self._max_failures:
                    self._fatal(
                        f"the fleet failed on {self._broken} consecutive images"
                        f" and on a canary image: {exc!r}"
                    )
                    return
                self._held.append(item)
                time.sleep(backoff_s(self._broken))
                continue
            self._broken = 0
            self._emit([item], prediction)

    def _canary_works(self) -> bool:
        size = self._fleet.input_size
        canary = np.full((size, size, 3), 127, dtype=np.uint8)
        try:
            self._call_fleet([canary], [(size, size)], None)
        except Exception:  # noqa: BLE001
            return False
        return True

    def _emit(self, batch: Sequence[WorkItem], predictions: Sequence[dict[str, dict]]) -> None:
        failpoints.hit("after_infer")
        now = datetime.now(UTC)
        for item, functions in zip(batch, predictions, strict=True):
            request = item.request
            assert isinstance(request, AssetRequest)
            for name, result in functions.items():
                self._metrics.observe_prediction(name, result)
            latency_ms = (time.monotonic() - item.message.polled_at) * 1000
            result = build_result(
                request, item.decoded, functions, item.message.position, now, latency_ms
            )
            item.decoded = None
            self._to_store.put((item, result))


class _Rejected(Exception):
    """A sink refused a group for a reason not known to be transient."""

    def __init__(self, sink: str, error: Exception) -> None:
        super().__init__(f"{sink}: {type(error).__name__}: {error}")
        self.sink, self.error = sink, error


class Storer(_Stage):
    """Writes results (and removals) to the store in one transaction per drained group, then
    publishes their result events and waits for the acks; only then are the items finished.

    A group that a sink refuses with an error not known to be transient is split in halves
    and each half written again, down to the item at fault, which is dead-lettered
    (``store_rejected`` or ``publish_rejected``) while the rest of its group is stored: one
    hostile event cannot stop the service. Two cases stay fatal, because no item is at fault:
    the store is not at its schema (:class:`SchemaMissing`, checked before any dead letter),
    and ``max_rejections`` items in a row refused with nothing stored in between (the sink
    refuses everything: a revoked grant, a bug), which stops the service instead of
    dead-lettering the topic.
    """

    def __init__(
        self,
        store: Any,
        producer: Producer | None,
        results_topic: str,
        inbox: queue.Queue[tuple[WorkItem, AssetResult | None]],
        fail: Fail,
        finish: Finish,
        metrics: Metrics,
        give_up: Callable[[], bool],
        max_rejections: int = 8,
        max_group: int = 512,
    ) -> None:
        self._store, self._producer, self._topic = store, producer, results_topic
        self._inbox, self._fail, self._finish, self._metrics = inbox, fail, finish, metrics
        self._give_up, self._max_group = give_up, max_group
        self._max_rejections, self._rejected_in_a_row = max_rejections, 0
        self._spawn("store")

    def _run(self) -> None:
        while not self._give_up():
            group = collect_batch(self._inbox, self._max_group, 0.0, 0.1)
            if not group:
                continue
            try:
                self._write_isolating(group)
            except GaveUp:
                for item, _ in group:
                    self._finish(item, "abandoned")
                return

    def _write_isolating(self, group: list[tuple[WorkItem, AssetResult | None]]) -> None:
        try:
            self._write(group)
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
        reason = Reason.STORE_REJECTED if exc.sink == "store" else Reason.PUBLISH_REJECTED
        log.error("a sink refused one item", extra={"asset_id": item.asset_id, "error": str(exc)})
        self._fail(item, PermanentError(reason, str(exc)[:2000]))

    def _write(self, group: list[tuple[WorkItem, AssetResult | None]]) -> None:
        results = [r for _, r in group if r is not None]
        removals = [item for item, r in group if r is None]
        now = datetime.now(UTC)
        started = time.perf_counter()
        with _sink("store"):
            if results:
                self._retry(lambda: self._store.save(results), "store")
            for item in removals:
                assert isinstance(item.request, AssetRemoval)
                uri = item.request.uri
                self._retry(
                    lambda item=item, uri=uri: self._store.remove(
                        [item.asset_id], item.message.position, uri=uri
                    ),
                    "store",
                )
        self._metrics.stage_seconds.labels("store").observe(time.perf_counter() - started)
        if self._producer is not None and self._topic:
            records = [self._record(item, result, now) for item, result in group]
            started = time.perf_counter()
            with _sink("publish"):
                self._retry(lambda: self._producer.send_all(records), "publish")  # type: ignore[union-attr]
            self._metrics.stage_seconds.labels("publish").observe(time.perf_counter() - started)
        failpoints.hit("after_store")
        for item, result in group:
            event_time = item.event_time
            if result is not None and event_time is not None:
                age = (now - event_time).total_seconds()
                self._metrics.end_to_end.observe(max(0.0, age))
            self._finish(item, "stored" if result is not None else "removed")

    def _record(self, item: WorkItem, result: AssetResult | None, now: datetime) -> OutRecord:
        if result is None:
            assert isinstance(item.request, AssetRemoval)
            event = removal_event(item.request, now)
        else:
            event = result_event(result)
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
    except (GaveUp, SchemaMissing, _Rejected):
        raise
    except Exception as exc:  # noqa: BLE001 - attributed to the items by Storer
        raise _Rejected(name, exc) from exc


class DeadLetterer(_Stage):
    """Sends dead-letter records (original key and value, reason headers) and waits for acks.

    A record the broker refuses for its size has its value dropped (the headers say so) and
    is sent again: a dead letter is never the reason a partition stops. An item marked
    ``aggregate`` is the one record of a message whose several records failed; its reasons
    were counted when each failed.
    """

    def __init__(
        self,
        producer: Producer,
        topic: str,
        finish: Finish,
        metrics: Metrics,
        give_up: Callable[[], bool],
    ) -> None:
        self._producer, self._topic, self._finish = producer, topic, finish
        self._metrics, self._give_up = metrics, give_up
        self._inbox: queue.Queue[tuple[WorkItem, PermanentError]] = queue.Queue()
        self._spawn("dlq")

    def put(self, item: WorkItem, error: PermanentError) -> None:
        self._inbox.put((item, error))

    def _run(self) -> None:
        while not self._give_up():
            group = collect_batch(self._inbox, 256, 0.0, 0.1)
            if not group:
                continue
            records = [self._record(item, error) for item, error in group]
            try:
                self._send(records)
            except GaveUp:
                for item, _ in group:
                    self._finish(item, "abandoned")
                return
            for item, error in group:
                if not item.aggregate:
                    self._metrics.dlq.labels(error.reason.value).inc()
                log.info(
                    "dead-lettered",
                    extra={
                        "reason": error.reason.value,
                        "detail": error.message,
                        "asset_id": item.asset_id,
                        "offset": item.message.position.offset,
                        "partition": item.message.position.partition,
                    },
                )
                self._finish(item, "dead_lettered")

    def _send(self, records: list[OutRecord]) -> None:
        try:
            self._send_retrying(records)
        except RecordRejected:
            for record in records:  # find the refused one(s); the rest are sent (again)
                try:
                    self._send_retrying([record])
                except RecordRejected as exc:
                    self._send_retrying([_without_value(record, str(exc))])

    def _send_retrying(self, records: list[OutRecord]) -> None:
        retry_transient(
            lambda: self._producer.send_all(records),
            "dlq",
            self._give_up,
            on_error=lambda s, _e: self._metrics.transient_errors.labels(s).inc(),
        )

    def _record(self, item: WorkItem, error: PermanentError) -> OutRecord:
        message = item.message
        headers = dlq_headers(error.reason, error.message, message.position, item.asset_id)
        headers += error.headers
        return OutRecord(self._topic, message.key, message.value, headers)


def _without_value(record: OutRecord, why: str) -> OutRecord:
    size = len(record.value or b"")
    note = [("tagfleet-value-dropped", f"{size} bytes; {why}"[:500].encode())]
    return OutRecord(record.topic, record.key, None, (record.headers or []) + note)
