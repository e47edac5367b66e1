"""Evaluation reports for every task: ``report.json``, ``report.md`` and the PNG plots."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import numpy as np

from models.manifest import FunctionType
from models.training.errors import contact_sheet, thin_labels, worst_confused
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
        *[f"**Warning:** {w}.\n" for w in report.get("warnings", [])],
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
    lines += _kfold_lines(report["metrics"].get("kfold"))
    lines += _error_lines(report.get("errors"), "misclassified.png" in report["plots"])
    lines += _training_lines(report.get("training"))
    lines += ["", *[f"![{name}]({name})" for name in report["plots"]], ""]
    return "\n".join(lines)


def _kfold_lines(kfold: dict[str, Any] | None) -> list[str]:
    """The figures' spread over the folds, when cross-validation gave them."""
    if not kfold:
        return []
    lines = [
        "",
        f"## {kfold['folds']}-fold cross-validation",
        "",
        f"Headline figures are means over {kfold['folds']} folds; the final function trained "
        "on every sample.",
        "",
        "| metric | mean | std | min | max |",
        "|---|---|---|---|---|",
    ]
    for key, m in kfold["metrics"].items():
        lines.append(
            f"| {key} | {m['mean']:.4f} | {m['std']:.4f} | {m['min']:.4f} | {m['max']:.4f} |"
        )
    return lines


def _error_lines(errors: dict[str, Any] | None, sheet: bool) -> list[str]:
    """Where the errors go: the worst-confused pairs and the contact sheet."""
    pairs = (errors or {}).get("worst_confused", [])
    if not pairs and not sheet:
        return []
    lines = ["", "## Where the errors go", ""]
    if pairs:
        lines += ["| true | predicted as | count | share of true |", "|---|---|---|---|"]
        lines += [
            f"| {p['true']} | {p['predicted']} | {p['count']} | {p['share']:.2f} |" for p in pairs
        ]
    if sheet:
        lines += ["", "Misclassified images: ![misclassified](misclassified.png)"]
    return lines


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
        f"Pooling kept: `{training['pooling']}`, "
        + (
            "the folds' most chosen, trained on every sample for the folds' median kept epoch."
            if "kfold" in training
            else "chosen on validation macro-F1."
        ),
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
    errors: dict[str, Any] = {}
    if "confusion" in current.metrics:
        files["confusion.png"] = confusion_png(current.metrics["confusion"], m.labels)
        errors["worst_confused"] = worst_confused(current.metrics["confusion"], m.labels)
    files.update(
        current.plots or {"pr_curves.png": pr_png(current.targets, current.scores, m.labels)}
    )
    if current.images is not None and len(current.scores):
        limits = np.array([m.thresholds.get(label, 0.5) for label in m.labels])
        sheet = contact_sheet(current.images, current.scores, current.targets, m.labels, limits)
        if sheet is not None:
            files["misclassified.png"] = sheet
    support = {k: int(v.get("support", 0)) for k, v in current.metrics["per_label"].items()}
    report: dict[str, Any] = {
        "name": m.name,
        "type": m.type.value,
        "version": m.version,
        "split": split,
        "metrics": current.metrics,
        "plots": sorted(files),
        "warnings": thin_labels(support),
        "errors": errors,
        **(extra or {}),
    }
    if previous is not None and before is not None:
        report["previous"] = {"version": previous.manifest.version, "metrics": before.metrics}
    files["report.json"] = json.dumps(report, indent=2).encode()
    files["report.md"] = _markdown(report).encode()
    return report, files
