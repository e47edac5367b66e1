"""A result's tag set from its stored scores, thresholds and a taxonomy (pure, no model).

The result objects keep every score (classify and tags: ``scores``; detect: ``candidates``, the
boxes at or above the head's floor score), so tags can be drawn again with other thresholds.
:func:`with_tag_set` adds a ``tag_set`` to a result object::

    {"source": "retag" | "model", "mapping_version": "...", "thresholds": {...},
     "tags": [{"label", "score", "threshold", "model_label"[, "box"]}, ...]}

and the store turns a result with a ``tag_set`` into tag rows from it
(:func:`consumers.store.rows.derive_tags`), with its source and mapping version.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from consumers.retag.taxonomy import Taxonomy

# models.heads.tags.DEFAULT_THRESHOLD: a tags result written without its thresholds
TAGS_DEFAULT_THRESHOLD = 0.5

Selected = tuple[str, float, list[float] | None, float | None]  # label, score, box, threshold


def _limit(
    label: str, overrides: Mapping[str, float], model: Mapping[str, Any], default: float | None
) -> float | None:
    if label in overrides:
        return float(overrides[label])
    if "*" in overrides:
        return float(overrides["*"])
    value = model.get(label, model.get("*", default))
    return None if value is None else float(value)


def select(result: Mapping[str, Any], thresholds: Mapping[str, float]) -> list[Selected]:
    """The model labels a result object holds at ``thresholds`` (label -> threshold, ``"*"``
    for every other label; a label without one keeps the model's own threshold).

    classify: its top label, when its score reaches the label's threshold (none: always);
    tags: every label of ``scores`` at or above its threshold, highest first; detect: every
    box of ``candidates`` (``objects`` for results stored before candidates were kept) at or
    above its label's threshold, in the stored (score) order.
    """
    kind = result.get("type")
    if kind == "classify":
        label = result.get("label")
        if label is None:
            return []
        score = float(result["score"])
        limit = _limit(label, thresholds, {}, None)
        return [(label, score, None, limit)] if limit is None or score >= limit else []
    if kind == "tags":
        model = result.get("thresholds") or {}
        scores = result.get("scores")
        if scores is None:  # only the tags above the model's thresholds were kept
            scores = {t["label"]: t["score"] for t in result.get("tags", [])}
        out: list[Selected] = []
        for label, score in scores.items():
            limit = _limit(label, thresholds, model, TAGS_DEFAULT_THRESHOLD)
            assert limit is not None
            if float(score) >= limit:
                out.append((label, float(score), None, limit))
        out.sort(key=lambda s: -s[1])
        return out
    if kind == "detect":
        model = result.get("thresholds") or {}
        boxes = result.get("candidates")
        if boxes is None:
            boxes = result.get("objects", [])
        out = []
        for obj in boxes:
            label, score = obj["label"], float(obj["score"])
            limit = _limit(label, thresholds, model, None)
            if limit is None or score >= limit:
                out.append((label, score, [float(c) for c in obj["box"]], limit))
        return out
    raise ValueError(f"unknown function result type {kind!r}")


def tag_set(
    result: Mapping[str, Any],
    thresholds: Mapping[str, float],
    taxonomy: Taxonomy | None,
    version: str,
    source: str,
) -> dict[str, Any]:
    """The ``tag_set`` of ``result`` (module doc): :func:`select` at ``thresholds``, each
    label expanded by ``taxonomy`` (terms, synonyms, ancestors; a dropped label gives none).
    A term reached twice without a box is kept once, with its best score (its first)."""
    tags: list[dict[str, Any]] = []
    seen: set[tuple[Any, ...]] = set()
    for label, score, box, limit in select(result, thresholds):
        for term in taxonomy.expand(label) if taxonomy is not None else [label]:
            key = (term, None if box is None else tuple(box))
            if key in seen:
                continue
            seen.add(key)
            tag: dict[str, Any] = {
                "label": term,
                "score": score,
                "threshold": limit,
                "model_label": label,
            }
            if box is not None:
                tag["box"] = box
            tags.append(tag)
    return {
        "source": source,
        "mapping_version": version,
        "thresholds": dict(sorted(thresholds.items())),
        "tags": tags,
    }


def with_tag_set(
    result: Mapping[str, Any],
    thresholds: Mapping[str, float],
    taxonomy: Taxonomy | None,
    version: str,
    source: str,
) -> dict[str, Any]:
    """A copy of ``result`` with its :func:`tag_set` (an old one replaced)."""
    raw = {k: v for k, v in result.items() if k != "tag_set"}
    return {**raw, "tag_set": tag_set(raw, thresholds, taxonomy, version, source)}


TagKey = tuple[str, float, tuple[float, ...] | None]


def tag_key(label: str, score: float, box: Iterable[float] | None) -> TagKey:
    """One tag as compared by :func:`effective_key` (scores to 9 decimals)."""
    return (label, round(float(score), 9), None if box is None else tuple(float(c) for c in box))


def effective_key(ai: Iterable[TagKey], decisions: Mapping[str, str]) -> frozenset[Any]:
    """What a person sees of one function's tags on one asset: the AI tags of labels nobody
    decided on, and the labels people said are present (``decisions``: label -> ``present`` |
    ``absent``). Two tag sets with the same key show the same effective tags (thresholds and
    provenance aside), so no result event is due."""
    shown: set[Any] = {t for t in ai if t[0] not in decisions}
    shown |= {("human", label) for label, d in decisions.items() if d == "present"}
    return frozenset(shown)
