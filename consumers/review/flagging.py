"""Which predictions a person should look at (pure, no I/O).

- classify: the margin between the best and the second-best score is below ``margin``
  (``low_margin``);
- tags: a label scored within ``band`` of its threshold, above or below (``near_threshold``;
  the label closest to its threshold is the one proposed);
- detect: a box scored within ``band`` of its label's threshold, above or below
  (``near_threshold``; the box closest to its threshold is proposed), among the result's
  ``candidates`` (the boxes down to the head's score floor); a result without candidates
  shows its objects only, so only the band's upper half is seen, and one without
  ``thresholds`` (written before detect results carried them) is not flagged by this rule;
- the serving and the shadow version disagree (``shadow_disagreement``: another classify
  label, or another set of tags or of box labels; the serving version's proposal is kept);
- a sample of confident predictions for spot checks (``spot_check``): a ``spot_rate`` share
  of the assets, picked by a hash of the asset id and function, so a replay picks the same.

At most one candidate per (asset, function): the first rule that applies.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

from consumers.domain import AssetResult


@dataclass(frozen=True, slots=True)
class ReviewPolicy:
    margin: float = 0.1
    band: float = 0.05
    spot_rate: float = 0.0


@dataclass(frozen=True, slots=True)
class Candidate:
    """One prediction to review."""

    asset_id: str
    uri: str
    tenant: str | None
    function: str
    type: str
    reason: str
    label: str | None
    score: float | None
    scores: dict[str, float]
    model_version: str


def _sampled(asset_id: str, function: str, rate: float) -> bool:
    if rate <= 0:
        return False
    digest = hashlib.sha256(f"{asset_id}\x00{function}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < rate


def _classify(obj: dict[str, Any], policy: ReviewPolicy) -> tuple[str, str | None, float | None]:
    ranked = sorted((float(v) for v in (obj.get("scores") or {}).values()), reverse=True)
    if len(ranked) >= 2 and ranked[0] - ranked[1] < policy.margin:
        return "low_margin", obj.get("label"), obj.get("score")
    return "", obj.get("label"), obj.get("score")


def _tags(obj: dict[str, Any], policy: ReviewPolicy) -> tuple[str, str | None, float | None]:
    scores: dict[str, float] = obj.get("scores") or {}
    thresholds: dict[str, float] = obj.get("thresholds") or {}
    near = [
        (abs(float(scores[label]) - float(t)), label)
        for label, t in thresholds.items()
        if label in scores and abs(float(scores[label]) - float(t)) <= policy.band
    ]
    if near:
        _, label = min(near)
        return "near_threshold", label, float(scores[label])
    tags = obj.get("tags") or []
    best = max(tags, key=lambda t: t["score"], default=None)
    return "", None if best is None else best["label"], None if best is None else best["score"]


def _boxes(obj: dict[str, Any], key: str) -> list[tuple[str, float]]:
    return [(str(o["label"]), float(o["score"])) for o in obj.get(key) or []]


def _detect(obj: dict[str, Any], policy: ReviewPolicy) -> tuple[str, str | None, float | None]:
    thresholds: dict[str, float] = obj.get("thresholds") or {}
    near = [
        (abs(score - float(thresholds[label])), label, score)
        for label, score in _boxes(obj, "candidates") or _boxes(obj, "objects")
        if label in thresholds and abs(score - float(thresholds[label])) <= policy.band
    ]
    if near:
        _, label, score = min(near)
        return "near_threshold", label, score
    best = max(_boxes(obj, "objects"), key=lambda b: b[1], default=None)
    return "", None if best is None else best[0], None if best is None else best[1]


def _best_boxes(obj: dict[str, Any]) -> dict[str, float]:
    """A detect result's scores as a review item shows them: each label's best box (among
    the candidates, below the threshold too, when the result has them)."""
    best: dict[str, float] = {}
    for label, score in _boxes(obj, "candidates") or _boxes(obj, "objects"):
        best[label] = max(best.get(label, 0.0), score)
    return best


def _tag_set(obj: dict[str, Any]) -> set[str]:
    return {str(t["label"]) for t in obj.get("tags") or obj.get("objects") or []}


def _disagree(obj: dict[str, Any], shadow: dict[str, Any] | None) -> bool:
    if shadow is None or shadow.get("type") != obj.get("type"):
        return False
    if obj.get("type") == "classify":
        return bool(shadow.get("label") != obj.get("label"))
    return _tag_set(shadow) != _tag_set(obj)


def flag(result: AssetResult, policy: ReviewPolicy) -> list[Candidate]:
    """The candidates of one stored result, in function order."""
    out = []
    for function in sorted(result.functions):
        obj = result.functions[function]
        kind = obj.get("type")
        if kind == "classify":
            reason, label, score = _classify(obj, policy)
        elif kind == "tags":
            reason, label, score = _tags(obj, policy)
        elif kind == "detect":
            reason, label, score = _detect(obj, policy)
        else:
            continue
        if not reason and _disagree(obj, result.shadows.get(function)):
            reason = "shadow_disagreement"
        if (
            not reason
            and label is not None
            and _sampled(result.asset_id, function, policy.spot_rate)
        ):
            reason = "spot_check"
        if not reason:
            continue
        out.append(
            Candidate(
                asset_id=result.asset_id,
                uri=result.uri,
                tenant=result.tenant,
                function=function,
                type=str(kind),
                reason=reason,
                label=label,
                score=None if score is None else float(score),
                scores=_best_boxes(obj)
                if kind == "detect"
                else {k: float(v) for k, v in (obj.get("scores") or {}).items()},
                model_version=str(obj.get("version", "")),
            )
        )
    return out
