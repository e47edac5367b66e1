"""Micro-batched inference with a canary that tells a bad image from a bad model."""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import numpy as np

from consumers import failpoints
from consumers.batching import collect_batch
from consumers.dedup import Hit, RecentResults, covers, reused, wanted_versions
from consumers.domain import (
    AssetRequest,
    AssetResult,
    PermanentError,
    Reason,
)
from consumers.ports import Fleet, StoredReuse
from consumers.results import build_result
from consumers.retry import backoff_s
from consumers.stages.base import Outlets, Stage
from consumers.work import WorkItem

log = logging.getLogger(__name__)
# per image: function -> result, shadow -> result, backbone key -> pooled embedding
Predictions = tuple[list[dict[str, dict]], list[dict[str, dict]], list[dict[str, Any]]]


def top_labels(result: dict[str, Any]) -> frozenset[str]:
    """What a result decides: classify its label, tags its tags, detect its objects' labels
    (the shadow agreement compares these)."""
    if result.get("type") == "classify":
        return frozenset([str(result.get("label"))])
    entries = result.get("tags", result.get("objects", []))
    return frozenset(str(e["label"]) for e in entries)


class Inferencer(Stage):
    """Micro-batches ready items through the fleet and hands results to the store stage.

    When a batch raises, each of its images is retried alone and a known-good canary image is run:
    if the canary works the failing image is at fault and is dead-lettered
    (``inference_failed``); if the canary fails too the model is broken (a bad deploy), so
    nothing is dead-lettered and after ``max_failures`` consecutive images that fail along
    with the canary ``fatal`` is called and the service stops instead of dead-lettering the
    topic.
    """

    def __init__(
        self,
        *,
        fleet: Fleet,
        ready: queue.Queue[WorkItem],
        to_store: queue.Queue[tuple[WorkItem, AssetResult | None]],
        out: Outlets,
        fatal: Callable[[str], None],
        batch_size: int,
        batch_wait_s: float,
        max_failures: int,
        abandon: threading.Event,
        reload: Callable[[], Fleet | None] | None = None,
        stored: StoredReuse | None = None,
        dedup: bool = True,
    ) -> None:
        """``abandon``: set at the end of shutdown; the stage stops once ``ready`` is empty.
        ``reload``: asked between two batches for a new fleet (already loaded and checked);
        each item runs through exactly one fleet, so a swap drops or repeats nothing.
        ``stored``: the store's results by content hash (content-hash dedup, beside the
        batch's own and the recent ones: :mod:`consumers.dedup`); ``None``: not asked.
        ``dedup``: False (``reuse_results`` off) runs the model for every image, reusing
        nothing, not even within a batch or from the recent results."""
        self._fleet, self._ready, self._to_store = fleet, ready, to_store
        self._reload = reload
        self._fail, self._fatal, self._metrics = out.fail, fatal, out.metrics
        self._batch_size, self._batch_wait_s = batch_size, batch_wait_s
        self._max_failures, self._abandon = max_failures, abandon
        self._broken = 0
        self._held: list[WorkItem] = []  # retried after a broken batch, before new ones
        self._stored, self._recent = stored if dedup else None, RecentResults()
        self._dedup_on = dedup
        self._followers: dict[int, list[WorkItem]] = {}  # same bytes as a running item
        self.busy_since: float | None = None
        self._spawn("infer")

    def _run(self) -> None:
        while not (self._abandon.is_set() and self._ready.empty()):
            if self._held:
                batch, self._held = self._held[: self._batch_size], self._held[self._batch_size :]
            else:
                batch = collect_batch(self._ready, self._batch_size, self._batch_wait_s, 0.1)
            self._swap()  # between two batches, also while idle
            if batch:
                self.busy_since = time.monotonic()
                try:
                    self._infer(batch)
                finally:
                    self.busy_since = None

    def _swap(self) -> None:
        fleet = self._reload() if self._reload is not None else None
        if fleet is not None:
            self._fleet, self._broken = fleet, 0
            log.info("fleet swapped between batches", extra={"functions": sorted(fleet.functions)})

    def _infer(self, batch: list[WorkItem]) -> None:
        batch = self._dedup(batch)
        if not batch:
            return
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
        self._emit(batch, *predictions)

    def _predict(self, batch: Sequence[WorkItem]) -> Predictions:
        images = [item.decoded.array for item in batch]
        sizes = [(item.decoded.width, item.decoded.height) for item in batch]
        functions = [item.request.functions for item in batch]  # type: ignore[union-attr]
        # the tiles the decoder cut for the fleet's tiled functions (none when it has none)
        tiles = [getattr(item.decoded, "tiles", ()) for item in batch]
        return self._call_fleet(images, sizes, functions, tiles if any(tiles) else None)

    def _call_fleet(
        self, images: Any, sizes: Any, functions: Any, tiles: Any = None
    ) -> Predictions:
        """(per image: function -> result, per image: shadow candidate -> result)."""
        failpoints.hit("predict")
        extra = {} if tiles is None else {"tiles": tiles}
        # the models' Fleet runs its shadows in the same backbone pass; a fleet without
        # shadows (and the tests' fakes, which know predict only) runs predict
        full = getattr(self._fleet, "predict_full", None)
        if full is not None:  # the models' Fleet: shadows and embeddings in the same pass
            found = full(images, sizes, functions, **extra)
            return found.results, found.shadows, found.embeddings
        with_shadows = getattr(self._fleet, "predict_with_shadows", None)
        if with_shadows is not None and getattr(self._fleet, "shadows", None):
            serving, shadows = with_shadows(images, sizes, functions, **extra)
            return serving, shadows, [{} for _ in serving]
        serving = self._fleet.predict(images, sizes, functions, **extra)
        return serving, [{} for _ in serving], [{} for _ in serving]

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
                    self._held.extend(self._followers.pop(id(item), []))  # run on their own
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
            self._emit([item], *prediction)

    def _canary_works(self) -> bool:
        size = self._fleet.input_size
        canary = np.full((size, size, 3), 127, dtype=np.uint8)
        try:
            self._call_fleet([canary], [(size, size)], None)
        except Exception:  # noqa: BLE001
            return False
        return True

    def _emit(
        self,
        batch: Sequence[WorkItem],
        predictions: Sequence[dict[str, dict]],
        shadows: Sequence[dict[str, dict]],
        embeddings: Sequence[dict[str, Any]],
    ) -> None:
        failpoints.hit("after_infer")
        now = datetime.now(UTC)
        for item, functions, shadow, embedding in zip(
            batch, predictions, shadows, embeddings, strict=True
        ):
            request = item.request
            assert isinstance(request, AssetRequest)
            for name, prediction in functions.items():
                self._metrics.observe_prediction(name, prediction)
            latency_ms = (time.monotonic() - item.message.polled_at) * 1000
            result = build_result(
                request, item.decoded, functions, item.message.position, now, latency_ms
            )
            # the etag of the bytes fetched, not the one the event claimed; shadows kept apart
            result = replace(
                result,
                etag=item.etag or result.etag,
                shadows=shadow,
                content_hash=item.content_hash,
                embeddings=embedding,
            )
            for name, candidate in shadow.items():
                if name in functions:
                    agree = top_labels(functions[name]) == top_labels(candidate)
                    self._metrics.shadow_agreement.labels(
                        name, "agree" if agree else "differ"
                    ).inc()
            followers = self._followers.pop(id(item), [])
            if item.content_hash is not None and self._dedup_on:
                hit = Hit(item.asset_id or "", functions, embedding, request.tenant)
                self._recent.put(item.content_hash, hit)
                for follower in followers:
                    if covers(hit, self._wanted(follower) or {}):
                        self._emit_reused(follower, hit, "batch")
                    else:  # a fleet swapped in since: its own run
                        self._held.append(follower)
            item.decoded = None
            self._to_store.put((item, result))

    # -- content-hash dedup (consumers.dedup) -------------------------------------------

    def _wanted(self, item: WorkItem) -> dict[str, str] | None:
        request = item.request
        if item.content_hash is None or not isinstance(request, AssetRequest):
            return None
        return wanted_versions(self._fleet.functions, request.functions)

    def _dedup(self, batch: list[WorkItem]) -> list[WorkItem]:
        """The items to run: those whose results cannot be reused, one per content hash
        (the others follow it); the rest are emitted with reused results. All of them when
        dedup is off."""
        if not self._dedup_on:
            return list(batch)
        waiting: list[tuple[WorkItem, dict[str, str]]] = []
        run: list[WorkItem] = []
        for item in batch:
            wanted = self._wanted(item)
            if not wanted:
                run.append(item)
                continue
            hit = self._recent.get(item.content_hash or "")
            if hit is not None and covers(hit, wanted):
                self._emit_reused(item, hit, "recent")
            else:
                waiting.append((item, wanted))
        found = self._ask_store([item.content_hash or "" for item, _ in waiting])
        leaders: dict[tuple[str, tuple[tuple[str, str], ...]], WorkItem] = {}
        for item, wanted in waiting:
            hit = found.get(item.content_hash or "")
            if hit is not None and covers(hit, wanted):
                self._emit_reused(item, hit, "store")
                continue
            key = (item.content_hash or "", tuple(sorted(wanted.items())))
            leader = leaders.get(key)
            if leader is None:
                leaders[key] = item
                run.append(item)
            else:
                self._followers.setdefault(id(leader), []).append(item)
        return run

    def _ask_store(self, content_hashes: list[str]) -> Any:
        if self._stored is None or not content_hashes:
            return {}
        try:
            return self._stored(content_hashes)
        except Exception as exc:  # noqa: BLE001 - no reuse this time; the model runs
            log.warning("stored results could not be looked up", extra={"error": repr(exc)})
            return {}

    def _emit_reused(self, item: WorkItem, hit: Any, source: str) -> None:
        """``item`` with the results of the same bytes that ``hit`` holds: no model call."""
        request = item.request
        assert isinstance(request, AssetRequest)
        wanted = self._wanted(item) or {}
        promotions = getattr(self._fleet, "promotions", None)  # the models' Fleet has them
        functions = reused(hit, wanted, request.tenant, promotions)
        for name, prediction in functions.items():
            self._metrics.observe_prediction(name, prediction)
        latency_ms = (time.monotonic() - item.message.polled_at) * 1000
        now = datetime.now(UTC)
        result = build_result(
            request, item.decoded, functions, item.message.position, now, latency_ms
        )
        result = replace(
            result,
            etag=item.etag or result.etag,
            content_hash=item.content_hash,
            embeddings=dict(getattr(hit, "embeddings", None) or {}),
            reused_from=hit.asset_id,
        )
        self._metrics.inference_reused.labels(source).inc()
        item.decoded = None
        self._to_store.put((item, result))
