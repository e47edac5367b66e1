"""Training presets: what ``--recipe fast|default|thorough|plain`` sets, resolved against a spec.

A :class:`Settings` is the recipe one training run follows: the preset's values with the
spec's explicit fields on top. It is recorded in the artifact's manifest (``training``) and
its report, so a function says how it was trained.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from models.manifest import Mode
from models.training.spec import Recipe, TrainSpec


@dataclass(frozen=True)
class Settings:
    """One run's recipe.

    ``epochs``: finetune epochs, or probe full-batch steps. ``poolings``: the head poolings
    trained and compared on validation (the first is kept on ties). ``augment``: ``auto``
    (suited to the function type), ``shift`` (flips and small shifts, the plain recipe's) or
    ``none``. ``patience``: 0 never stops early. ``clip``: the gradient norm clipped to in
    fine-tuning (0: none).
    """

    recipe: str
    epochs: int
    poolings: tuple[str, ...]
    balance: str
    label_smoothing: float
    warmup_fraction: float
    patience: int
    select: str
    augment: str
    clip: float

    def record(self) -> dict[str, Any]:
        """A JSON-ready dict of the settings."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}


# finetune: (epochs, poolings, patience); probe: epochs are full-batch steps
_PRESETS: dict[Recipe, dict[str, Any]] = {
    Recipe.FAST: {"epochs": 15, "poolings": ("pooled", "patch_max"), "patience": 5},
    Recipe.DEFAULT: {"epochs": 40, "poolings": ("pooled", "patch_max"), "patience": 15},
    Recipe.THOROUGH: {
        "epochs": 80,
        "poolings": ("pooled", "patch_max", "patch_attention"),
        "patience": 25,
    },
}
_PROBE_STEPS = {Recipe.FAST: 150, Recipe.DEFAULT: 300, Recipe.THOROUGH: 600, Recipe.PLAIN: 300}
_EARNED = {  # what every preset but plain shares
    "balance": "sampler",
    "label_smoothing": 0.1,
    "warmup_fraction": 0.1,
    "select": "best",
    "augment": "auto",
    "clip": 1.0,
}
_PLAIN = {
    "epochs": 30,
    "poolings": ("pooled",),
    "patience": 0,
    "balance": "none",
    "label_smoothing": 0.0,
    "warmup_fraction": 0.1,
    "select": "last",
    "augment": "shift",
    "clip": 0.0,
}


def resolve(spec: TrainSpec) -> Settings:
    """The preset of ``spec.recipe`` with ``spec``'s explicit fields on top.

    Probe mode trains on cached pooled embeddings: one pooling (``pooled``), steps not epochs,
    no augmentation; a sampler balance becomes loss weights (every step sees every sample).
    """
    base = dict(_PLAIN) if spec.recipe == Recipe.PLAIN else {**_EARNED, **_PRESETS[spec.recipe]}
    if spec.pooling is not None:
        base["poolings"] = base["poolings"] if spec.pooling == "auto" else (spec.pooling,)
    for name in ("balance", "label_smoothing", "warmup_fraction", "patience", "select"):
        if getattr(spec, name) is not None:
            base[name] = getattr(spec, name)
    if spec.epochs is not None:
        base["epochs"] = spec.epochs
    if not spec.augment:
        base["augment"] = "none"
    if spec.mode == Mode.PROBE:
        base["epochs"] = spec.epochs or _PROBE_STEPS[spec.recipe]
        base["poolings"] = ("pooled",)
        base["augment"] = "none"
        base["balance"] = "loss" if base["balance"] == "sampler" else base["balance"]
    return Settings(recipe=spec.recipe.value, **base)
