"""A linear layer on the L2-normalised pooled embedding: the classify and tags head."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from models.backbones import Features
from models.heads import HeadDims
from models.manifest import Manifest


class LinearHead(torch.nn.Module):
    """``logits = W @ normalize(pooled) + b``; zero-shot heads set W = text embeddings x scale."""

    def __init__(self, embed_dim: int, num_labels: int) -> None:
        super().__init__()
        self.linear = torch.nn.Linear(embed_dim, num_labels)

    def forward(self, features: Features) -> torch.Tensor:
        return self.linear(F.normalize(features.pooled, dim=-1))


def build_linear(manifest: Manifest, dims: HeadDims) -> torch.nn.Module:
    """A fresh linear head for ``manifest.labels``."""
    return LinearHead(dims.embed_dim, len(manifest.labels))
