"""What to train and how: :class:`TrainSpec`, the same for every function type."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from models.manifest import FunctionType, Mode


class Recipe(StrEnum):
    """Training presets (:mod:`models.training.presets` says what each sets)."""

    FAST = "fast"
    DEFAULT = "default"
    THOROUGH = "thorough"
    PLAIN = "plain"  # the recipe before issue 17, for comparisons: pooled, unbalanced, last epoch


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
    cache_dir: str | None = Field(
        default=None,
        description="local cache: fetched weights, and the embedding cache under embeddings/"
        " (unset: ~/.cache/tagfleet)",
    )
    device: str | None = None
    offline: bool = Field(
        default=False, description="refuse to download pretrained weights from the model hub"
    )
    progress: bool = True
    recipe: Recipe = Field(
        default=Recipe.DEFAULT,
        description="training preset: fast, default, thorough, or plain (the pre-issue-17 "
        "recipe, for comparisons); epochs, pooling, balance, label smoothing, warm-up, "
        "patience and select left unset take the preset's values",
    )
    pooling: Literal["auto", "pooled", "patch_max", "patch_attention"] | None = Field(
        default=None,
        description="finetune classify/tags: what the head reads besides the pooled embedding; "
        "auto = the preset's candidates, chosen on validation macro-F1 (pooled wins ties)",
    )
    balance: Literal["none", "sampler", "loss"] | None = Field(
        default=None,
        description="class balance: sampler = class-balanced sampling, loss = inverse-"
        "frequency loss weights, none = as the data comes (default: the preset's)",
    )
    label_smoothing: float | None = Field(
        default=None, ge=0, lt=0.5, description="label smoothing (default: the preset's)"
    )
    warmup_fraction: float | None = Field(
        default=None,
        ge=0,
        lt=1,
        description="share of the steps with a linear learning-rate warm-up before the "
        "cosine decay (default: the preset's)",
    )
    patience: int | None = Field(
        default=None,
        ge=0,
        description="early stopping: epochs without a better validation macro-F1 before "
        "training stops; 0 never stops early (default: the preset's)",
    )
    tile: int | None = Field(
        default=None,
        gt=0,
        description="classify/tags: serve images in overlapping tiles of this many original "
        "pixels (e.g. the training images' size) instead of one whole-image resize",
    )
    kfold_below: int = Field(
        default=10,
        ge=0,
        description="below this many samples of the rarest label, k-fold cross-validation "
        "gives the report's figures (mean and spread) and the function trains on every "
        "sample; 0 never",
    )
    folds: int = Field(default=5, ge=2, description="folds of the cross-validation, at most")
    select: Literal["best", "last"] | None = Field(
        default=None,
        description="checkpoint kept: best = the epoch with the best validation macro-F1, "
        "last = the last epoch (default: the preset's)",
    )

    def backbone_options(self) -> dict[str, Any]:
        """How training loads its backbone: the device, the weights cache, the offline switch."""
        return {
            "device": self.device,
            "cache_dir": Path(self.cache_dir) if self.cache_dir else None,
            "offline": self.offline,
        }
