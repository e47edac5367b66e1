"""Evaluation reports for every task: ``report.json``, ``report.md`` and the PNG plots."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from models.manifest import FunctionType
from models.training.plots import confusion_png, pr_png

if TYPE_CHECKING:
    from models.artifacts import Artifact
    from models.training.evaluation import Evaluation

HEADLINE = {
    FunctionType.CLASSIFY: ("accuracy", "macro_f1"),
    FunctionType.TAGS: ("micro_f1", "macro_f1"),
    FunctionType.DETECT: ("map50", "map50_95"),
}


def _markdown(report: dict[str, Any]) -> str:
    keys = HEADLINE[FunctionType(report["type"])]
    lines = [
        f"# {report['name']} ({report['type']}), version {report['version']}",
        "",
        f"Evaluated on {report['split']} ({report['metrics']['samples']} images).",
        "",
    ]
    prev = report.get("previous")
    header = "| metric | this version |" + (f" previous ({prev['version']}) |" if prev else "")
    lines += [header, "|---|---|" + ("---|" if prev else "")]
    for key in keys:
        row = f"| {key} | {report['metrics'][key]:.4f} |"
        if prev:
            row += f" {prev['metrics'][key]:.4f} |"
        lines.append(row)
    per_label = report["metrics"]["per_label"]
    ap = any("ap50" in m for m in per_label.values())  # detect: AP per label as well
    lines += [
        "",
        "| label | precision | recall | F1 | support |" + (" AP50 | AP50:95 |" * ap),
        "|---|---|---|---|---|" + ("---|---|" * ap),
    ]
    for label, m in per_label.items():
        row = (
            f"| {label} | {m['precision']:.3f} | {m['recall']:.3f} | {m['f1']:.3f} | "
            f"{m['support']} |"
        )
        if ap:
            row += "".join(
                f" {'-' if m[k] is None else format(m[k], '.3f')} |" for k in ("ap50", "ap50_95")
            )
        lines.append(row)
    lines += _training_lines(report.get("training"))
    lines += ["", *[f"![{name}]({name})" for name in report["plots"]], ""]
    return "\n".join(lines)


def _training_lines(training: dict[str, Any] | None) -> list[str]:
    """The "Training" section: the recipe's settings and, per run, what it kept and its time."""
    if not training:
        return []
    recipe = training["recipe"]
    settings = ", ".join(f"{k} {v}" for k, v in recipe.items() if k != "recipe")
    lines = [
        "",
        "## Training",
        "",
        f"Recipe `{recipe['recipe']}` ({settings}); {training['seconds']:.1f} s in all.",
        f"Pooling kept: `{training['pooling']}`, chosen on validation macro-F1.",
        "",
        "| run | evaluations | kept | best | validation macro-F1 | seconds |",
        "|---|---|---|---|---|---|",
    ]
    for run in training.get("runs", []):
        lines.append(
            f"| {run['pooling']} | {len(run['history'])} | {run['kept']} | {run['best']} | "
            f"{run['val_macro_f1']:.4f} | {run['seconds']:.1f} |"
        )
    return lines


def build_report(
    artifact: Artifact,
    current: Evaluation,
    previous: Artifact | None = None,
    before: Evaluation | None = None,
    split: str = "held-out split",
    extra: dict[str, Any] | None = None,
) -> tuple[dict[str, Any], dict[str, bytes]]:
    """(report dict, files: report.json, report.md and PNGs) for ``artifact``'s evaluation."""
    m = artifact.manifest
    files: dict[str, bytes] = {}
    if "confusion" in current.metrics:
        files["confusion.png"] = confusion_png(current.metrics["confusion"], m.labels)
    files.update(
        current.plots or {"pr_curves.png": pr_png(current.targets, current.scores, m.labels)}
    )
    report: dict[str, Any] = {
        "name": m.name,
        "type": m.type.value,
        "version": m.version,
        "split": split,
        "metrics": current.metrics,
        "plots": sorted(files),
        **(extra or {}),
    }
    if previous is not None and before is not None:
        report["previous"] = {"version": previous.manifest.version, "metrics": before.metrics}
    files["report.json"] = json.dumps(report, indent=2).encode()
    files["report.md"] = _markdown(report).encode()
    return report, files
