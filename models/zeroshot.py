"""Zero-shot functions: head weights from label names through the CLIP text tower."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from models.artifacts import Artifact
from models.backbones import Backbone, load_backbone, resolve_ref
from models.function import build_head
from models.manifest import BackboneRef, FunctionType, Manifest, Mode

DEFAULT_TEMPLATES: tuple[str, ...] = (
    "a photo of a {}.",
    "a photo of the {}.",
    "a picture of a {}.",
    "an image showing {}.",
    "{}",
)
# tags: matching image-text cosines of CLIP models sit around 0.25-0.3, others below 0.2;
# the bias centres the sigmoid between them (training and threshold fitting refine it)
TAGS_COSINE_OFFSET = 0.22


def text_weights(
    backbone: Backbone, labels: Sequence[str], templates: Sequence[str] = DEFAULT_TEMPLATES
) -> torch.Tensor:
    """(L, D) L2-normalised mean text embedding of each label over the prompt templates."""
    rows = []
    for label in labels:
        emb = backbone.encode_text([t.format(label) for t in templates])
        rows.append(F.normalize(emb.mean(dim=0), dim=-1))
    return torch.stack(rows)


def zero_shot_head_state(
    backbone: Backbone,
    kind: FunctionType,
    labels: Sequence[str],
    templates: Sequence[str] = DEFAULT_TEMPLATES,
) -> dict[str, torch.Tensor]:
    """Linear-head weights: text embeddings x the model's logit scale (and a bias for tags)."""
    scale = float(backbone.model.logit_scale.detach().exp())
    weight = text_weights(backbone, labels, templates) * scale
    bias = torch.zeros(len(labels), device=weight.device)
    if kind == FunctionType.TAGS:
        bias -= scale * TAGS_COSINE_OFFSET
    return {"linear.weight": weight.cpu(), "linear.bias": bias.cpu()}


def zero_shot(
    name: str,
    kind: FunctionType | str,
    labels: Sequence[str],
    backbone: str | BackboneRef = "tiny-vit",
    weights: str | None = None,
    templates: Sequence[str] = DEFAULT_TEMPLATES,
    encoder: Backbone | None = None,
) -> Artifact:
    """A classify or tags function created from label names alone (not yet saved).

    ``backbone`` is a model name, config-JSON path or :class:`BackboneRef`; ``encoder`` reuses
    an already loaded backbone for it.
    """
    kind = FunctionType(kind)
    if kind not in (FunctionType.CLASSIFY, FunctionType.TAGS):
        raise ValueError(f"zero-shot supports classify and tags, not {kind.value}")
    ref = backbone if isinstance(backbone, BackboneRef) else resolve_ref(backbone, weights)
    encoder = encoder or load_backbone(ref)
    manifest = Manifest(
        name=name,
        type=kind,
        labels=list(labels),
        backbone=ref,
        mode=Mode.ZERO_SHOT,
        head={"templates": list(templates)},
    )
    state = zero_shot_head_state(encoder, kind, labels, templates)
    build_head(manifest, encoder).load_state_dict(state, strict=True)  # shape check
    return Artifact(manifest, state).with_version()
