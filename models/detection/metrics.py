"""mAP@0.5 and mAP@0.5:0.95 through pycocotools' COCOeval (101-point interpolation).

Inputs are plain arrays per image; ``detection_metrics`` builds the COCO objects in memory
(pycocotools' chatter on stdout is swallowed). Per label: AP@0.5, AP@0.5:0.95, the
interpolated precision/recall curve at IoU 0.5, and precision/recall/F1 at a score threshold
(greedy COCO matching at IoU 0.5). Labels without ground truth have ``ap50 = None`` and are
left out of the means, as in COCO.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval


@dataclass(frozen=True)
class ImageBoxes:
    """Boxes of one image: (K, 4) xyxy pixels, (K,) label indices, (K,) scores (None: truth)."""

    boxes: np.ndarray
    labels: np.ndarray
    scores: np.ndarray | None = None


def _coco(images: Sequence[ImageBoxes], num_labels: int) -> COCO:
    anns: list[dict[str, Any]] = []
    for i, im in enumerate(images):
        for k, (box, label) in enumerate(zip(im.boxes.reshape(-1, 4), im.labels, strict=True)):
            x1, y1, x2, y2 = (float(v) for v in box)
            ann = {
                "id": len(anns) + 1,
                "image_id": i,
                "category_id": int(label),
                "bbox": [x1, y1, x2 - x1, y2 - y1],
                "area": (x2 - x1) * (y2 - y1),
                "iscrowd": 0,
            }
            if im.scores is not None:
                ann["score"] = float(im.scores[k])
            anns.append(ann)
    coco = COCO()
    coco.dataset = {
        "images": [{"id": i} for i in range(len(images))],
        "categories": [{"id": k} for k in range(num_labels)],
        "annotations": anns,
    }
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


def _run(
    truth: Sequence[ImageBoxes], dets: Sequence[ImageBoxes], num_labels: int, max_dets: int
) -> COCOeval:
    ev = COCOeval(_coco(truth, num_labels), _coco(dets, num_labels), "bbox")
    ev.params.maxDets = [1, 10, max_dets]
    with contextlib.redirect_stdout(io.StringIO()):
        ev.evaluate()
        ev.accumulate()
    return ev


def _matches(ev: COCOeval, k: int) -> tuple[np.ndarray, np.ndarray, int]:
    """(scores, matched at IoU 0.5) of label k's counted detections and its ground-truth count."""
    n_img, n_area = len(ev.params.imgIds), len(ev.params.areaRng)
    scores, matched, positives = [], [], 0
    for e in ev.evalImgs[k * n_area * n_img : k * n_area * n_img + n_img]:  # area "all"
        if e is None:
            continue
        keep = ~np.asarray(e["dtIgnore"][0], dtype=bool)
        scores.append(np.asarray(e["dtScores"])[keep])
        matched.append(np.asarray(e["dtMatches"][0])[keep] > 0)
        positives += int((~np.asarray(e["gtIgnore"], dtype=bool)).sum())
    if not scores:
        return np.zeros(0), np.zeros(0, dtype=bool), positives
    return np.concatenate(scores), np.concatenate(matched), positives


def _prf(
    scores: np.ndarray, matched: np.ndarray, positives: int, threshold: float
) -> dict[str, float]:
    kept = scores >= threshold
    tp, fp = float((matched & kept).sum()), float((~matched & kept).sum())
    p = tp / (tp + fp) if tp + fp else 0.0
    r = tp / positives if positives else 0.0
    return {"precision": p, "recall": r, "f1": 2 * p * r / (p + r) if p + r else 0.0}


def best_threshold(
    scores: np.ndarray,
    matched: np.ndarray,
    positives: int,
    target_precision: float | None = None,
    default: float = 0.3,
) -> float:
    """A score threshold: best F1 at IoU 0.5, or the lowest reaching ``target_precision``.

    Halfway between the chosen detection's score and the next lower one; ``default`` when
    nothing matches.
    """
    if not matched.any() or positives == 0:
        return default
    order = np.argsort(-scores, kind="stable")
    s, m = scores[order], matched[order]
    tp = np.cumsum(m)
    precision, recall = tp / np.arange(1, len(s) + 1), tp / positives
    if target_precision is not None:
        ok = np.flatnonzero(precision >= target_precision)
        k = int(ok[-1]) if len(ok) else int(np.argmax(precision))
    else:
        f1 = 2 * precision * recall / np.maximum(precision + recall, 1e-12)
        k = int(np.argmax(f1))
    lower = float(s[k + 1]) if k + 1 < len(s) else 0.0
    return float((s[k] + lower) / 2)


def detection_metrics(
    truth: Sequence[ImageBoxes],
    dets: Sequence[ImageBoxes],
    labels: Sequence[str],
    thresholds: Sequence[float],
    max_dets: int = 100,
) -> dict[str, Any]:
    """``map50``, ``map50_95``, ``per_label`` and ``pr_curves`` (label -> (recall, precision)).

    ``thresholds``: per-label score thresholds for the precision/recall/F1 columns.
    """
    ev = _run(truth, dets, len(labels), max_dets)
    precision = ev.eval["precision"][:, :, :, 0, -1]  # (iou, recall, label), area all, max dets
    per_label: dict[str, dict[str, Any]] = {}
    curves: dict[str, tuple[list[float], list[float]]] = {}
    ap50s: list[float] = []
    aps: list[float] = []
    for k, label in enumerate(labels):
        scores, matched, positives = _matches(ev, k)
        p = precision[:, :, k]
        ap50: float | None = None
        ap: float | None = None
        if positives:
            ap50, ap = float(p[0].mean()), float(p.mean())
            ap50s.append(ap50)
            aps.append(ap)
            curves[label] = (ev.params.recThrs.tolist(), p[0].tolist())
        per_label[label] = {
            "ap50": ap50,
            "ap50_95": ap,
            "support": positives,
            **_prf(scores, matched, positives, thresholds[k]),
        }
    return {
        "map50": float(np.mean(ap50s)) if ap50s else 0.0,
        "map50_95": float(np.mean(aps)) if aps else 0.0,
        "per_label": per_label,
        "samples": len(truth),
        "pr_curves": curves,
    }


def label_matches(
    truth: Sequence[ImageBoxes], dets: Sequence[ImageBoxes], num_labels: int, max_dets: int = 100
) -> list[tuple[np.ndarray, np.ndarray, int]]:
    """Per label: (detection scores, matched at IoU 0.5, ground-truth count), for thresholds."""
    ev = _run(truth, dets, num_labels, max_dets)
    return [_matches(ev, k) for k in range(num_labels)]
