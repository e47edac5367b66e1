"""Cross-validation for small data: stratified folds and the spread of their figures."""

from __future__ import annotations

from typing import Any

import numpy as np


def strata(targets: np.ndarray) -> np.ndarray:
    """A class per sample: classify its label, tags its rarest label (-1 for none)."""
    if targets.ndim == 1:
        return targets
    freq = targets.sum(axis=0)
    rarest = np.where(targets > 0, freq[None, :], np.inf).argmin(axis=1)
    return np.where(targets.sum(axis=1) > 0, rarest, -1)


def fewest_per_label(targets: np.ndarray) -> int:
    """The sample count of the rarest label."""
    if targets.ndim == 1:
        return int(np.bincount(targets).min()) if len(targets) else 0
    return int(targets.sum(axis=0).min())


def stratified_folds(targets: np.ndarray, k: int, seed: int) -> list[np.ndarray]:
    """``k`` disjoint index arrays covering every sample; each class dealt round the folds."""
    rng = np.random.default_rng(seed)
    fold_of = np.empty(len(targets), dtype=np.int64)
    offset = 0
    for stratum in np.unique(strata(targets)):
        idx = rng.permutation(np.flatnonzero(strata(targets) == stratum))
        fold_of[idx] = (np.arange(len(idx)) + offset) % k
        offset += len(idx)  # the next class starts where this one stopped: folds stay even
    return [np.flatnonzero(fold_of == f) for f in range(k)]


def spread(per_fold: list[dict[str, Any]], keys: tuple[str, ...]) -> dict[str, Any]:
    """Per headline metric: mean, standard deviation, min, max and the per-fold values."""
    out: dict[str, Any] = {}
    for key in keys:
        values = np.array([m[key] for m in per_fold], dtype=np.float64)
        out[key] = {
            "mean": float(values.mean()),
            "std": float(values.std(ddof=1)) if len(values) > 1 else 0.0,
            "min": float(values.min()),
            "max": float(values.max()),
            "per_fold": [float(v) for v in values],
        }
    return out
