"""Pure metric and calibration maths on numpy arrays (no models, no I/O)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np


def _prf(tp: float, fp: float, fn: float) -> tuple[float, float, float]:
    p = tp / (tp + fp) if tp + fp else 0.0
    r = tp / (tp + fn) if tp + fn else 0.0
    f = 2 * p * r / (p + r) if p + r else 0.0
    return p, r, f


def classify_metrics(
    y_true: np.ndarray, probs: np.ndarray, labels: Sequence[str]
) -> dict[str, Any]:
    """accuracy, macro_f1, per-label P/R/F1/support and the confusion matrix (rows = truth)."""
    pred = probs.argmax(axis=1)
    n = len(labels)
    confusion = np.zeros((n, n), dtype=np.int64)
    np.add.at(confusion, (y_true, pred), 1)
    per_label = {}
    for i, label in enumerate(labels):
        tp = confusion[i, i]
        p, r, f = _prf(tp, confusion[:, i].sum() - tp, confusion[i].sum() - tp)
        support = int(confusion[i].sum())
        per_label[label] = {"precision": p, "recall": r, "f1": f, "support": support}
    present = [m["f1"] for m in per_label.values() if m["support"] > 0]
    return {
        "accuracy": float((pred == y_true).mean()) if len(y_true) else 0.0,
        "macro_f1": float(np.mean(present)) if present else 0.0,
        "per_label": per_label,
        "confusion": confusion.tolist(),
        "samples": int(len(y_true)),
    }


def tags_metrics(
    y_true: np.ndarray, scores: np.ndarray, thresholds: np.ndarray, labels: Sequence[str]
) -> dict[str, Any]:
    """micro_f1, macro_f1 and per-label P/R/F1/support at the given per-label thresholds."""
    pred = scores >= thresholds[None, :]
    truth = y_true > 0.5
    per_label = {}
    for i, label in enumerate(labels):
        tp = float((pred[:, i] & truth[:, i]).sum())
        fp = float((pred[:, i] & ~truth[:, i]).sum())
        fn = float((~pred[:, i] & truth[:, i]).sum())
        p, r, f = _prf(tp, fp, fn)
        per_label[label] = {"precision": p, "recall": r, "f1": f, "support": int(truth[:, i].sum())}
    _, _, micro = _prf(
        float((pred & truth).sum()), float((pred & ~truth).sum()), float((~pred & truth).sum())
    )
    present = [m["f1"] for m in per_label.values() if m["support"] > 0]
    return {
        "micro_f1": micro,
        "macro_f1": float(np.mean(present)) if present else 0.0,
        "per_label": per_label,
        "samples": int(len(y_true)),
    }


def pr_curve(truth: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(precision, recall, threshold) at every distinct score, thresholds descending."""
    order = np.argsort(-scores, kind="stable")
    s, t = scores[order], truth[order] > 0.5
    last = np.r_[np.flatnonzero(np.diff(s)), len(s) - 1]  # last index of each distinct score
    tp = np.cumsum(t)[last]
    fp = (last + 1) - tp
    positives = max(int(t.sum()), 1)
    return tp / (tp + fp), tp / positives, s[last]


def choose_threshold(
    truth: np.ndarray,
    scores: np.ndarray,
    target_precision: float | None = None,
    default: float = 0.5,
) -> float:
    """A threshold for one label: best F1, or the lowest reaching ``target_precision``.

    The threshold sits halfway between the chosen score and the next lower one, so it is not
    tuned to the last bit of one validation sample. ``default`` without positives.
    """
    if truth.sum() == 0 or len(scores) == 0:
        return default
    precision, recall, thresholds = pr_curve(truth, scores)
    if target_precision is not None:
        ok = np.flatnonzero(precision >= target_precision)
        k = int(ok[-1]) if len(ok) else int(np.argmax(precision))
    else:
        total = precision + recall
        f1 = 2 * precision * recall / np.where(total > 0, total, 1)
        k = int(np.argmax(f1))
    below = scores[scores < thresholds[k]]
    lower = float(below.max()) if len(below) else 0.0
    return float((thresholds[k] + lower) / 2)


def fit_temperature(logits: np.ndarray, y_true: np.ndarray) -> float:
    """Temperature minimising the validation NLL of ``softmax(logits / T)`` (grid + refine)."""

    def nll(t: float) -> float:
        z = logits / t
        z = z - z.max(axis=1, keepdims=True)
        logp = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
        return float(-logp[np.arange(len(y_true)), y_true].mean())

    grid = np.exp(np.linspace(np.log(0.05), np.log(20.0), 121))
    best = min(grid, key=nll)
    fine = best * np.exp(np.linspace(-0.05, 0.05, 21))
    return float(min(fine, key=nll))
