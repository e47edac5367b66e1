"""Tiled inference: an image much larger than the backbone input, cut into overlapping tiles.

A function trained on pictures of one scale (say 250 px of a material) sees a 2000 x 1500
photo of the same material resized whole to the backbone input: a mark of a few pixels shrinks
below one. With a tiling (the manifest's ``head["tiling"]``: ``tile``, the side of a tile in
original pixels, e.g. the training images' size, and ``overlap``, the share two neighbours
share) the image is cut into tiles at that scale, every tile is resized to the backbone input
and encoded in one batch, and the head reads the image as one: the pooled embedding is the
mean over the tiles and the patch tokens of every tile are pooled together, so a
``patch_max`` head takes the maximum over every patch of every tile and ``patch_attention``
attends over all of them. detect finds objects tile by tile and maps their boxes back.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from models.backbones import Backbone, Features
from models.function import Function
from models.manifest import FunctionType, Manifest
from models.tile_grid import Box, TileSet, Tiling, cut_tile_set, cut_tiles

__all__ = [
    "Tiling",
    "TileSet",
    "cut_tile_set",
    "cut_tiles",
    "encode_tiles",
    "merge",
    "predict_tiled",
    "run_tiled",
]


def merge(features: Features) -> Features:
    """One image's features from its tiles': the mean pooled embedding, every patch token."""
    pooled = features.pooled.mean(dim=0, keepdim=True)
    if features.tokens is None or features.grid is None:
        return Features(pooled, None, None)
    tiles, patches, width = features.tokens.shape
    grid = (features.grid[0] * tiles, features.grid[1])  # tiles stacked: no image geometry
    return Features(pooled, features.tokens.reshape(1, tiles * patches, width), grid)


@torch.inference_mode()
def encode_tiles(backbone: Backbone, tiles: np.ndarray, batch: int = 64) -> Features:
    """The features of every tile (one row per tile), encoded ``batch`` tiles at a time."""
    parts = [backbone.encode(tiles[i : i + batch]) for i in range(0, len(tiles), batch)]
    tokens = [p.tokens for p in parts]
    return Features(
        torch.cat([p.pooled for p in parts]),
        None if any(t is None for t in tokens) else torch.cat(tokens),  # type: ignore[arg-type]
        parts[0].grid,
    )


@torch.inference_mode()
def run_tiled(
    function: Function,
    features: Features,
    orig_size: tuple[int, int],
    boxes: Sequence[Box] | None = None,
) -> dict[str, Any]:
    """The result object of ``function`` for one image from its tiles' features
    (:func:`encode_tiles`); see :func:`predict_tiled`."""
    if function.manifest.type != FunctionType.DETECT:
        return function.run(merge(features), [orig_size])[0]
    if boxes is None or len(boxes) != len(features.pooled):
        raise ValueError("detect through tiles needs each tile's box")
    sizes = [(x2 - x1, y2 - y1) for x1, y1, x2, y2 in boxes]
    per_tile = function.run(features, sizes)
    if len(per_tile) == 1:  # one tile is the whole image: its objects as they are
        return per_tile[0]
    found = [
        (obj, (box[0], box[1]))
        for result, box in zip(per_tile, boxes, strict=True)
        for obj in result["objects"]
    ]
    merged = {**per_tile[0], "objects": _merge_objects(found, function.manifest)}
    if all("candidates" in result for result in per_tile):  # the boxes above the floor, too
        pool = [
            (obj, (box[0], box[1]))
            for result, box in zip(per_tile, boxes, strict=True)
            for obj in result["candidates"]
        ]
        head = function.manifest.head
        bound = int(head.get("max_detections", 100)) + int(head.get("max_candidates", 100))
        merged["candidates"] = _merge_objects(pool, function.manifest, bound)
    return merged


def predict_tiled(
    function: Function,
    tiles: np.ndarray,
    orig_size: tuple[int, int],
    batch: int = 64,
    boxes: Sequence[Box] | None = None,
) -> dict[str, Any]:
    """The result object of ``function`` for one image given as its tiles (:func:`cut_tiles`).

    classify and tags read the tiles as one image (:func:`merge`). detect needs the tiles'
    ``boxes`` (:meth:`Tiling.boxes`, in the image's pixels): each tile's objects are found in
    the tile's own pixels, shifted by its corner, and the objects of every tile go through one
    class-wise NMS (the head's ``nms_iou``), best ``max_detections`` kept.
    """
    return run_tiled(function, encode_tiles(function.backbone, tiles, batch), orig_size, boxes)


def _merge_objects(
    found: list[tuple[dict[str, Any], tuple[int, int]]],
    manifest: Manifest,
    limit: int | None = None,
) -> list[dict[str, Any]]:
    """Objects of every tile in the image's pixels, one class-wise NMS over them, best first
    (at most ``limit``, else the head's ``max_detections``)."""
    from torchvision.ops import batched_nms

    if not found:
        return []
    shifted = [
        [b[0] + dx, b[1] + dy, b[2] + dx, b[3] + dy] for (o, (dx, dy)) in found for b in [o["box"]]
    ]
    scores = torch.tensor([o["score"] for o, _ in found])
    labels = torch.tensor([manifest.labels.index(o["label"]) for o, _ in found])
    iou = float(manifest.head.get("nms_iou", 0.5))
    keep = batched_nms(torch.tensor(shifted, dtype=torch.float32), scores, labels, iou)
    keep = keep[: limit if limit is not None else int(manifest.head.get("max_detections", 100))]
    return [
        {"label": found[k][0]["label"], "score": found[k][0]["score"], "box": shifted[k]}
        for k in keep.tolist()
    ]
