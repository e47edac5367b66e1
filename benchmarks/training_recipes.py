"""Training time per epoch and serving images/s of classify heads, by pooling and with tiles.

On the generated surfaces (240 images of 250 px at the tiny backbone's 64 px input), for each
head pooling (``pooled``, ``patch_max``, ``patch_attention``): seconds per fine-tuning epoch of
the default recipe, then images/s through ``Fleet.predict`` at batch 32 (one resize per image)
and through ``models.tiling.predict_tiled`` with 4 tiles per image (2 x 2, no overlap).
Random weights, no model hub needed.

    .venv/bin/python benchmarks/training_recipes.py [--threads N] [--epochs N] [--seconds S]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from models import Fleet
from models.artifacts import Artifact
from models.function import Function
from models.recipes import surfaces_spec
from models.synthetic import surface_image, surfaces_folder
from models.tiling import Tiling, cut_tiles, predict_tiled
from models.train import train

POOLINGS = ("pooled", "patch_max", "patch_attention")


def per_epoch(data: str, pooling: str, epochs: int) -> tuple[Artifact, float]:
    """The trained artifact and its seconds per epoch (with its validation pass)."""
    spec = surfaces_spec("surface", pooling=pooling, epochs=epochs, patience=0, progress=False)
    artifact = train(data, spec)
    run = artifact.manifest.training
    seconds = float(json.loads(artifact.files["report.json"])["training"]["runs"][0]["seconds"])
    assert run["pooling"] == pooling
    return artifact, seconds / epochs


def served(fleet: Fleet, images: list[np.ndarray], seconds: float) -> float:
    """Images/s through ``Fleet.predict`` at the batch of ``images``."""
    sizes = [(250, 250)] * len(images)
    fleet.predict(images, sizes)
    done, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        fleet.predict(images, sizes)
        done += len(images)
    return done / (time.perf_counter() - start)


def served_tiled(function: Function, tiles: list[np.ndarray], seconds: float) -> float:
    """Images/s through ``predict_tiled``, one image (its tiles in one batch) at a time."""
    predict_tiled(function, tiles[0], (500, 500))
    done, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        predict_tiled(function, tiles[done % len(tiles)], (500, 500))
        done += 1
    return done / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument("--epochs", type=int, default=5, help="epochs timed per pooling (5)")
    parser.add_argument("--seconds", type=float, default=5.0, help="seconds per serving figure")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    root = Path(tempfile.mkdtemp())
    data = str(surfaces_folder(root, {"clean": 120, "whole": 80, "local": 40}, seed=0))
    rng = np.random.default_rng(1)
    large = [surface_image(rng, "local", 500) for _ in range(8)]
    print(f"load average {os.getloadavg()[0]:.1f}, {args.threads} thread(s)")
    print("| pooling | s/epoch (240 images) | images/s, batch 32 | images/s, 4 tiles each |")
    print("|---|---|---|---|")
    for pooling in POOLINGS:
        artifact, epoch_s = per_epoch(data, pooling, args.epochs)
        fleet = Fleet.from_artifacts([artifact], device="cpu")
        batch = [np.asarray(im.resize((64, 64)), dtype=np.uint8) for im in large * 4]
        function = Function(artifact, next(iter(fleet.backbones.values())))
        tiles = [cut_tiles(im, Tiling(250, 0.0), fleet.input_size) for im in large]
        assert all(len(t) == 4 for t in tiles)
        print(
            f"| {pooling} | {epoch_s:.2f} | {served(fleet, batch, args.seconds):,.0f} | "
            f"{served_tiled(function, tiles, args.seconds):,.0f} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
