"""Validated training recipes for the tiny test backbone (the learning tests and the demo).

One source of truth: ``tests/models/test_learning.py`` trains with these specs, so what the
demo trains at first run is what the tests show to reach its held-out quality on generated
data (``models.synthetic``: a colour per image for classify, 1-3 colours per image for tags).

Tiny models train fastest on ONE CPU thread (``torch.set_num_threads(1)`` or
``OMP_NUM_THREADS=1``): with two threads on a busy machine a training step was 10-30x slower.
"""

from __future__ import annotations

from typing import Any

from models.backbones import CONFIG_DIR
from models.training.spec import TrainSpec

TINY_CONFIG = str(CONFIG_DIR / "tiny-vit.json")

# fine-tuning a random-init tiny ViT: high learning rates, whole tower unfrozen
_FINETUNE: dict[str, Any] = {
    "backbone": TINY_CONFIG,
    "mode": "finetune",
    "lr": 3e-2,
    "backbone_lr": 3e-3,
}


def demo_classify_spec(name: str, **overrides: Any) -> TrainSpec:
    """classify (e.g. the colour of one shape), 4 classes x ~40 images: held-out accuracy >= 0.9."""
    return TrainSpec(type="classify", name=name, **{**_FINETUNE, "epochs": 25, **overrides})


def demo_tags_spec(name: str, **overrides: Any) -> TrainSpec:
    """tags (which colours appear), ~200 images: held-out micro-F1 >= 0.9 (0.95-0.97 seen).

    The patch maximum, the tags head's pooling before issue 17, is kept: one run, not two."""
    return TrainSpec(
        type="tags", name=name, **{**_FINETUNE, "epochs": 40, "pooling": "patch_max", **overrides}
    )


def surfaces_spec(name: str, **overrides: Any) -> TrainSpec:
    """classify surfaces (clean, a small local mark, a change over the whole surface;
    ``models.synthetic.surfaces_folder``), ~240 images of 250 px, the local class smallest:
    with the default recipe held-out macro-F1 >= 0.9 and every class's recall >= 0.8. The
    epochs are the recipe's (``recipe="plain"`` gives the recipe before issue 17)."""
    return TrainSpec(type="classify", name=name, **{**_FINETUNE, "lr": 1e-2, **overrides})
