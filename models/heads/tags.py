"""tags: one sigmoid per label, each with its own threshold (chosen on validation).

The head scores each label from the pooled embedding (a linear layer, as classify; zero-shot
weights go there) plus, on ViT towers, the best-scoring patch: the maximum over patches of a
linear score of each patch token. Average pooling dilutes a small object in the background;
the patch maximum asks "does this label appear anywhere", which is what a tag asks.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F

from models.backbones import Features
from models.heads import HeadDims, HeadType, register
from models.manifest import FunctionType, Manifest

DEFAULT_THRESHOLD = 0.5


class TagsHead(torch.nn.Module):
    """``logits = linear(normalize(pooled)) + max over patches of patch(token)``.

    ``linear`` is the classify head's layer (same state keys, so zero-shot states load into
    it). ``patch`` (no bias) exists when the backbone has patch tokens and starts at zero: an
    untrained or zero-shot head scores by the pooled embedding alone, and a state dict without
    it (older or zero-shot artifacts) loads with it at zero, giving the same outputs as before.
    Without tokens (probe mode fits cached pooled embeddings) only ``linear`` contributes.
    """

    def __init__(self, embed_dim: int, token_dim: int | None, num_labels: int) -> None:
        super().__init__()
        self.linear = torch.nn.Linear(embed_dim, num_labels)
        self.patch: torch.nn.Linear | None = None
        if token_dim is not None:
            self.patch = torch.nn.Linear(token_dim, num_labels, bias=False)
            torch.nn.init.zeros_(self.patch.weight)

    def forward(self, features: Features) -> torch.Tensor:
        logits = self.linear(F.normalize(features.pooled, dim=-1))
        if self.patch is not None and features.tokens is not None:
            logits = logits + self.patch(features.tokens).amax(dim=1)
        return logits

    def _load_from_state_dict(self, state_dict: Any, prefix: str, *args: Any) -> None:
        key = prefix + "patch.weight"
        if self.patch is not None and key not in state_dict:
            state_dict[key] = torch.zeros_like(self.patch.weight)  # a pooled-only state
        super()._load_from_state_dict(state_dict, prefix, *args)


def build_tags(manifest: Manifest, dims: HeadDims) -> torch.nn.Module:
    """A fresh tags head for ``manifest.labels`` (patch branch at zero)."""
    return TagsHead(dims.embed_dim, dims.token_dim, len(manifest.labels))


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
