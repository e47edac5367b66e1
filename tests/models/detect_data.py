"""Generated COCO detection datasets: 1 to 4 shapes per scene.

The category is the colour (``red``, ``blue``) or, with ``by="shape"``, the shape.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torchvision.ops import box_iou

from models.synthetic import COLOURS, SHAPES, Obj, background, draw, random_box

DETECT_CLASSES = ("red", "blue")


def _boxes(
    rng: np.random.Generator, k: int, width: int, height: int
) -> list[tuple[int, int, int, int]]:
    """k square-ish boxes that overlap little (IoU < 0.2), in a width x height image."""
    side = min(width, height)
    placed: list[tuple[int, int, int, int]] = []
    while len(placed) < k:
        x1, y1, x2, y2 = random_box(rng, side, 0.25, 0.42)
        dx = int(rng.integers(0, width - side + 1))
        dy = int(rng.integers(0, height - side + 1))
        box = (x1 + dx, y1 + dy, x2 + dx, y2 + dy)
        if not placed or box_iou(torch.tensor([box]), torch.tensor(placed)).max() < 0.2:
            placed.append(box)
    return placed


def detect_scene(
    rng: np.random.Generator, width: int, height: int, classes: tuple[str, ...] = DETECT_CLASSES
) -> tuple[Image.Image, list[Obj]]:
    """A ``width x height`` scene with 1 to 4 shapes; ``classes`` are colours or shapes."""
    img = background(rng, max(width, height)).crop((0, 0, width, height))
    objs = []
    for box in _boxes(rng, int(rng.integers(1, 5)), width, height):
        label = str(rng.choice(classes))
        if label in COLOURS:
            obj = Obj(str(rng.choice(SHAPES)), label, box)
        else:
            obj = Obj(label, str(rng.choice(list(COLOURS))), box)
        draw(img, obj, rng)
        objs.append(obj)
    return img, objs


def coco_scenes(
    root: Path,
    n: int,
    seed: int,
    width: int = 64,
    height: int = 64,
    classes: tuple[str, ...] = DETECT_CLASSES,
) -> Path:
    """Write ``n`` scenes as ``root/img/<i>.png`` and ``root/coco.json``; return the JSON path."""
    rng = np.random.default_rng(seed)
    (root / "img").mkdir(parents=True, exist_ok=True)
    images: list[dict[str, Any]] = []
    anns: list[dict[str, Any]] = []
    cat_id = {name: i + 1 for i, name in enumerate(classes)}
    for i in range(n):
        img, objs = detect_scene(rng, width, height, classes)
        img.save(root / "img" / f"{i}.png")
        images.append({"id": i, "file_name": f"img/{i}.png", "width": width, "height": height})
        for o in objs:
            x1, y1, x2, y2 = o.box
            label = o.colour if o.colour in cat_id else o.shape
            anns.append(
                {
                    "id": len(anns) + 1,
                    "image_id": i,
                    "category_id": cat_id[label],
                    "bbox": [x1, y1, x2 - x1, y2 - y1],
                    "iscrowd": 0,
                }
            )
    coco = {
        "images": images,
        "annotations": anns,
        "categories": [{"id": v, "name": k} for k, v in cat_id.items()],
    }
    (root / "coco.json").write_text(json.dumps(coco))
    return root / "coco.json"
