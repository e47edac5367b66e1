"""Write generated datasets to disk in the user formats (folder per label, JSONL, CSV)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from synthshapes import COLOURS, SHAPES, coloured_shape_image, colours_image, shape_image


def _folder(root: Path, classes: list[str], per_class: int, seed: int, draw) -> Path:
    rng = np.random.default_rng(seed)
    for name in classes:
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            draw(rng, name).save(root / name / f"{i}.png")
    return root


def shapes_folder(root: Path, per_class: int, seed: int) -> Path:
    """classify by shape (any colour): ``root/<shape>/<i>.png``."""
    return _folder(root, list(SHAPES), per_class, seed, shape_image)


def colour_folder(root: Path, per_class: int, seed: int) -> Path:
    """classify by the colour of one shape (any kind): ``root/<colour>/<i>.png``."""
    return _folder(root, list(COLOURS), per_class, seed, coloured_shape_image)


def colours_jsonl(root: Path, n: int, seed: int) -> Path:
    """tags = which colours appear: ``root/manifest.jsonl`` with ``image`` and ``labels``."""
    rng = np.random.default_rng(seed)
    (root / "img").mkdir(parents=True, exist_ok=True)
    lines = []
    for i in range(n):
        img, colours = colours_image(rng)
        img.save(root / "img" / f"{i}.png")
        lines.append(json.dumps({"image": f"img/{i}.png", "labels": colours}))
    (root / "manifest.jsonl").write_text("\n".join(lines) + "\n")
    return root / "manifest.jsonl"
