"""The record of one evaluation, as every task hands it to the report."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass
class Evaluation:
    """Scores (N, L) in label order, the targets, and the metrics dict.

    ``plots``: PNGs the report stores as they are (detect: one PR curve per label); when
    empty, the report draws the PR curves from ``scores`` and ``targets``. ``images``: the
    evaluated images (uint8 (N, S, S, 3)), for the contact sheet of the misclassified ones.
    """

    scores: np.ndarray
    targets: np.ndarray
    metrics: dict[str, Any]
    plots: dict[str, bytes] = field(default_factory=dict)
    images: np.ndarray | None = None
