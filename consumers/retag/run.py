"""``tagfleet retag``: tag sets drawn again from the stored scores, in batches, no model.

Per page of stored results (asset id order, bounded memory): the new tag set
(:func:`consumers.retag.tagset.with_tag_set`), the assets whose tag rows differ (or carry
another mapping version) written in one transaction, and a result event published for each
asset whose *effective* tags changed (people's decisions over the AI tags), acknowledged
before that transaction commits: an interrupted run leaves no write without its event, and
running it again finishes the job (assets already at this mapping are neither written nor
announced again).
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol, TypeVar

from tqdm import tqdm

from consumers.domain import AssetResult
from consumers.ports import OutRecord, RecordProducer
from consumers.results import encode_event, result_event
from consumers.retag.tagset import effective_key, tag_key, with_tag_set
from consumers.retag.taxonomy import Taxonomy, mapping_version
from consumers.retry import retry_transient
from consumers.store.rows import tag_entries
from consumers.store.tagsets import StoredResult

log = logging.getLogger(__name__)

SOURCE = "retag"
RETRY_S = 300.0  # how long one transient fault is retried before the run stops
_T = TypeVar("_T")


class RetagStore(Protocol):
    def stored_results(
        self, function: str, tenant: str | None, after: str, limit: int
    ) -> list[StoredResult]: ...
    def write_tag_sets(
        self,
        function: str,
        new_tags: Sequence[tuple[StoredResult, Sequence[Mapping[str, Any]]]],
        before_commit: Callable[[set[str]], None] | None = None,
    ) -> set[str]: ...


@dataclass
class RetagReport:
    """What one run did."""

    version: str
    scanned: int = 0
    rewritten: int = 0  # assets whose tag rows were written
    changed: int = 0  # assets whose effective tags changed (one event each)
    moved_on: int = 0  # results the consumer replaced while the run read them (left alone)
    tags_before: int = 0
    tags_after: int = 0
    changed_assets: list[str] = field(default_factory=list)  # the first 1000

    def summary(self) -> str:
        return (
            f"mapping {self.version}: {self.scanned} results read, {self.rewritten} tag sets"
            f" written, {self.changed} assets' effective tags changed (events published),"
            f" {self.moved_on} replaced by the consumer meanwhile; tags {self.tags_before}"
            f" -> {self.tags_after}"
        )


def retag(
    store: RetagStore,
    function: str,
    *,
    thresholds: Mapping[str, float],
    taxonomy: Taxonomy | None,
    tenant: str | None = None,
    skip_tenants: frozenset[str] = frozenset(),
    producer: RecordProducer | None = None,
    results_topic: str = "",
    batch_size: int = 2000,
    dry_run: bool = False,
    progress: bool = True,
    clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    retry_s: float = RETRY_S,
) -> RetagReport:
    """Draw ``function``'s tags again from its stored results at ``thresholds`` through
    ``taxonomy`` (one tenant, or all but ``skip_tenants``), write them with their provenance
    and publish a result event per asset whose effective tags changed (module doc). No model
    is loaded.

    A transient fault (the database restarting, the broker away) is retried, the page again
    from its read, for up to ``retry_s`` seconds per fault; then the ``TransientError`` (as
    :class:`~consumers.retry.GaveUp`) propagates, the page it was on not written."""
    version = mapping_version(taxonomy, thresholds)
    report = RetagReport(version)
    after = ""
    bar = tqdm(unit="result", desc=f"retag {function}", disable=not progress)

    def read() -> list[StoredResult]:
        return store.stored_results(function, tenant, after, batch_size)

    try:
        while page := _patiently(read, "read", retry_s):
            after = page[-1].asset_id
            writes: list[tuple[StoredResult, list[dict[str, Any]]]] = []
            events: dict[str, bytes] = {}
            now = clock()
            for stored in page:
                if stored.tenant in skip_tenants:
                    continue
                new = with_tag_set(stored.result, thresholds, taxonomy, version, SOURCE)
                entries = tag_entries(new)
                new_keys = [tag_key(e["label"], e["score"], _box(e)) for e in entries]
                old_keys = [tag_key(*t) for t in stored.tags]
                report.tags_before += len(old_keys)
                report.tags_after += len(new_keys)
                if sorted(new_keys, key=repr) != sorted(old_keys, key=repr) or (
                    new_keys and stored.mapping_versions != {version}
                ):
                    writes.append((stored, entries))
                if effective_key(new_keys, stored.decisions) != effective_key(
                    old_keys, stored.decisions
                ):
                    events[stored.asset_id] = _event(stored, function, new, now)
            report.scanned += sum(1 for s in page if s.tenant not in skip_tenants)
            if writes and not dry_run:

                def publish(written: set[str], events: dict[str, bytes] = events) -> None:
                    records = [
                        OutRecord(results_topic, a.encode(), events[a])
                        for a in sorted(written)
                        if a in events
                    ]
                    if producer is not None and results_topic and records:
                        producer.send_all(records)

                written = _patiently(
                    functools.partial(store.write_tag_sets, function, writes, publish),
                    "write",
                    retry_s,
                )
                report.moved_on += len(writes) - len(written)
            else:
                written = {s.asset_id for s, _ in writes}
            report.rewritten += len(written)
            changed = sorted(a for a in events if a in written)
            report.changed += len(changed)
            report.changed_assets.extend(changed[: max(0, 1000 - len(report.changed_assets))])
            bar.update(len(page))
    finally:
        bar.close()
    return report


def _patiently(call: Callable[[], _T], what: str, budget_s: float) -> _T:
    """``call()``, retrying transient faults for up to ``budget_s`` seconds."""
    started = time.monotonic()
    return retry_transient(call, f"retag {what}", lambda: time.monotonic() - started > budget_s)


def _box(entry: Mapping[str, Any]) -> tuple[float, ...] | None:
    if entry["x1"] is None:
        return None
    return (entry["x1"], entry["y1"], entry["x2"], entry["y2"])


def _event(stored: StoredResult, function: str, result: dict[str, Any], now: datetime) -> bytes:
    """The result event (consumers.results, the consumer's schema) of one retagged asset: its
    function's result object with the new ``tag_set``."""
    asset = AssetResult(
        asset_id=stored.asset_id,
        uri=stored.uri,
        etag=stored.etag,
        width=stored.width or 0,
        height=stored.height or 0,
        functions={function: result},
        source=None,
        processed_at=now,
        latency_ms=None,
        tenant=stored.tenant,
    )
    return encode_event(result_event(asset))
