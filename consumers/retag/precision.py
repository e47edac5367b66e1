"""Thresholds chosen for a target precision on people's labels (pure).

People's decisions in the store are the ground truth: ``present`` a positive, ``absent`` a
negative of that label. For each label with at least ``min_labels`` of each, the threshold is
the lowest stored score at which the labelled assets' precision reaches the target (the most
recall at that precision). A label with fewer labels, or whose precision never reaches the
target, gets no threshold (it keeps the one it has) and is reported with the reason.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from consumers.retag.tagset import select


@dataclass(frozen=True, slots=True)
class Calibration:
    """Thresholds per label, and why each other label got none."""

    thresholds: dict[str, float] = field(default_factory=dict)
    precision: dict[str, float] = field(default_factory=dict)  # reached on the labels
    skipped: dict[str, str] = field(default_factory=dict)


def label_score(result: dict[str, Any], label: str) -> float | None:
    """The score a result gives ``label`` (detect: its best box); None when it never proposes
    it (classify: another top label)."""
    scores = [s for lab, s, _, _ in select(result, {"*": 0.0}) if lab == label]
    return max(scores) if scores else None


def calibrate(
    labelled: Iterable[tuple[dict[str, Any], str, str]], target: float, min_labels: int
) -> Calibration:
    """Thresholds from (stored result, label, decision) triples (module doc)."""
    by_label: dict[str, tuple[list[float | None], list[float | None]]] = {}
    for result, label, decision in labelled:
        pos, neg = by_label.setdefault(label, ([], []))
        (pos if decision == "present" else neg).append(label_score(result, label))
    out = Calibration()
    for label, (pos, neg) in sorted(by_label.items()):
        if len(pos) < min_labels or len(neg) < min_labels:
            out.skipped[label] = (
                f"{len(pos)} present and {len(neg)} absent labels; {min_labels} of each needed"
            )
            continue
        best: tuple[float, float] | None = None
        for t in sorted({s for s in pos + neg if s is not None}):
            tp = sum(1 for s in pos if s is not None and s >= t)
            fp = sum(1 for s in neg if s is not None and s >= t)
            if tp and tp / (tp + fp) >= target:
                best = (t, tp / (tp + fp))
                break
        if best is None:
            out.skipped[label] = f"no threshold reaches precision {target} on its labels"
        else:
            out.thresholds[label], out.precision[label] = best
    return out
