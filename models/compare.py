"""Compare a new version with an earlier one whose label set differs (labels added or removed).

The tasks compare two versions of the same labels on the held-out split. When the labels
changed, the targets of one are not the other's, so the comparison is made here, on the same
held-out split (the same ``stratified_split`` of the spec's fraction and seed): both versions
on the held-out images whose labels the earlier version knows (classify), or on every
held-out image with the truth of the labels both know plus "absent" for a label the new data
no longer has (tags). The labels added and removed are listed as such. Detect is not
compared across label sets (the report says so).
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np

from models.artifacts import Artifact
from models.data.labelled import read_images
from models.data.samples import Dataset, stratified_split
from models.manifest import FunctionType
from models.tasks.linear import evaluate_arrays
from models.training.report import HEADLINE
from models.training.spec import TrainSpec


def label_changes(new: list[str], old: list[str]) -> tuple[list[str], list[str]]:
    """(labels added, labels removed) from ``old`` to ``new``."""
    return [x for x in new if x not in old], [x for x in old if x not in new]


def compare_across_labels(
    artifact: Artifact, dataset: Dataset, spec: TrainSpec, previous: Artifact, input_size: int
) -> Artifact:
    """``artifact`` with a ``previous`` block in its report (and a section in report.md)."""
    m, p = artifact.manifest, previous.manifest
    added, removed = label_changes(m.labels, p.labels)
    block: dict[str, Any] = {
        "version": p.version,
        "labels_added": added,
        "labels_removed": removed,
    }
    if m.type == FunctionType.DETECT or p.type != m.type:
        block["note"] = "not compared: the label sets differ (detect is compared on equal labels)"
    else:
        y = dataset.targets()
        _, va = stratified_split(y, spec.val_fraction, spec.seed)
        images, _ = read_images(dataset, input_size)
        images, y = images[va], y[va]
        if m.type == FunctionType.CLASSIFY:
            known = np.array([m.labels[t] in p.labels for t in y], dtype=bool)
            images, y = images[known], y[known]
            old_y = np.array([p.labels.index(m.labels[t]) for t in y], dtype=np.int64)
        else:
            old_y = np.zeros((len(y), len(p.labels)), dtype=np.float32)
            for j, label in enumerate(p.labels):
                if label in m.labels:
                    old_y[:, j] = y[:, m.labels.index(label)]
        keys = HEADLINE[m.type]
        this = evaluate_arrays(artifact, images, y).metrics
        before = evaluate_arrays(previous, images, old_y).metrics
        block["samples"] = int(len(y))
        block["metrics"] = {k: before[k] for k in keys}
        block["this_version_on_same_samples"] = {k: this[k] for k in keys}
    files = dict(artifact.files)
    report = json.loads(files.get("report.json", b"{}"))
    report["previous"] = block
    files["report.json"] = json.dumps(report, indent=2).encode()
    files["report.md"] = files.get("report.md", b"") + _markdown(block).encode()
    artifact.files = files
    return artifact


def _markdown(block: dict[str, Any]) -> str:
    lines = ["", f"## Compared with version {block['version']}", ""]
    lines.append(f"Labels added: {', '.join(block['labels_added']) or 'none'}.")
    lines.append(f"Labels removed: {', '.join(block['labels_removed']) or 'none'}.")
    if "note" in block:
        return "\n".join([*lines, "", block["note"], ""])
    lines += [
        "",
        f"On the {block['samples']} held-out images whose labels both versions know:",
        "",
        f"| metric | this version | {block['version']} |",
        "|---|---|---|",
    ]
    for key, value in block["metrics"].items():
        lines.append(f"| {key} | {block['this_version_on_same_samples'][key]:.4f} | {value:.4f} |")
    return "\n".join([*lines, ""])
