"""Where the errors go, for the report: worst-confused pairs, thin labels, a contact sheet."""

from __future__ import annotations

import io
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

FEW_SAMPLES = 10  # a label with fewer evaluated samples gets a warning in the report
SHEET_MAX = 24  # misclassified images on the contact sheet, at most
THUMB = 96  # side of one thumbnail on the sheet, px


def worst_confused(
    confusion: list[list[int]], labels: list[str], top: int = 5
) -> list[dict[str, Any]]:
    """The most frequent (true, predicted) mistakes, most first, with their share of the truth."""
    matrix = np.asarray(confusion)
    pairs: list[dict[str, Any]] = [
        {
            "true": labels[i],
            "predicted": labels[j],
            "count": int(matrix[i, j]),
            "share": float(matrix[i, j] / max(int(matrix[i].sum()), 1)),
        }
        for i in range(len(labels))
        for j in range(len(labels))
        if i != j and matrix[i, j] > 0
    ]
    return sorted(pairs, key=lambda p: (-p["count"], -p["share"]))[:top]


def thin_labels(support: dict[str, int], few: int = FEW_SAMPLES) -> list[str]:
    """One warning per label evaluated on fewer than ``few`` samples."""
    return [
        f"label '{label}' has {n} evaluated sample(s): its figures rest on too few to mean "
        f"much (at least {few} wanted)"
        for label, n in support.items()
        if n < few
    ]


def mistakes(scores: np.ndarray, targets: np.ndarray, limits: np.ndarray | None) -> np.ndarray:
    """Indices of the misclassified samples (tags: any label wrong at ``limits``)."""
    if targets.ndim == 1:
        return np.flatnonzero(scores.argmax(axis=1) != targets)
    assert limits is not None
    return np.flatnonzero(((scores >= limits[None, :]) != (targets > 0.5)).any(axis=1))


def _caption(
    i: int, scores: np.ndarray, targets: np.ndarray, labels: list[str], limits: Any
) -> str:
    if targets.ndim == 1:
        return f"{labels[targets[i]]} -> {labels[int(scores[i].argmax())]}"
    truth = {labels[j] for j in np.flatnonzero(targets[i] > 0.5)}
    pred = {labels[j] for j in np.flatnonzero(scores[i] >= limits)}
    return " ".join(
        [*(f"-{x}" for x in sorted(truth - pred)), *(f"+{x}" for x in sorted(pred - truth))]
    )


def contact_sheet(
    images: np.ndarray,
    scores: np.ndarray,
    targets: np.ndarray,
    labels: list[str],
    limits: np.ndarray | None = None,
) -> bytes | None:
    """A PNG of up to ``SHEET_MAX`` misclassified images, each captioned ``true -> predicted``
    (tags: ``-missed +extra``); ``None`` when nothing is misclassified."""
    wrong = mistakes(scores, targets, limits)[:SHEET_MAX]
    if not len(wrong):
        return None
    cols = min(6, len(wrong))
    rows = -(-len(wrong) // cols)
    sheet = Image.new("RGB", (cols * THUMB, rows * (THUMB + 14)), "white")
    draw = ImageDraw.Draw(sheet)
    for k, i in enumerate(wrong):
        x, y = (k % cols) * THUMB, (k // cols) * (THUMB + 14)
        thumb = Image.fromarray(images[i]).resize((THUMB, THUMB), Image.Resampling.BILINEAR)
        sheet.paste(thumb, (x, y))
        draw.text(
            (x + 2, y + THUMB), _caption(i, scores, targets, labels, limits)[:18], fill="black"
        )
    buf = io.BytesIO()
    sheet.save(buf, format="PNG")
    return buf.getvalue()
