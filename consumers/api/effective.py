"""Effective tags: a person's decisions over the model's tags (pure, no I/O).

Per (function, label): a human ``absent`` (rejected) removes every AI tag of it, whatever
model version produced them, so a newer version never brings it back; a human ``present``
(confirmed or added) is a tag of origin ``human`` with who and when, keeping the AI's
provenance beside it when the model proposed it too; otherwise the AI tags stand as stored.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from consumers.results import rfc3339


def ai_tag(row: Any) -> dict[str, Any]:
    """One stored AI tag with its provenance (a ``tags`` row: a mapping by column name)."""
    tag: dict[str, Any] = {
        "function": row["function"],
        "label": row["label"],
        "origin": "ai",
        "score": row["score"],
        "threshold": row["threshold"],
        "model_version": row["model_version"],
        "time": rfc3339(row["created_at"]),
        "source": (
            None
            if row["source_topic"] is None
            else {
                "topic": row["source_topic"],
                "partition": row["source_partition"],
                "offset": row["source_offset"],
            }
        ),
    }
    if row["x1"] is not None:
        tag["box"] = [row["x1"], row["y1"], row["x2"], row["y2"]]
    version = row.get("mapping_version")
    if version is not None:  # drawn through a taxonomy and thresholds (docs/library.md)
        tag["mapping"] = {"source": row.get("tag_source"), "version": version}
    return tag


def human_label(row: Any) -> dict[str, Any]:
    """One human decision (a ``human_labels`` row)."""
    decided: datetime = row["decided_at"]
    return {
        "function": row["function"],
        "label": row["label"],
        "decision": row["decision"],
        "by": row["actor"],
        "time": rfc3339(decided),
    }


def effective_tags(ai: Sequence[Any], human: Sequence[Any]) -> list[dict[str, Any]]:
    """The tags that hold for an asset, sorted by function and label (see module doc)."""
    decisions = {(h["function"], h["label"]): h for h in human}
    out: list[dict[str, Any]] = []
    proposed: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for row in ai:
        proposed.setdefault((row["function"], row["label"]), []).append(ai_tag(row))
    for key in sorted(set(proposed) | set(decisions)):
        decision = decisions.get(key)
        if decision is None:
            out.extend(proposed[key])
        elif decision["decision"] == "present":
            person = human_label(decision)
            out.append(
                {
                    "function": key[0],
                    "label": key[1],
                    "origin": "human",
                    "by": person["by"],
                    "time": person["time"],
                    "ai": proposed.get(key, []),
                }
            )
    return out
