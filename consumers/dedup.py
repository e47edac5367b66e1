"""Content-hash dedup (issue 19 item 5): when may one image's results stand for another's.

Two assets with the same bytes (the same SHA-256) get the same results from the same function
versions, so the inference stage runs the model once and reuses what it gave: within a batch
(the first of the same bytes runs, the others follow it), from recent batches (an in-memory
LRU, which also covers results not yet stored), or from the store (``assets.content_hash``).
A result is reused only when every function the asset asks for has a result of exactly the
version the fleet serves now; each reused result names the asset it came from
(``reused_from``, when it is of the same tenant). Asset ids, URIs, tenants and provenance
stay the asset's own.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from consumers.ports import StoredReuse

RECENT = 4096  # content hashes remembered by the inference stage
DEFAULT_TENANT = "default"  # an event without a tenant (consumers.store.models)


@dataclass(frozen=True, slots=True)
class Hit:
    """Results that may stand for another asset's: where they came from and what they are."""

    asset_id: str
    functions: Mapping[str, dict[str, Any]]
    embeddings: Mapping[str, Any] = field(default_factory=dict)
    tenant: str | None = None  # the source asset's (None: the default tenant)


def wanted_versions(
    fleet_functions: Mapping[str, Any], requested: Collection[str] | None
) -> dict[str, str] | None:
    """Function -> the version the fleet serves, for the functions an asset asks for (``None``:
    all; names not in the fleet are left out, as the fleet does). ``None`` when one of them
    has no version (nothing to compare a stored result with)."""
    names = (
        list(fleet_functions)
        if requested is None
        else [n for n in requested if n in fleet_functions]
    )
    wanted = {}
    for name in names:
        version = getattr(fleet_functions[name], "version", None)
        if not version:
            return None
        wanted[name] = str(version)
    return wanted


def covers(hit: Hit | Any, wanted: Mapping[str, str]) -> bool:
    """Whether ``hit`` holds a result of the served version for every wanted function."""
    functions = getattr(hit, "functions", None)
    if not wanted or not isinstance(functions, Mapping):
        return False
    return all(
        isinstance(functions.get(name), Mapping) and functions[name].get("version") == version
        for name, version in wanted.items()
    )


def reused(
    hit: Hit | Any,
    wanted: Mapping[str, str],
    tenant: str | None = None,
    promotions: Mapping[str, int] | None = None,
) -> dict[str, dict[str, Any]]:
    """Copies of the wanted results of ``hit`` for an asset of ``tenant``, each naming the
    asset it came from when that asset is of the same tenant (another tenant's asset id is
    not shown to this one: the result objects are stored, served and published as the
    asset's own). The model's output only: a stored result's ``tag_set`` is what the mapping
    active when it was written drew, and the write stage draws the reusing asset's from the
    mapping active now (none when it was cleared since: the model's own tags).

    ``promotions`` (the fleet's: function -> its serving version's place in the history;
    ``None``: unknown, left as stored): each copy's ``promotion`` is the one a result the
    fleet gives now carries. The stored one may be older (a version promoted, replaced and
    rolled back to), and the store never lets an earlier place replace a later one."""
    same_tenant = _tenant(getattr(hit, "tenant", None)) == _tenant(tenant)
    copies = {}
    for name in wanted:
        copy = {k: v for k, v in hit.functions[name].items() if k not in ("tag_set", "reused_from")}
        if promotions is not None:
            copy.pop("promotion", None)
            if name in promotions:
                copy["promotion"] = promotions[name]
        if same_tenant:
            copy["reused_from"] = hit.asset_id
        copies[name] = copy
    return copies


def _tenant(tenant: str | None) -> str:
    return tenant or DEFAULT_TENANT


def with_embeddings(
    stored: StoredReuse, embedded: Callable[[Sequence[str]], Collection[str]]
) -> StoredReuse:
    """``stored`` (the store's results by content hash) answering only with source assets
    that have a stored embedding, for a service that keeps embeddings: a reused result gets
    its source's embeddings, and a source tagged while none were kept has none to give (its
    bytes are inferred again, and the embedding written)."""

    def answer(content_hashes: Sequence[str]) -> Mapping[str, Any]:
        found = stored(content_hashes)
        if not found:
            return found
        have = embedded([hit.asset_id for hit in found.values()])
        return {h: hit for h, hit in found.items() if hit.asset_id in have}

    return answer


def stored_reuse(stored: StoredReuse | None, embeddings: Any) -> StoredReuse | None:
    """The store's answer for the inference stage: :func:`with_embeddings` when
    ``embeddings`` (the embedding sink, ``None``: none kept) can tell which assets have one."""
    embedded = getattr(embeddings, "embedded", None)
    if stored is None or embedded is None:
        return stored
    return with_embeddings(stored, embedded)


class RecentResults:
    """The results the inference stage gave for the last ``size`` distinct content hashes."""

    def __init__(self, size: int = RECENT) -> None:
        self._size = size
        self._hits: OrderedDict[str, Hit] = OrderedDict()

    def get(self, content_hash: str) -> Hit | None:
        hit = self._hits.get(content_hash)
        if hit is not None:
            self._hits.move_to_end(content_hash)
        return hit

    def put(self, content_hash: str, hit: Hit) -> None:
        self._hits[content_hash] = hit
        self._hits.move_to_end(content_hash)
        while len(self._hits) > self._size:
            self._hits.popitem(last=False)

    def __len__(self) -> int:
        return len(self._hits)
