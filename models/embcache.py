"""On-disk cache of pooled image embeddings, keyed by backbone id and image content hash."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np


class EmbeddingCache:
    """``root/<sha(backbone key)>/<image sha256>.npy`` files; ``hits``/``misses`` count lookups.

    Safe to share between processes: files are written to a temp name and renamed.
    """

    def __init__(self, root: str | Path, backbone_key: str) -> None:
        self.dir = Path(root) / hashlib.sha256(backbone_key.encode()).hexdigest()[:16]
        self.hits = 0
        self.misses = 0

    def _path(self, image_hash: str) -> Path:
        return self.dir / f"{image_hash}.npy"

    def embeddings(
        self,
        image_hashes: Sequence[str],
        compute: Callable[[list[int]], np.ndarray],
    ) -> np.ndarray:
        """(N, D) embeddings; ``compute(indices)`` is called once for the missing ones."""
        found: dict[int, np.ndarray] = {}
        for i, h in enumerate(image_hashes):
            path = self._path(h)
            if path.exists():
                found[i] = np.load(path, allow_pickle=False)
        missing = [i for i in range(len(image_hashes)) if i not in found]
        self.hits += len(found)
        self.misses += len(missing)
        if missing:
            self.dir.mkdir(parents=True, exist_ok=True)
            for i, row in zip(missing, compute(missing), strict=True):
                found[i] = row
                tmp = self._path(image_hashes[i]).with_suffix(".tmp.npy")
                np.save(tmp, row, allow_pickle=False)
                tmp.replace(self._path(image_hashes[i]))
        return np.stack([found[i] for i in range(len(image_hashes))])
