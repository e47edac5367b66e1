"""``tagfleet diff FUNCTION``: what a shadow candidate would change, over the assets both saw.

Pure: :func:`diff` takes (asset, serving result, shadow result) triples as the store keeps
them (``TagStore.shadow_pairs``) and returns the report; :func:`markdown` renders it. A
result's decision is its classify label, its tags, or its detected labels (the same rule as
``tagfleet_shadow_agreement_total``); its top label is the highest-scored one.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Sequence
from typing import Any, Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

Pair = tuple[str, dict[str, Any], dict[str, Any]]


class DiffOptions(BaseSettings):
    """``diff``'s options."""

    model_config = SettingsConfigDict(env_prefix="TAGFLEET_DIFF_", frozen=True, extra="ignore")

    version: str | None = Field(None, description="the shadow version (unset: the newest kept)")
    format: Literal["markdown", "json"] = Field("markdown", description="how to print the report")
    top: int = Field(20, ge=1, description="how many of the most changed assets to list")
    link_template: str = Field(
        "{asset_id}",
        description="how an asset is linked in the list ({asset_id} is replaced), e.g."
        " https://dam.example.com/assets?id={asset_id}",
    )


def decision(result: dict[str, Any]) -> frozenset[str]:
    if result.get("type") == "classify":
        return frozenset([str(result.get("label"))])
    entries = result.get("tags", result.get("objects", []))
    return frozenset(str(e["label"]) for e in entries)


def _scores(result: dict[str, Any]) -> dict[str, float]:
    if "scores" in result:
        return {str(k): float(v) for k, v in result["scores"].items()}
    best: dict[str, float] = {}
    for obj in result.get("objects", []):
        best[obj["label"]] = max(best.get(obj["label"], 0.0), float(obj["score"]))
    return best


def _top(result: dict[str, Any]) -> tuple[str | None, float | None]:
    scores = _scores(result)
    if not scores:
        return None, None
    label = max(scores, key=lambda k: scores[k])
    return label, scores[label]


def diff(
    function: str, pairs: Sequence[Pair], *, top: int = 20, link_template: str = "{asset_id}"
) -> dict[str, Any]:
    """The report: agreement rate, per-label added/removed counts, top-label changes with
    scores, mean score shift per label, and the assets that changed most (linked)."""
    added: Counter[str] = Counter()
    removed: Counter[str] = Counter()
    shifts: dict[str, list[float]] = defaultdict(list)
    changed_top: list[dict[str, Any]] = []
    magnitude: list[tuple[float, str]] = []
    agree = 0
    versions: set[tuple[str, str]] = set()
    for asset, current, shadow in pairs:
        versions.add((str(current.get("version")), str(shadow.get("version"))))
        before, after = decision(current), decision(shadow)
        agree += before == after
        added.update(after - before)
        removed.update(before - after)
        old, new = _scores(current), _scores(shadow)
        for label in old.keys() & new.keys():
            shifts[label].append(new[label] - old[label])
        was, was_score = _top(current)
        now, now_score = _top(shadow)
        if was != now:
            changed_top.append(
                {
                    "asset_id": asset,
                    "from": was,
                    "from_score": was_score,
                    "to": now,
                    "to_score": now_score,
                }
            )
        size = len(before ^ after) + sum(
            abs(new.get(k, 0.0) - old.get(k, 0.0)) for k in old.keys() | new.keys()
        )
        magnitude.append((size, asset))
    known_before = set().union(*(_scores(c) for _, c, _ in pairs)) if pairs else set()
    known_after = set().union(*(_scores(s) for _, _, s in pairs)) if pairs else set()
    n = len(pairs)
    most = [a for size, a in sorted(magnitude, key=lambda x: (-x[0], x[1])) if size > 0][:top]
    return {
        "function": function,
        "versions": [{"serving": s, "shadow": h} for s, h in sorted(versions)],
        "assets": n,
        "agreement": (agree / n) if n else None,
        "labels_dropped": sorted(known_before - known_after),
        "labels_new": sorted(known_after - known_before),
        "labels": {
            label: {"added": added[label], "removed": removed[label]}
            for label in sorted(added.keys() | removed.keys())
        },
        "top_label_changes": changed_top,
        "score_shift": {
            label: {"mean": sum(v) / len(v), "max_abs": max(abs(x) for x in v)}
            for label, v in sorted(shifts.items())
        },
        "most_changed": [
            {"asset_id": a, "link": link_template.replace("{asset_id}", a)} for a in most
        ],
    }


def markdown(report: dict[str, Any]) -> str:
    """The report for a person: tables and a list of links."""
    n = report["assets"]
    rate = "-" if report["agreement"] is None else f"{report['agreement']:.1%}"
    versions = ", ".join(f"{v['serving']} -> {v['shadow']}" for v in report["versions"]) or "-"
    lines = [
        f"# Shadow diff of {report['function']} ({versions})",
        "",
        f"{n} assets seen by both; agreement {rate}.",
        "",
        f"Labels the shadow no longer has: {', '.join(report['labels_dropped']) or 'none'}.",
        f"Labels only the shadow has: {', '.join(report['labels_new']) or 'none'}.",
        "",
        "| label | added | removed |",
        "|---|---|---|",
    ]
    lines += [f"| {k} | {v['added']} | {v['removed']} |" for k, v in report["labels"].items()]
    lines += ["", "## Top label changed", "", "| asset | from | to |", "|---|---|---|"]
    for c in report["top_label_changes"]:
        lines.append(
            f"| {c['asset_id']} | {c['from']} ({_f(c['from_score'])}) |"
            f" {c['to']} ({_f(c['to_score'])}) |"
        )
    lines += ["", "## Score shift", "", "| label | mean | largest |", "|---|---|---|"]
    for label, s in report["score_shift"].items():
        lines.append(f"| {label} | {s['mean']:+.4f} | {s['max_abs']:.4f} |")
    lines += ["", "## Changed most", ""]
    lines += [f"- [{m['asset_id']}]({m['link']})" for m in report["most_changed"]]
    return "\n".join([*lines, ""])


def _f(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"
