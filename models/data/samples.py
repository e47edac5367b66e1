"""What every dataset reader shares: the sample list, its error, paths and the split.

Every problem is a :class:`DatasetError` whose message names the file, line or label.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import PurePosixPath

import numpy as np

from models import storage
from models.manifest import FunctionType

MIN_PER_LABEL = 2  # at least one to train on and one held out


class DatasetError(ValueError):
    """A dataset problem a user can fix; the message names the file or label."""


@dataclass(frozen=True)
class Sample:
    image: str
    labels: tuple[str, ...]


@dataclass(frozen=True)
class Dataset:
    kind: FunctionType
    labels: list[str]
    samples: list[Sample]
    source: str

    def targets(self) -> np.ndarray:
        """classify: (N,) label indices; tags: (N, L) 0/1 matrix."""
        index = {label: i for i, label in enumerate(self.labels)}
        if self.kind == FunctionType.CLASSIFY:
            return np.array([index[s.labels[0]] for s in self.samples], dtype=np.int64)
        y = np.zeros((len(self.samples), len(self.labels)), dtype=np.float32)
        for row, sample in enumerate(self.samples):
            for label in sample.labels:
                y[row, index[label]] = 1.0
        return y


def relative(base: str, image: str) -> str:
    """``image`` as written in a file under ``base``: relative unless absolute or ``s3://``."""
    if storage.is_s3(image) or image.startswith("/"):
        return image
    return storage.join(base, image)


def parent(uri: str) -> str:
    """The folder (or ``s3://`` prefix) holding ``uri``."""
    return str(PurePosixPath(uri).parent) if not storage.is_s3(uri) else uri.rsplit("/", 1)[0]


def stratified_split(
    targets: np.ndarray, val_fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """(train, val) index arrays; each class (tags: each sample's rarest label) split alike.

    Every stratum with at least two samples keeps at least one in each side.
    """
    rng = np.random.default_rng(seed)
    if targets.ndim == 1:
        strata = targets
    else:
        freq = targets.sum(axis=0)
        rarest = np.where(targets > 0, freq[None, :], np.inf).argmin(axis=1)
        strata = np.where(targets.sum(axis=1) > 0, rarest, -1)
    train: list[int] = []
    val: list[int] = []
    for stratum in np.unique(strata):
        idx = rng.permutation(np.flatnonzero(strata == stratum))
        n_val = int(round(len(idx) * val_fraction))
        if len(idx) >= 2:
            n_val = min(max(n_val, 1), len(idx) - 1)
        val.extend(idx[:n_val])
        train.extend(idx[n_val:])
    return np.sort(np.array(train, dtype=np.int64)), np.sort(np.array(val, dtype=np.int64))
