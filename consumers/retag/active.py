"""The active mapping applied where results are written (the consumer, ``tagfleet tag``).

``tagfleet taxonomy set`` and ``tagfleet retag`` store the active taxonomy and each function's
thresholds (``tag_mappings``); the write stage gives every result object a ``tag_set`` drawn
through them (:func:`consumers.retag.tagset.with_tag_set`, source ``model``) before it stores
and publishes it, so new results come out as retag would make them. The table is read again
at most every ``ttl_s`` seconds: a change reaches running consumers within that time. Each
mapping is per tenant (``tagfleet retag F --tenant A``): a result gets its tenant's own
taxonomy and thresholds where it has them, the default (tenant ``*``) ones where not.
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
ALL_TENANTS = "*"  # consumers.store.tagsets.ALL_TENANTS
DEFAULT_TENANT = "default"  # the store's tenant of a result without one (consumers.store.models)


class MappingRow(Protocol):
    """A ``tag_mappings`` row as the store reads it (consumers.store.tagsets.ActiveMapping)."""

    @property
    def taxonomy(self) -> dict[str, Any] | None: ...
    @property
    def thresholds(self) -> dict[str, float]: ...


class ActiveMappings:
    """A cached view of the active mappings; thread-safe. Rows are keyed (function,
    tenant); a tenant's own row of a function (or of the taxonomy) wins over the
    :data:`ALL_TENANTS` one."""

    def __init__(
        self,
        load: Callable[[], Mapping[tuple[str, str], MappingRow]],
        ttl_s: float = DEFAULT_TTL_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._load, self._ttl_s, self._clock = load, ttl_s, clock
        self._lock = threading.Lock()
        self._loaded_at: float | None = None
        self._taxonomies: dict[str, Taxonomy | None] = {}  # by tenant
        self._thresholds: dict[tuple[str, str], dict[str, float]] = {}  # by (function, tenant)

    def refresh(self) -> None:
        """Read the table again when the cached copy is older than ``ttl_s`` (may raise the
        store's ``TransientError``: the caller retries)."""
        now = self._clock()
        with self._lock:
            if self._loaded_at is not None and now - self._loaded_at < self._ttl_s:
                return
        rows = self._load()
        taxonomies = {
            tenant: None
            if row.taxonomy is None
            else parse_taxonomy(row.taxonomy, f"the active taxonomy of tenant {tenant!r}")
            for (function, tenant), row in rows.items()
            if function == TAXONOMY_SCOPE
        }
        thresholds = {
            key: dict(m.thresholds) for key, m in rows.items() if key[0] != TAXONOMY_SCOPE
        }
        with self._lock:
            self._taxonomies, self._thresholds = taxonomies, thresholds
            self._loaded_at = now

    def mapping(
        self, function: str, tenant: str | None
    ) -> tuple[Taxonomy | None, dict[str, float]]:
        """The taxonomy and thresholds that apply to ``function``'s results of ``tenant``
        (``None``: the store's default tenant)."""
        tenant = DEFAULT_TENANT if tenant is None else tenant
        with self._lock:
            taxonomies, all_thresholds = self._taxonomies, self._thresholds
        taxonomy = taxonomies.get(tenant, taxonomies.get(ALL_TENANTS))
        thresholds = all_thresholds.get(
            (function, tenant), all_thresholds.get((function, ALL_TENANTS), {})
        )
        return taxonomy, thresholds

    def apply(self, result: AssetResult) -> AssetResult:
        """``result`` with a ``tag_set`` on each function a mapping of its tenant applies to
        (unchanged when none is active)."""
        functions = {}
        changed = False
        for name, obj in result.functions.items():
            taxonomy, thresholds = self.mapping(name, result.tenant)
            if taxonomy is None and not thresholds:
                functions[name] = obj
                continue
            version = mapping_version(taxonomy, thresholds)
            functions[name] = with_tag_set(obj, thresholds, taxonomy, version, "model")
            changed = True
        return dataclasses.replace(result, functions=functions) if changed else result
