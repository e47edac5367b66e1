"""The classify and tags head: a linear layer on the pooled embedding, plus patch evidence.

``pooling`` (stored in the manifest's ``head`` dict) says what the head reads:

- ``pooled``: ``W @ normalize(pooled) + b`` alone (the classify default; zero-shot heads set
  W = text embeddings x scale);
- ``patch_max``: plus, per label, the best-scoring patch: ``max_i patch(token_i)``. Average
  pooling dilutes a mark of a few pixels in the background; the maximum asks "is it anywhere";
- ``patch_attention``: plus, per label, an attention-weighted mean of the patch scores
  (``softmax_i attend(token_i)``): a softer "where is it", which can weigh several patches.

The patch layers start at zero, so an untrained patch head scores by the pooled embedding
alone, and a state without them (a pooled-only or zero-shot state) loads with them at zero.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from models.backbones import Features
from models.heads import HeadDims
from models.manifest import Manifest

POOLINGS = ("pooled", "patch_max", "patch_attention")


class LinearHead(torch.nn.Module):
    """``logits = linear(normalize(pooled)) [+ pooled patch scores]``; see the module docstring.

    Without patch tokens (a non-ViT tower, or probe mode's cached pooled embeddings) only
    ``linear`` contributes.
    """

    def __init__(
        self, embed_dim: int, num_labels: int, token_dim: int | None = None, pooling: str = "pooled"
    ) -> None:
        super().__init__()
        if pooling not in POOLINGS:
            raise ValueError(f"unknown pooling {pooling!r}; expected one of {POOLINGS}")
        self.pooling = pooling if token_dim is not None else "pooled"
        self.linear = torch.nn.Linear(embed_dim, num_labels)
        self.patch: torch.nn.Linear | None = None
        self.attend: torch.nn.Linear | None = None
        if self.pooling != "pooled" and token_dim is not None:
            self.patch = _zero_linear(token_dim, num_labels)
            if self.pooling == "patch_attention":
                self.attend = _zero_linear(token_dim, num_labels)

    def forward(self, features: Features) -> torch.Tensor:
        logits = self.linear(F.normalize(features.pooled, dim=-1))
        if self.patch is None or features.tokens is None:
            return logits
        scores = self.patch(features.tokens)  # (B, N, L)
        if self.attend is None:
            return logits + scores.amax(dim=1)
        weights = torch.softmax(self.attend(features.tokens), dim=1)
        return logits + (weights * scores).sum(dim=1)

    def _load_from_state_dict(self, state_dict: Any, prefix: str, *args: Any) -> None:
        for name in ("patch", "attend"):
            layer = getattr(self, name)
            key = f"{prefix}{name}.weight"
            if layer is not None and key not in state_dict:
                state_dict[key] = torch.zeros_like(layer.weight)  # a pooled-only state
        super()._load_from_state_dict(state_dict, prefix, *args)


def _zero_linear(token_dim: int, num_labels: int) -> torch.nn.Linear:
    layer = torch.nn.Linear(token_dim, num_labels, bias=False)
    torch.nn.init.zeros_(layer.weight)
    return layer


def build_linear(manifest: Manifest, dims: HeadDims, default_pooling: str = "pooled") -> LinearHead:
    """A fresh head for ``manifest.labels``, pooling as ``manifest.head["pooling"]`` says."""
    pooling = str(manifest.head.get("pooling", default_pooling))
    return LinearHead(dims.embed_dim, len(manifest.labels), dims.token_dim, pooling)
