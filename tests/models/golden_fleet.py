"""The fixed tiny fleet and fixed images behind the golden-output test.

Regenerate the stored expectation only on purpose (a deliberate model change)::

    .venv/bin/python tests/models/golden_fleet.py --write
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from models import Fleet, zero_shot  # noqa: E402
from models.artifacts import Artifact  # noqa: E402
from models.backbones import CONFIG_DIR  # noqa: E402
from models.manifest import Manifest  # noqa: E402

GOLDEN = Path(__file__).parent / "golden" / "tiny_fleet.json"
TINY = str(CONFIG_DIR / "tiny-vit.json")


def golden_fleet() -> Fleet:
    """Two zero-shot functions and one seeded random head on the tiny backbone (random:0)."""
    shape = zero_shot("shape", "classify", ["circle", "square", "triangle", "cross"], TINY)
    colours = zero_shot("colours", "tags", ["red", "green", "blue", "yellow"], TINY)
    thresholds = {"red": 0.3, "green": 0.35, "blue": 0.3}  # yellow keeps the default
    colours.manifest = colours.manifest.model_copy(update={"thresholds": thresholds})
    colours = colours.with_version()
    gen = torch.Generator().manual_seed(1234)
    head = {"linear.weight": torch.randn(3, 64, generator=gen), "linear.bias": torch.zeros(3)}
    manifest = Manifest(
        name="size",
        type="classify",
        labels=["small", "medium", "large"],
        backbone=shape.manifest.backbone,
        temperature=0.5,
    )
    size = Artifact(manifest, head).with_version()
    return Fleet.from_artifacts([shape, colours, size], device="cpu")


def golden_images() -> tuple[list[np.ndarray], list[tuple[int, int]]]:
    """Eight fixed images: gradients and checkerboards (no RNG, no Pillow resampling)."""
    y, x = np.mgrid[0:64, 0:64]
    images = []
    for i in range(8):
        r = (x * (i + 1) * 4) % 256
        g = (y * (8 - i) * 4) % 256
        b = (((x // (i + 2)) + (y // (i + 2))) % 2) * 255
        images.append(np.stack([r, g, b], axis=-1).astype(np.uint8))
    return images, [(640 + 10 * i, 480) for i in range(8)]


def golden_predictions() -> list[dict]:
    images, sizes = golden_images()
    return golden_fleet().predict(images, sizes)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--write", action="store_true", help="overwrite the stored expectation")
    args = parser.parse_args()
    predictions = golden_predictions()
    if args.write:
        GOLDEN.parent.mkdir(parents=True, exist_ok=True)
        GOLDEN.write_text(json.dumps(predictions, indent=1, sort_keys=True) + "\n")
        print(f"wrote {GOLDEN}")
    else:
        print(json.dumps(predictions[0], indent=1))
