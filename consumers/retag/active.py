"""The active mapping applied where results are written (the consumer, ``tagfleet tag``).

``tagfleet taxonomy set`` and ``tagfleet retag`` store the active taxonomy and each function's
thresholds (``tag_mappings``); the write stage gives every result object a ``tag_set`` drawn
through them (:func:`consumers.retag.tagset.with_tag_set`, source ``model``) before it stores
and publishes it, so new results come out as retag would make them. The table is read again
at most every ``ttl_s`` seconds: a change reaches running consumers within that time.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from consumers.domain import AssetResult
from consumers.retag.tagset import with_tag_set
from consumers.retag.taxonomy import Taxonomy, mapping_version, parse_taxonomy

DEFAULT_TTL_S = 10.0
TAXONOMY_SCOPE = "*"  # consumers.store.tagsets.TAXONOMY_SCOPE (the stages do not reach the store)


class MappingRow(Protocol):
    """A ``tag_mappings`` row as the store reads it (consumers.store.tagsets.ActiveMapping)."""

    @property
    def taxonomy(self) -> dict[str, Any] | None: ...
    @property
    def thresholds(self) -> dict[str, float]: ...


class ActiveMappings:
    """A cached view of the active mappings; thread-safe."""

    def __init__(
        self,
        load: Callable[[], Mapping[str, MappingRow]],
        ttl_s: float = DEFAULT_TTL_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._load, self._ttl_s, self._clock = load, ttl_s, clock
        self._lock = threading.Lock()
        self._loaded_at: float | None = None
        self._taxonomy: Taxonomy | None = None
        self._thresholds: dict[str, dict[str, float]] = {}

    def refresh(self) -> None:
        """Read the table again when the cached copy is older than ``ttl_s`` (may raise the
        store's ``TransientError``: the caller retries)."""
        now = self._clock()
        with self._lock:
            if self._loaded_at is not None and now - self._loaded_at < self._ttl_s:
                return
        rows = self._load()
        taxonomy_row = rows.get(TAXONOMY_SCOPE)
        taxonomy = (
            None
            if taxonomy_row is None or taxonomy_row.taxonomy is None
            else parse_taxonomy(taxonomy_row.taxonomy, "the active taxonomy")
        )
        thresholds = {f: dict(m.thresholds) for f, m in rows.items() if f != TAXONOMY_SCOPE}
        with self._lock:
            self._taxonomy, self._thresholds, self._loaded_at = taxonomy, thresholds, now

    def apply(self, result: AssetResult) -> AssetResult:
        """``result`` with a ``tag_set`` on each function a mapping applies to (unchanged
        when none is active)."""
        with self._lock:
            taxonomy, all_thresholds = self._taxonomy, self._thresholds
        if taxonomy is None and not any(f in all_thresholds for f in result.functions):
            return result
        functions = {}
        for name, obj in result.functions.items():
            thresholds = all_thresholds.get(name, {})
            if taxonomy is None and not thresholds:
                functions[name] = obj
                continue
            version = mapping_version(taxonomy, thresholds)
            functions[name] = with_tag_set(obj, thresholds, taxonomy, version, "model")
        return dataclasses.replace(result, functions=functions)
