"""tags: one sigmoid per label, each with its own threshold (chosen on validation).

The head (:mod:`models.heads.linear`) scores each label from the pooled embedding (a linear
layer, as classify; zero-shot weights go there) plus, on ViT towers, patch evidence: by default
the best-scoring patch (``patch_max``), the maximum over patches of a linear score of each
patch token. Average pooling dilutes a small object in the background; the patch maximum asks
"does this label appear anywhere", which is what a tag asks. Training may choose another
pooling on validation (the manifest's ``head["pooling"]``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from models.heads import HeadDims, HeadType, register
from models.heads.linear import build_linear
from models.manifest import FunctionType, Manifest

DEFAULT_THRESHOLD = 0.5


def build_tags(manifest: Manifest, dims: HeadDims) -> torch.nn.Module:
    """A fresh tags head for ``manifest.labels``: patch maximum unless the manifest says other."""
    return build_linear(manifest, dims, default_pooling="patch_max")


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
        tags: list[dict[str, Any]] = [
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


register(FunctionType.TAGS, HeadType(build=build_tags, results=results))
