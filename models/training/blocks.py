"""Which parameters of the image tower a finetune trains."""

from __future__ import annotations

import torch

from models.backbones import Backbone


def trainable_blocks(backbone: Backbone, unfreeze: int | None) -> list[torch.nn.Parameter]:
    """The image tower's parameters to train, with gradients switched on.

    ``unfreeze``: ``None`` trains the whole tower; ``N`` the last N transformer blocks, the
    final norm and the projection.
    """
    visual = backbone.visual
    if unfreeze is None:
        modules: list[torch.nn.Module] = [visual]
    else:
        blocks = list(visual.transformer.resblocks)[-unfreeze:] if unfreeze else []
        modules = [*blocks, visual.ln_post]
    params = [p for m in modules for p in m.parameters()]
    if unfreeze is not None and isinstance(getattr(visual, "proj", None), torch.nn.Parameter):
        params.append(visual.proj)
    for p in params:
        p.requires_grad_(True)
    return params
