"""``tagfleet dataset export``: the next training set from people's corrections.

Reads one function's human labels of one tenant (``human_labels``, docs/store.md) and writes
the JSONL manifest of DESIGN.md (``{"image": "s3://...", "label": L}`` for classify,
``{"image": ..., "labels": [...]}`` for tags) to ``OUT/manifest.jsonl``, with
``OUT/summary.json`` (counts per label, the labels with too few samples).

- classify: an asset's label is the one a person confirmed or added (``present``); an asset
  with only rejections, or with two present labels, is left out (counted as such).
- tags: an asset's labels are those a person marked present; a rejected label is absent
  (an asset whose labels were all rejected is a negative example with ``labels: []``).
- ``include_ai``: also the assets nobody labelled, with the AI tags scored at least
  ``min_score`` (confident ones), never a label a person rejected.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from consumers.store.errors import translate_errors
from consumers.store.models import assets, function_results, human_labels, tags


@dataclass
class ExportSummary:
    function: str
    type: str
    tenant: str
    samples: int = 0
    from_people: int = 0
    from_ai: int = 0
    left_out: dict[str, int] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)
    too_few: list[str] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        return self.__dict__.copy()


class NothingToExport(Exception):
    """The function has no stored result and no human label for this tenant."""


def export(
    engine: sa.Engine,
    function: str,
    out: Path,
    *,
    tenant: str,
    include_ai: bool = False,
    min_score: float = 0.9,
    min_samples: int = 5,
) -> ExportSummary:
    """Write the manifest and the summary; return the summary."""
    a, h, fr, t = assets.c, human_labels.c, function_results.c, tags.c
    live = sa.and_(a.tenant == tenant, a.removed.is_(False))
    with translate_errors("dataset_export"), engine.connect() as conn:
        kind = conn.execute(
            sa.select(fr.type)
            .join(assets, a.asset_id == fr.asset_id)
            .where(fr.function == function, live)
            .limit(1)
        ).scalar()
        decided = conn.execute(
            sa.select(h.asset_id, a.uri, h.label, h.decision)
            .join(assets, a.asset_id == h.asset_id)
            .where(h.function == function, live)
            .order_by(h.asset_id, h.label)
        ).all()
        ai: Sequence[Any] = []
        if include_ai:
            ai = conn.execute(
                sa.select(t.asset_id, a.uri, t.label)
                .join(assets, a.asset_id == t.asset_id)
                .where(t.function == function, t.score >= min_score, live)
                .order_by(t.asset_id, t.label)
            ).all()
    if kind is None and not decided:
        raise NothingToExport(f"no results and no human labels of {function!r} for {tenant!r}")
    summary = ExportSummary(function=function, type=kind or "classify", tenant=tenant)
    people: dict[str, tuple[str, set[str], set[str]]] = {}
    for asset_id, uri, label, decision in decided:
        entry = people.setdefault(asset_id, (uri, set(), set()))
        (entry[1] if decision == "present" else entry[2]).add(label)
    machine: dict[str, tuple[str, set[str]]] = {}
    for asset_id, uri, label in ai:
        if asset_id not in people:
            machine.setdefault(asset_id, (uri, set()))[1].add(label)
    lines: list[dict[str, Any]] = []
    counts: Counter[str] = Counter()
    left_out: Counter[str] = Counter()
    for asset_id in sorted(set(people) | set(machine)):
        if asset_id in people:
            uri, present, _absent = people[asset_id]
            source = "people"
        else:
            uri, present = machine[asset_id]
            source = "ai"
        if summary.type == "classify":
            if len(present) != 1:
                left_out["several labels" if present else "only rejections"] += 1
                continue
            (label,) = present
            lines.append({"image": uri, "label": label})
            counts[label] += 1
        else:
            lines.append({"image": uri, "labels": sorted(present)})
            counts.update(present)
        if source == "people":
            summary.from_people += 1
        else:
            summary.from_ai += 1
    summary.samples = len(lines)
    summary.counts = dict(sorted(counts.items()))
    summary.left_out = dict(left_out)
    summary.too_few = sorted(label for label, n in counts.items() if n < min_samples)
    out.mkdir(parents=True, exist_ok=True)
    with (out / "manifest.jsonl").open("w") as f:
        for line in lines:
            f.write(json.dumps(line, ensure_ascii=False) + "\n")
    (out / "summary.json").write_text(json.dumps(summary.as_json(), indent=2) + "\n")
    return summary
