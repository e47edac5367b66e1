"""Pure mapping between result objects and tag rows, and the store's public value types."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import RowMapping

from consumers.domain import AssetResult, SourcePosition
from consumers.store.models import DEFAULT_TENANT

Box = tuple[float, float, float, float]
FunctionKey = tuple[str, str]  # (asset_id, function)


@dataclass(frozen=True, slots=True)
class SaveStats:
    """What one :meth:`TagStore.save` changed.

    ``replaced_functions`` counts (asset, function) results written (first time, or a new model
    version or etag); ``unchanged_functions`` those skipped because the stored version and etag
    already matched. Tags are counted in rows. ``stale`` names the assets whose result was
    not applied because a newer event of the object is stored (:mod:`consumers.sequencer`).
    """

    inserted_tags: int = 0
    deleted_tags: int = 0
    unchanged_functions: int = 0
    replaced_functions: int = 0
    stale: tuple[str, ...] = ()  # assets whose result is older than their stored event


@dataclass(frozen=True, slots=True)
class TagRow:
    """One stored tag with its provenance."""

    asset_id: str
    function: str
    label: str
    ordinal: int
    score: float
    threshold: float | None
    box: Box | None
    model_version: str
    source: SourcePosition | None
    created_at: datetime


@dataclass(frozen=True, slots=True)
class DerivedTag:
    """A tag read out of one function's result object, before provenance is attached."""

    label: str
    ordinal: int
    score: float
    threshold: float | None
    box: Box | None


def derive_tags(result: Mapping[str, Any]) -> list[DerivedTag]:
    """The tags a function result object stands for (result-event contract, DESIGN.md).

    classify: its one ``label``/``score``; tags: each entry of ``tags``; detect: each entry of
    ``objects`` with its box. ``threshold`` comes from the optional ``thresholds`` map (label ->
    threshold); a result with a ``tag_set`` (:mod:`consumers.retag.tagset`) stands for the
    tags of its set instead, each with its own threshold. ``ordinal`` numbers repeats of a
    label in list order (detect boxes), from 0.
    Raises ``ValueError`` for an unknown ``type``: results come from our fleet, so that is a bug.
    """
    kind = result.get("type")
    tag_set = result.get("tag_set")
    if tag_set is not None:  # drawn through thresholds and a taxonomy (consumers.retag)
        chosen: list[Mapping[str, Any]] = list(tag_set["tags"])
        limits = {t["label"]: t["threshold"] for t in chosen if t.get("threshold") is not None}
        return _derived(chosen, limits)
    if kind == "classify":
        entries: list[Mapping[str, Any]] = (
            [{"label": result["label"], "score": result["score"]}]
            if result.get("label") is not None
            else []
        )
    elif kind == "tags":
        entries = list(result.get("tags", []))
    elif kind == "detect":
        entries = list(result.get("objects", []))
    else:
        raise ValueError(f"unknown function result type {kind!r}")
    return _derived(entries, result.get("thresholds") or {})


def _derived(entries: list[Mapping[str, Any]], thresholds: Mapping[str, float]) -> list[DerivedTag]:
    seen: Counter[str] = Counter()
    tags = []
    for entry in entries:
        label = str(entry["label"])
        box = entry.get("box")
        threshold = thresholds.get(label)
        tags.append(
            DerivedTag(
                label=label,
                ordinal=seen[label],
                score=float(entry["score"]),
                threshold=None if threshold is None else float(threshold),
                box=None if box is None else _box(box),
            )
        )
        seen[label] += 1
    return tags


def _box(values: Any) -> Box:
    x1, y1, x2, y2 = (float(v) for v in values)
    return (x1, y1, x2, y2)


def source_values(source: SourcePosition | None) -> dict[str, Any]:
    """The provenance columns for ``source`` (all null without one)."""
    return {
        "source_topic": source.topic if source else None,
        "source_partition": source.partition if source else None,
        "source_offset": source.offset if source else None,
    }


def asset_row(r: AssetResult, now: datetime) -> dict[str, Any]:
    """The ``assets`` row of a result; ``now`` is the write time."""
    return {
        "asset_id": r.asset_id,
        "uri": r.uri,
        "etag": r.etag,
        "width": r.width,
        "height": r.height,
        "removed": False,
        "updated_at": now,
        "sequencer": r.sequencer,
        "tenant": r.tenant or DEFAULT_TENANT,
        "content_hash": r.content_hash,
        **source_values(r.source),
    }


def result_row(
    key: FunctionKey, r: AssetResult, obj: dict[str, Any], now: datetime
) -> dict[str, Any]:
    """The ``function_results`` row of one function's result object."""
    return {
        "asset_id": key[0],
        "function": key[1],
        "type": obj["type"],
        "model_version": obj["version"],
        "etag": r.etag,
        "result": obj,
        "processed_at": r.processed_at,
        "stored_at": now,
        "promotion": obj.get("promotion"),
        "served": True,
        **source_values(r.source),
    }


def tag_entries(obj: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The tag rows of a result object without key, time and Kafka columns: what the model
    (or its ``tag_set``: a mapping, a retag) says, with the tag set's provenance."""
    tag_set = obj.get("tag_set") or {}
    provenance = {
        "tag_source": tag_set.get("source", "model"),
        "mapping_version": tag_set.get("mapping_version"),
    }
    entries = []
    for tag in derive_tags(obj):
        x1, y1, x2, y2 = tag.box if tag.box else (None, None, None, None)
        entries.append(
            {
                "label": tag.label,
                "ordinal": tag.ordinal,
                "score": tag.score,
                "threshold": tag.threshold,
                "x1": x1,
                "y1": y1,
                "x2": x2,
                "y2": y2,
                **provenance,
            }
        )
    return entries


def tag_rows(key: FunctionKey, r: AssetResult, obj: dict[str, Any]) -> list[dict[str, Any]]:
    """The ``tags`` rows of one function's result object, with provenance."""
    extra = {
        "asset_id": key[0],
        "function": key[1],
        "model_version": obj["version"],
        "created_at": r.processed_at,
        **source_values(r.source),
    }
    return [{**entry, **extra} for entry in tag_entries(obj)]


def tag_row(row: RowMapping) -> TagRow:
    """A ``tags`` row read back as a :class:`TagRow`."""
    has_box = row["x1"] is not None
    has_source = row["source_topic"] is not None
    return TagRow(
        asset_id=row["asset_id"],
        function=row["function"],
        label=row["label"],
        ordinal=row["ordinal"],
        score=row["score"],
        threshold=row["threshold"],
        box=(row["x1"], row["y1"], row["x2"], row["y2"]) if has_box else None,
        model_version=row["model_version"],
        source=(
            SourcePosition(row["source_topic"], row["source_partition"], row["source_offset"])
            if has_source
            else None
        ),
        created_at=row["created_at"],
    )
