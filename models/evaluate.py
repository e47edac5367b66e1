"""Evaluation: the serving path (``Fleet.predict``) on labelled images, then metrics.

Evaluating through the fleet means the numbers describe exactly what the service returns.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from models.artifacts import Artifact, load_artifact
from models.backbones import Backbone
from models.data.labelled import read_images
from models.data.load import load_dataset
from models.data.samples import Dataset
from models.fleet import Fleet
from models.manifest import FunctionType
from models.metrics import classify_metrics, tags_metrics
from models.report import build_report


@dataclass
class Evaluation:
    """Scores (N, L) in label order, the targets, and the metrics dict.

    ``plots``: PNGs the report stores as they are (detect: one PR curve per label); when
    empty, the report draws the PR curves from ``scores`` and ``targets``.
    """

    scores: np.ndarray
    targets: np.ndarray
    metrics: dict[str, Any]
    plots: dict[str, bytes] = field(default_factory=dict)


def predict_scores(
    artifact: Artifact,
    images: np.ndarray,
    backbones: dict[str, Backbone] | None = None,
    batch_size: int = 64,
) -> np.ndarray:
    """(N, L) served scores (classify: calibrated probabilities; tags: sigmoid)."""
    fleet = Fleet.from_artifacts([("f", artifact)], backbones=backbones)
    labels = artifact.manifest.labels
    rows = []
    for start in range(0, len(images), batch_size):
        chunk = list(images[start : start + batch_size])
        for result in fleet.predict(chunk, [(1, 1)] * len(chunk)):
            rows.append([result["f"]["scores"][label] for label in labels])
    return np.array(rows, dtype=np.float64).reshape(len(images), len(labels))


def score_metrics(artifact: Artifact, targets: np.ndarray, scores: np.ndarray) -> dict[str, Any]:
    """The metrics of ``artifact``'s type for these served scores."""
    m = artifact.manifest
    if m.type == FunctionType.CLASSIFY:
        return classify_metrics(targets, scores, m.labels)
    if m.type == FunctionType.TAGS:
        limits = np.array([m.thresholds.get(label, 0.5) for label in m.labels])
        return tags_metrics(targets, scores, limits, m.labels)
    raise ValueError(f"no evaluation for {m.type.value} here")


def evaluate_arrays(
    artifact: Artifact,
    images: np.ndarray,
    targets: np.ndarray,
    backbones: dict[str, Backbone] | None = None,
) -> Evaluation:
    """Evaluate ``artifact`` on preprocessed images and targets in its label order."""
    scores = predict_scores(artifact, images, backbones)
    return Evaluation(scores, targets, score_metrics(artifact, targets, scores))


def evaluate(
    artifact: Artifact | str,
    dataset: Dataset | str,
    previous: Artifact | str | None = None,
) -> tuple[dict[str, Any], dict[str, bytes]]:
    """Evaluate a function on a whole dataset; return (report dict, report files).

    ``previous``: another version of the function, evaluated on the same images and compared
    in the report. Labels in the dataset that the function does not know are a DatasetError.
    """
    if isinstance(artifact, str):
        artifact = load_artifact(artifact)
    if isinstance(previous, str):
        previous = load_artifact(previous)
    m = artifact.manifest
    if isinstance(dataset, str):
        dataset = load_dataset(dataset, m.type, labels=m.labels, min_per_label=1)
    if m.type == FunctionType.DETECT:
        from models.detection.evaluate import evaluate_detect

        return evaluate_detect(artifact, dataset, previous)  # type: ignore[arg-type]
    size = Fleet.from_artifacts([artifact]).input_size
    images, _ = read_images(dataset, size)
    targets = dataset.targets()
    current = evaluate_arrays(artifact, images, targets)
    before = evaluate_arrays(previous, images, targets) if previous is not None else None
    return build_report(artifact, current, previous, before, split=f"all of {dataset.source}")
