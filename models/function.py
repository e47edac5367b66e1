"""A loaded function: an artifact's head bound to a live backbone."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from models.artifacts import Artifact
from models.backbones import Backbone, Features
from models.heads import HeadDims, head_type
from models.manifest import FunctionType, Manifest


@dataclass(frozen=True)
class FunctionInfo:
    """What the service needs to know about a function without running it."""

    name: str
    type: FunctionType
    version: str | None
    labels: tuple[str, ...]
    thresholds: dict[str, float]


def head_dims(backbone: Backbone) -> HeadDims:
    """The dimensions a head sizes itself by."""
    return HeadDims(
        embed_dim=backbone.embed_dim,
        token_dim=backbone.token_dim,
        input_size=backbone.input_size,
        patch_size=backbone.patch_size,
    )


def build_head(manifest: Manifest, backbone: Backbone) -> torch.nn.Module:
    """A fresh (untrained) head for ``manifest`` sized for ``backbone``, on its device."""
    return head_type(manifest.type).build(manifest, head_dims(backbone)).to(backbone.device)


class Function:
    """A named function: its manifest, its head module and the backbone it reads."""

    def __init__(self, artifact: Artifact, backbone: Backbone, name: str | None = None) -> None:
        self.manifest = artifact.manifest
        self.name = name or artifact.manifest.name
        self.backbone = backbone
        self.head = build_head(self.manifest, backbone)
        self.head.load_state_dict(artifact.head_state, strict=True)
        self.head.eval()
        self._results = head_type(self.manifest.type).results

    @property
    def info(self) -> FunctionInfo:
        m = self.manifest
        return FunctionInfo(self.name, m.type, m.version, tuple(m.labels), dict(m.thresholds))

    @torch.inference_mode()
    def run(
        self, features: Features, orig_sizes: Sequence[tuple[int, int]]
    ) -> list[dict[str, Any]]:
        """Result objects for a batch of features from this function's backbone."""
        return self._results(self.head(features), self.manifest, orig_sizes)
