"""Evaluating a detect function through the serving path (``Fleet.predict``), in original pixels.

mAP needs every candidate box, not just those above the served threshold, so the fleet runs
the artifact with its thresholds lowered to :data:`EVAL_FLOOR` (the same head, NMS and box
mapping as in serving); precision/recall/F1 per label are then read at the stored thresholds.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from models.artifacts import Artifact  # noqa: E402
from models.backbones import Backbone  # noqa: E402
from models.data.coco import DetectDataset, read_detect_images  # noqa: E402
from models.detection.metrics import ImageBoxes, detection_metrics  # noqa: E402
from models.evaluate import Evaluation  # noqa: E402
from models.fleet import Fleet  # noqa: E402
from models.heads.detect import DEFAULT_MAX_DETECTIONS, label_thresholds  # noqa: E402
from models.manifest import Manifest  # noqa: E402
from models.report import build_report  # noqa: E402

EVAL_FLOOR = 0.01


def truth_boxes(dataset: DetectDataset) -> list[ImageBoxes]:
    """Ground truth of every image in original pixels, labels as indices."""
    index = {label: i for i, label in enumerate(dataset.labels)}
    return [
        ImageBoxes(
            np.asarray(s.boxes, dtype=np.float64).reshape(-1, 4),  # type: ignore[attr-defined]
            np.array([index[label] for label in s.labels], dtype=np.int64),
        )
        for s in dataset.samples
    ]


def predict_boxes(
    artifact: Artifact,
    images: np.ndarray,
    orig_sizes: Sequence[tuple[int, int]],
    backbones: dict[str, Backbone] | None = None,
    floor: float = EVAL_FLOOR,
    batch_size: int = 64,
) -> list[ImageBoxes]:
    """Served detections (thresholds lowered to ``floor``) per image, in original pixels."""
    manifest = artifact.manifest.model_copy(update={"thresholds": {"*": floor}})
    low = Artifact(manifest, artifact.head_state, artifact.backbone_state)
    fleet = Fleet.from_artifacts([("f", low)], backbones=backbones)
    index = {label: i for i, label in enumerate(manifest.labels)}
    out = []
    for start in range(0, len(images), batch_size):
        chunk = list(images[start : start + batch_size])
        for result in fleet.predict(chunk, orig_sizes[start : start + len(chunk)]):
            objs = result["f"]["objects"]
            out.append(
                ImageBoxes(
                    np.array([o["box"] for o in objs]).reshape(-1, 4),
                    np.array([index[o["label"]] for o in objs], dtype=np.int64),
                    np.array([o["score"] for o in objs]),
                )
            )
    return out


def pr_plots(curves: dict[str, tuple[list[float], list[float]]]) -> dict[str, bytes]:
    """One PNG per label: the interpolated precision/recall curve at IoU 0.5."""
    from models.report import _png

    files = {}
    for label, (recall, precision) in curves.items():
        fig, ax = plt.subplots(figsize=(4, 3))
        ax.plot(recall, precision)
        ax.set_title(f"{label} (IoU 0.5)")
        ax.set_xlabel("recall")
        ax.set_ylabel("precision")
        ax.set_xlim(0, 1.02)
        ax.set_ylim(0, 1.02)
        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in label)
        files[f"pr_{safe}.png"] = _png(fig)
    return files


def detections_evaluation(
    manifest: Manifest, truth: Sequence[ImageBoxes], dets: Sequence[ImageBoxes]
) -> Evaluation:
    """mAP and per-label metrics of these detections (at ``manifest``'s thresholds), one PR
    plot per label. ``scores`` and ``targets`` of the evaluation are empty (classify/tags only).
    """
    max_dets = int(manifest.head.get("max_detections", DEFAULT_MAX_DETECTIONS))
    metrics: dict[str, Any] = detection_metrics(
        truth, dets, manifest.labels, label_thresholds(manifest), max_dets
    )
    curves = metrics.pop("pr_curves")
    return Evaluation(np.zeros(0), np.zeros(0), metrics, plots=pr_plots(curves))


def evaluate_detections(
    artifact: Artifact,
    images: np.ndarray,
    orig_sizes: Sequence[tuple[int, int]],
    truth: Sequence[ImageBoxes],
    backbones: dict[str, Backbone] | None = None,
) -> Evaluation:
    """Run ``artifact`` on preprocessed images and evaluate against ``truth`` (original px)."""
    dets = predict_boxes(artifact, images, orig_sizes, backbones)
    return detections_evaluation(artifact.manifest, truth, dets)


def evaluate_detect(
    artifact: Artifact, dataset: DetectDataset, previous: Artifact | None = None
) -> tuple[dict[str, Any], dict[str, bytes]]:
    """``models.evaluate.evaluate`` for detect: the whole dataset, report dict and files."""
    shared: dict[str, Backbone] = {}
    size = Fleet.from_artifacts([artifact], backbones=shared).input_size
    images, _, sizes = read_detect_images(dataset, size)
    truth = truth_boxes(dataset)
    current = evaluate_detections(artifact, images, sizes, truth, shared)
    before = evaluate_detections(previous, images, sizes, truth) if previous is not None else None
    return build_report(artifact, current, previous, before, split=f"all of {dataset.source}")
