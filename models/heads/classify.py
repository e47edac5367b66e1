"""classify: one label out of N, softmax with a temperature fitted on validation."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from models.heads import HeadType, register
from models.heads.linear import build_linear
from models.manifest import FunctionType, Manifest


def probabilities(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """Calibrated class probabilities: ``softmax(logits / temperature)``."""
    return torch.softmax(logits.float() / temperature, dim=-1)


def results(
    logits: torch.Tensor, manifest: Manifest, orig_sizes: Sequence[tuple[int, int]]
) -> list[dict[str, Any]]:
    """Result objects ``{"type","version","label","score","scores"}``, one per image."""
    probs = probabilities(logits, manifest.temperature).cpu().tolist()
    out = []
    for row in probs:
        best = max(range(len(row)), key=row.__getitem__)
        out.append(
            {
                "type": "classify",
                "version": manifest.version,
                "label": manifest.labels[best],
                "score": float(row[best]),
                "scores": {label: float(p) for label, p in zip(manifest.labels, row, strict=True)},
            }
        )
    return out


register(FunctionType.CLASSIFY, HeadType(build=build_linear, results=results))
