"""Fetch then decode, with per-item retries on one scheduler and a byte budget."""

from __future__ import annotations

import hashlib
import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from consumers import failpoints
from consumers.budget import BudgetClosed, ByteBudget
from consumers.domain import (
    AssetRemoval,
    AssetRequest,
    AssetResult,
    PermanentError,
    Reason,
    TransientError,
)
from consumers.retry import RetryPolicy, backoff_s
from consumers.scheduler import RetryScheduler
from consumers.stages.base import Outlets, Stage
from consumers.work import WorkItem

log = logging.getLogger(__name__)


# After this many fetches refused in a row (access denied, other 4xx) and none fetched, the
# next refusals are taken for a configuration fault (a revoked grant, a gateway answering
# 400 to everything) and retried like an outage instead of dead-lettering the backlog.
SYSTEMIC_REFUSALS = 16
_SYSTEMIC = (
    f"{SYSTEMIC_REFUSALS} fetches in a row refused and none fetched: a fault of the"
    " credentials, the policy or the endpoint, not of these images"
)
# A create whose object is gone was followed by a removal (docs/events.md, "Order per
# object"): its object is looked for again after each of these pauses, for the removal's event
# to be applied, before it is a missing object.
MISSING_WAITS_S = (1.0, 2.0, 4.0, 8.0, 8.0)
_ITEM_REFUSALS = frozenset(
    {Reason.OBJECT_NOT_FOUND, Reason.OBJECT_TOO_LARGE, Reason.EMPTY_OBJECT, Reason.UNSUPPORTED_URI}
)


def content_hash(data: bytes) -> str:
    """SHA-256 (hex) of an object's bytes: the fetcher's (consumers.fetch.Fetched, S3's own
    checksum when it sent one) or computed here (bytes read another way: ``tagfleet tag``)."""
    known = getattr(data, "sha256", None)
    return known if isinstance(known, str) else hashlib.sha256(data).hexdigest()


class Preparer(Stage):
    """Fetch (I/O threads) then decode (CPU threads) each item, then put it on ``ready``.

    ``raw_bytes`` bounds the fetched-but-undecoded bytes held in memory (a fetch reserves the
    object's size once S3 has said it, before the body is read). Transient faults are retried
    after a backoff on one scheduler thread, within ``retry`` (:class:`RetryPolicy`), or until
    shutdown abandons the item (not committed, so it is redelivered). ``ready`` is bounded:
    decode threads wait for room, so a slow model holds back decoding, not memory.
    """

    def __init__(
        self,
        *,
        fetch: Callable[[AssetRequest, Callable[[int], None]], bytes],
        decode: Callable[[bytes], Any],
        ready: queue.Queue[WorkItem],
        out: Outlets,
        fetch_workers: int,
        decode_workers: int,
        draining: threading.Event,
        retry: RetryPolicy,
        raw_bytes: ByteBudget,
        readable: Callable[[str, str], bool] | None = None,
        removed: queue.Queue[tuple[WorkItem, AssetResult | None]] | None = None,
        superseded: Callable[[AssetRequest], bool] | None = None,
    ) -> None:
        """``draining``: set on shutdown; an item that fails then is abandoned, not retried.
        ``readable`` (bucket, key) confirms a removal before it goes to ``removed`` (the write
        stage's queue). ``superseded`` tells whether a create whose object is missing was
        followed by a removal already applied (the store's ``removed_later``): such an item
        finishes ``stale`` instead of being dead-lettered; it may raise ``TransientError``."""
        self._fetch, self._decode, self._ready = fetch, decode, ready
        self._fail, self._finish, self._metrics = out.fail, out.finish, out.metrics
        self._draining, self._retry, self._raw_bytes = draining, retry, raw_bytes
        self._readable, self._removed, self._superseded = readable, removed, superseded
        self._fetch_pool = ThreadPoolExecutor(fetch_workers, thread_name_prefix="fetch")
        self._decode_pool = ThreadPoolExecutor(decode_workers, thread_name_prefix="decode")
        self._decode_lock = threading.Lock()
        self._decode_uploads: deque[WorkItem] = deque()  # fetched, waiting for a decoder
        self._decode_backfill: deque[WorkItem] = deque()
        self._scheduler = RetryScheduler()
        self._last_success = 0.0
        self._refusals, self._refusal_lock = 0, threading.Lock()
        self._closed = False

    def submit(self, item: WorkItem) -> None:
        """Fetch and decode an :class:`AssetRequest`; confirm an :class:`AssetRemoval`."""
        work = self._confirm_removal if isinstance(item.request, AssetRemoval) else self._fetch_one
        self._fetch_pool.submit(self._in_pool, "fetch", work, item)

    def _confirm_removal(self, item: WorkItem) -> None:
        """Hand a removal on only for the readings of its key whose object the service can
        no longer read (a HEAD answers 404, or 403 as AWS does for a missing key without
        ``s3:ListBucket``): a removal notification for an object that is still there (forged,
        or older than a re-upload) must not wipe its tags."""
        request = item.request
        assert isinstance(request, AssetRemoval)
        if self._removed is None or self._readable is None:
            raise RuntimeError("removals need a store queue and an object check")
        readings = [request.key, *([request.alternative_key] if request.alternative_key else [])]
        try:
            gone = [key for key in readings if not self._readable(request.bucket, key)]
        except PermanentError as exc:
            self._fail(item, exc)
            return
        except TransientError as exc:
            self._retry_later(item, exc)
            return
        except Exception as exc:  # noqa: BLE001 - an unexpected fault must not lose the item
            log.exception("unexpected error checking an object", extra={"asset_id": item.asset_id})
            self._retry_later(item, TransientError(repr(exc)))
            return
        self._last_success = time.monotonic()
        if not gone:
            log.warning(
                "removal ignored: the object is still there", extra={"asset_id": item.asset_id}
            )
            self._finish(item, "removal_ignored")
            return
        item.request = request.with_key(gone[0], gone[1] if len(gone) > 1 else None)
        self._removed.put((item, None))

    def _in_pool(self, where: str, work: Callable[[WorkItem], None], item: WorkItem) -> None:
        """Run ``work`` on a pool thread: a bug there stops the service like a stage crash,
        instead of vanishing into an unread future with the item never finished."""
        try:
            work(item)
        except Exception as exc:  # noqa: BLE001 - any crash must stop the service visibly
            if not self._closed:
                self.crashed(where, exc)

    def start(self) -> None:
        """The pools start on demand; nothing to start."""

    def _reserve(self, item: WorkItem, size: int) -> None:
        """Hold ``size`` bytes of the budget for ``item``: an attempt that reaches the body
        again (the fetcher retries a read that failed) replaces the earlier reservation, whose
        bytes were dropped, instead of waiting for room it holds itself."""
        self._release(item)
        self._raw_bytes.reserve(size)
        item.reserved = size

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
            item.data = self._fetch_either_reading(item)
        except PermanentError as exc:
            self._release(item)
            if exc.reason is Reason.OBJECT_NOT_FOUND and self._removed_since(item):
                return
            if self._refused_in_a_row(exc) >= SYSTEMIC_REFUSALS:
                self._retry_later(item, TransientError(f"{_SYSTEMIC}; this one: {exc}"))
            else:
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
        with self._refusal_lock:
            self._refusals = 0
        self._metrics.stage_seconds.labels("fetch").observe(time.perf_counter() - started)
        with self._decode_lock:
            (self._decode_backfill if item.message.backfill else self._decode_uploads).append(item)
        self._decode_pool.submit(self._in_pool, "decode", self._decode_next, item)

    def _decode_next(self, submitted: WorkItem) -> None:
        """Decode the next fetched item, the upload lane's first (one task per item submitted,
        so each is decoded once, in lane order rather than in the pool's FIFO order)."""
        with self._decode_lock:
            uploads = self._decode_uploads
            item = uploads.popleft() if uploads else self._decode_backfill.popleft()
        self._decode_one(item)

    def _removed_since(self, item: WorkItem) -> bool:
        """Handle ``item``, a create whose object is missing, when it is ordered: ``stale``
        when a newer removal of its object was applied; fetched again after a pause, up to
        :data:`MISSING_WAITS_S`, while that removal may still be on its way (the object is
        gone, so a later Delete ran; its event may sit on another partition or pod); again
        later when the store cannot say. False when it is a missing object to dead-letter
        (an unordered event, or no removal came in time)."""
        request = item.request
        assert isinstance(request, AssetRequest)
        if self._superseded is None or request.sequencer is None:
            return False
        try:
            superseded = self._superseded(request)
        except TransientError as exc:
            self._retry_later(item, exc)
            return True
        if superseded:
            log.info("create older than its object's removal", extra={"asset_id": item.asset_id})
            self._finish(item, "stale")
            return True
        if item.missing_checks >= len(MISSING_WAITS_S):
            return False
        if self._draining.is_set():
            self._finish(item, "abandoned")
            return True
        delay = MISSING_WAITS_S[item.missing_checks]
        item.missing_checks += 1
        log.info(
            "object of a create is missing; waiting for its removal",
            extra={"asset_id": item.asset_id, "check": item.missing_checks, "delay_s": delay},
        )
        self._scheduler.call_later(delay, lambda: self.submit(item))
        return True

    def _fetch_either_reading(self, item: WorkItem) -> bytes:
        """The object's bytes, by the key's first reading, else (a 404) by its other one
        (:mod:`consumers.object_keys`); the item then names the object really found."""
        request = item.request
        assert isinstance(request, AssetRequest)
        try:
            data = self._fetch(request, lambda size: self._reserve(item, size))
        except PermanentError as exc:
            if exc.reason is not Reason.OBJECT_NOT_FOUND or request.alternative_key is None:
                raise
            other = request.with_key(request.alternative_key)
            data = self._fetch(other, lambda size: self._reserve(item, size))
            item.request = other
            item.etag = getattr(data, "etag", None)  # consumers.fetch.Fetched
            item.content_hash = content_hash(data)
            self._metrics.key_readings.labels("alternative").inc()
            return data
        item.etag = getattr(data, "etag", None)
        item.content_hash = content_hash(data)
        self._metrics.key_readings.labels("first").inc()
        return data

    def _decode_one(self, item: WorkItem) -> None:
        started = time.perf_counter()
        try:
            assert item.data is not None
            failpoints.hit("decode")
            assert isinstance(item.request, AssetRequest)
            # consumers.decoding.Decoder cuts the tiles of the tiled functions it asks for
            by_function = getattr(self._decode, "for_functions", None)
            if by_function is not None:
                item.decoded = by_function(item.data, item.request.functions)
            else:
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
        self._last_success = time.monotonic()
        self._metrics.stage_seconds.labels("decode").observe(time.perf_counter() - started)
        while True:
            try:
                self._ready.put(item, timeout=0.5)
                return
            except queue.Full:
                if self._closed:
                    self._finish(item, "abandoned")
                    return

    def _refused_in_a_row(self, error: PermanentError) -> int:
        """Count fetches refused in a row for reasons a configuration fault also gives (not a
        missing object, which a burst of deletions gives honestly)."""
        with self._refusal_lock:
            if error.reason in _ITEM_REFUSALS:
                self._refusals = 0
            else:
                self._refusals += 1
            return self._refusals

    def _retry_later(self, item: WorkItem, exc: TransientError, stage: str = "fetch") -> None:
        """Fetch and decode ``item`` again after a backoff (the fetched bytes are not kept),
        or dead-letter it once its :class:`RetryPolicy` is spent."""
        self._metrics.transient_errors.labels(stage).inc()
        item.attempts += 1
        now = time.monotonic()
        if item.failing_since is None:
            item.failing_since = now
        if self._draining.is_set():
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
