"""The pipeline's worker stages, each on its own threads, linked by queues.

Every item that enters a stage leaves it through exactly one of: the next stage's queue,
``fail`` (a permanent error: dead-letter it), or ``finish`` (stored, removed, dead-lettered or
abandoned at shutdown). Transient faults are retried inside the stage, never dead-lettered.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

import numpy as np

from consumers import failpoints
from consumers.batching import collect_batch
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
from consumers.sinks import OutRecord, Producer
from consumers.work import WorkItem

log = logging.getLogger(__name__)

Finish = Callable[[WorkItem, str], None]
Fail = Callable[[WorkItem, PermanentError], None]


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

    A semaphore bounds the fetched-but-undecoded bytes held in memory. Transient fetch faults
    are retried after a backoff, forever, until shutdown abandons the item (not committed, so
    it is redelivered).
    """

    def __init__(
        self,
        fetch: Callable[[AssetRequest], bytes],
        decode: Callable[[bytes], Any],
        ready: queue.Queue[WorkItem],
        fail: Fail,
        finish: Finish,
        metrics: Metrics,
        fetch_workers: int,
        decode_workers: int,
        stopping: threading.Event,
    ) -> None:
        self._fetch, self._decode, self._ready = fetch, decode, ready
        self._fail, self._finish, self._metrics = fail, finish, metrics
        self._stopping = stopping
        self._fetch_pool = ThreadPoolExecutor(fetch_workers, thread_name_prefix="fetch")
        self._decode_pool = ThreadPoolExecutor(decode_workers, thread_name_prefix="decode")
        self._raw_slots = threading.BoundedSemaphore(fetch_workers + 2 * decode_workers)

    def submit(self, item: WorkItem) -> None:
        self._fetch_pool.submit(self._fetch_one, item)

    def _fetch_one(self, item: WorkItem) -> None:
        assert isinstance(item.request, AssetRequest)
        self._raw_slots.acquire()
        started = time.perf_counter()
        try:
            failpoints.hit("fetch")
            item.data = self._fetch(item.request)
        except PermanentError as exc:
            self._raw_slots.release()
            self._fail(item, exc)
            return
        except TransientError as exc:
            self._raw_slots.release()
            self._retry_later(item, exc)
            return
        except Exception as exc:  # noqa: BLE001 - an unexpected fault must not lose the item
            self._raw_slots.release()
            log.exception("unexpected fetch error", extra={"asset_id": item.asset_id})
            self._retry_later(item, TransientError(repr(exc)))
            return
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
            item.data = None
            self._raw_slots.release()
        self._metrics.stage_seconds.labels("decode").observe(time.perf_counter() - started)
        self._ready.put(item)

    def _retry_later(self, item: WorkItem, exc: TransientError, stage: str = "fetch") -> None:
        """Fetch and decode ``item`` again after a backoff (the fetched bytes are not kept)."""
        self._metrics.transient_errors.labels(stage).inc()
        item.attempts += 1
        if self._stopping.is_set():
            self._finish(item, "abandoned")
            return
        if item.attempts == 1 or item.attempts % 10 == 0:
            log.warning(
                f"{stage} failed, will retry",
                extra={"asset_id": item.asset_id, "attempt": item.attempts, "error": str(exc)},
            )
        timer = threading.Timer(backoff_s(item.attempts), self.submit, args=(item,))
        timer.daemon = True
        timer.start()

    def shutdown(self) -> None:
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
        self.busy_since: float | None = None
        self._spawn("infer")

    def _run(self) -> None:
        while not (self._stopping.is_set() and self._ready.empty()):
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
                self._ready.put(item)
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


class Storer(_Stage):
    """Writes results (and removals) to the store in one transaction per drained group, then
    publishes their result events and waits for the acks; only then are the items finished.
    """

    def __init__(
        self,
        store: Any,
        producer: Producer | None,
        results_topic: str,
        inbox: queue.Queue[tuple[WorkItem, AssetResult | None]],
        finish: Finish,
        metrics: Metrics,
        give_up: Callable[[], bool],
        max_group: int = 512,
    ) -> None:
        self._store, self._producer, self._topic = store, producer, results_topic
        self._inbox, self._finish, self._metrics = inbox, finish, metrics
        self._give_up, self._max_group = give_up, max_group
        self._spawn("store")

    def _run(self) -> None:
        while not self._give_up():
            group = collect_batch(self._inbox, self._max_group, 0.0, 0.1)
            if not group:
                continue
            try:
                self._write(group)
            except GaveUp:
                for item, _ in group:
                    self._finish(item, "abandoned")
                return

    def _write(self, group: list[tuple[WorkItem, AssetResult | None]]) -> None:
        results = [r for _, r in group if r is not None]
        removals = [item for item, r in group if r is None]
        now = datetime.now(UTC)
        started = time.perf_counter()
        if results:
            self._retry(lambda: self._store.save(results), "store")
        for item in removals:
            self._retry(
                lambda item=item: self._store.remove([item.asset_id], item.message.position),
                "store",
            )
        self._metrics.stage_seconds.labels("store").observe(time.perf_counter() - started)
        if self._producer is not None and self._topic:
            records = [self._record(item, result, now) for item, result in group]
            started = time.perf_counter()
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


class DeadLetterer(_Stage):
    """Sends dead-letter records (original key and value, reason headers) and waits for acks."""

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
                retry_transient(
                    lambda records=records: self._producer.send_all(records),
                    "dlq",
                    self._give_up,
                    on_error=lambda s, _e: self._metrics.transient_errors.labels(s).inc(),
                )
            except GaveUp:
                for item, _ in group:
                    self._finish(item, "abandoned")
                return
            for item, error in group:
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

    def _record(self, item: WorkItem, error: PermanentError) -> OutRecord:
        message = item.message
        headers = dlq_headers(error.reason, error.message, message.position, item.asset_id)
        return OutRecord(self._topic, message.key, message.value, headers)
