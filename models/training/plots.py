"""The report's plots as PNG bytes (matplotlib, Agg: no display needed)."""

from __future__ import annotations

import io
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from models.metrics import pr_curve  # noqa: E402


def png(fig: Any) -> bytes:
    """``fig`` as PNG bytes; the figure is closed."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def confusion_png(confusion: list[list[int]], labels: list[str]) -> bytes:
    """Confusion matrix heat map, rows = truth, columns = prediction."""
    matrix = np.array(confusion)
    side = 2 + 0.5 * len(labels)
    fig, ax = plt.subplots(figsize=(side, side))
    ax.imshow(matrix, cmap="Blues")
    ax.set_xticks(range(len(labels)), labels, rotation=45, ha="right")
    ax.set_yticks(range(len(labels)), labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    for (i, j), v in np.ndenumerate(matrix):
        ax.text(j, i, str(v), ha="center", va="center")
    return png(fig)


def pr_png(targets: np.ndarray, scores: np.ndarray, labels: list[str]) -> bytes:
    """One precision/recall curve per label (one-vs-rest for classify)."""
    if targets.ndim == 1:
        targets = np.eye(len(labels))[targets]
    fig, ax = plt.subplots(figsize=(5, 4))
    for i, label in enumerate(labels):
        if targets[:, i].sum() > 0:
            precision, recall, _ = pr_curve(targets[:, i], scores[:, i])
            ax.plot(np.r_[0, recall], np.r_[precision[0], precision], label=label)
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    ax.set_xlim(0, 1.02)
    ax.set_ylim(0, 1.02)
    ax.legend(fontsize="small")
    return png(fig)


def label_pr_pngs(curves: dict[str, tuple[list[float], list[float]]]) -> dict[str, bytes]:
    """One PNG per label, ``pr_<label>.png``: its (recall, precision) curve at IoU 0.5."""
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
        files[f"pr_{safe}.png"] = png(fig)
    return files
