"""mAP (pycocotools, 101-point interpolation) against hand-computed cases."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pytest

from models.detection.metrics import ImageBoxes, best_threshold, detection_metrics

A, B = [0, 0, 100, 100], [200, 200, 300, 300]


def _truth(*boxes: list[int], labels: list[int] | None = None) -> ImageBoxes:
    return ImageBoxes(np.array(boxes, dtype=float), np.array(labels or [0] * len(boxes)))


def _dets(
    boxes: Sequence[Sequence[float]], scores: list[float], labels: list[int] | None = None
) -> ImageBoxes:
    return ImageBoxes(
        np.array(boxes, dtype=float).reshape(-1, 4),
        np.array(labels or [0] * len(boxes)),
        np.array(scores),
    )


def test_perfect_detections_score_one() -> None:
    truth = [_truth(A, B, labels=[0, 1]), _truth(B, labels=[1])]
    dets = [_dets([A, B], [0.9, 0.8], [0, 1]), _dets([B], [0.7], [1])]
    m = detection_metrics(truth, dets, ["a", "b"], [0.5, 0.5])
    assert m["map50"] == pytest.approx(1.0) and m["map50_95"] == pytest.approx(1.0)
    assert m["per_label"]["b"] == pytest.approx(
        {"ap50": 1.0, "ap50_95": 1.0, "support": 2, "precision": 1.0, "recall": 1.0, "f1": 1.0}
    )


def test_one_missed_box_halves_recall() -> None:
    m = detection_metrics([_truth(A, B)], [_dets([A], [0.9])], ["a"], [0.5])
    assert m["map50"] == pytest.approx(51 / 101)  # precision 1 on recall points 0.00 .. 0.50
    assert m["per_label"]["a"]["recall"] == 0.5


def test_a_duplicate_detection_is_a_false_positive() -> None:
    dets = [_dets([A, [1, 1, 100, 100], B], [0.9, 0.8, 0.7])]
    m = detection_metrics([_truth(A, B)], dets, ["a"], [0.5])
    # PR points: (P 1, R .5), (P .5, R .5), (P 2/3, R 1): 51 recall points at 1, 50 at 2/3
    assert m["map50"] == pytest.approx((51 + 50 * 2 / 3) / 101)
    assert m["per_label"]["a"]["precision"] == pytest.approx(2 / 3)


def test_map50_95_averages_ten_iou_thresholds() -> None:
    # IoU 0.72: a hit at 0.50, 0.55, 0.60, 0.65, 0.70 and a miss at 0.75 .. 0.95
    m = detection_metrics([_truth(A)], [_dets([[0, 0, 100, 72]], [0.9])], ["a"], [0.5])
    assert m["map50"] == pytest.approx(1.0)
    assert m["map50_95"] == pytest.approx(0.5)


def test_wrong_label_and_no_detections_score_zero_and_absent_labels_are_skipped() -> None:
    m = detection_metrics(
        [_truth(A), _truth(B)], [_dets([A], [0.9], [1]), _dets([], [])], ["a", "b", "c"], [0.5] * 3
    )
    assert m["per_label"]["a"]["ap50"] == 0.0
    assert m["per_label"]["b"]["ap50"] is None  # no ground truth: not part of the mean
    assert m["map50"] == 0.0 and m["per_label"]["c"]["support"] == 0


def test_best_threshold_sits_between_the_kept_and_the_next_score() -> None:
    scores, matched = np.array([0.9, 0.8, 0.4, 0.2]), np.array([True, True, False, True])
    assert best_threshold(scores, matched, positives=3) == pytest.approx(0.1)  # all four: F1 6/7
    assert best_threshold(scores, matched, 3, target_precision=1.0) == pytest.approx(0.6)
    assert best_threshold(scores, np.zeros(4, dtype=bool), 3) == 0.3
