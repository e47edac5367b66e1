"""tags: one sigmoid per label, each with its own threshold (chosen on validation)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from models.heads import HeadType, register
from models.heads.linear import build_linear
from models.manifest import FunctionType, Manifest

DEFAULT_THRESHOLD = 0.5


def thresholds_for(manifest: Manifest) -> list[float]:
    """Per-label thresholds in label order (``DEFAULT_THRESHOLD`` where none is stored)."""
    return [manifest.thresholds.get(label, DEFAULT_THRESHOLD) for label in manifest.labels]


def results(
    logits: torch.Tensor, manifest: Manifest, orig_sizes: Sequence[tuple[int, int]]
) -> list[dict[str, Any]]:
    """Result objects ``{"type","version","tags","scores","thresholds"}``, one per image.

    ``tags`` holds the labels whose score reaches their threshold, highest score first.
    """
    scores = torch.sigmoid(logits.float()).cpu().tolist()
    limits = thresholds_for(manifest)
    thresholds = {label: float(t) for label, t in zip(manifest.labels, limits, strict=True)}
    out = []
    for row in scores:
        tags = [
            {"label": label, "score": float(s)}
            for label, s, t in zip(manifest.labels, row, limits, strict=True)
            if s >= t
        ]
        tags.sort(key=lambda tag: -tag["score"])
        out.append(
            {
                "type": "tags",
                "version": manifest.version,
                "tags": tags,
                "scores": {label: float(s) for label, s in zip(manifest.labels, row, strict=True)},
                "thresholds": thresholds,
            }
        )
    return out


register(FunctionType.TAGS, HeadType(build=build_linear, results=results))
