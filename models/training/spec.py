"""What to train and how: :class:`TrainSpec`, the same for every function type."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from models.manifest import FunctionType, Mode


class TrainSpec(BaseModel):
    """What to train and how. Defaults suit a pretrained backbone in probe mode."""

    model_config = ConfigDict(extra="forbid")

    type: FunctionType
    name: str
    backbone: str = "ViT-B-32"
    weights: str | None = None
    mode: Mode = Mode.PROBE
    epochs: int | None = None  # probe: full-batch steps (300); finetune: epochs (30)
    lr: float | None = None  # head; probe 1e-2, finetune 1e-3
    backbone_lr: float = 1e-5
    weight_decay: float = 1e-4
    batch_size: int = 32
    unfreeze_blocks: int | None = None  # finetune: last N blocks (None = all)
    val_fraction: float = Field(default=0.2, gt=0, lt=1)
    seed: int = 0
    zero_shot_init: bool = False
    target_precision: float | None = Field(default=None, gt=0, le=1)
    augment: bool = True
    cache_dir: str | None = None
    device: str | None = None
    progress: bool = True
