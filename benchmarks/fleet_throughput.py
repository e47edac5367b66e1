"""Fleet throughput on this machine: images/s through ``Fleet.predict`` at batch 1, 8, 32.

Each fleet has three functions (classify, tags, classify) on one backbone, so the figure is
one backbone pass plus three heads per batch. Random weights (no model hub needed).

    .venv/bin/python benchmarks/fleet_throughput.py [--models tiny-vit ViT-B-32] [--threads N]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from models import Fleet, zero_shot
from models.artifacts import Artifact
from models.backbones import Backbone, load_backbone, resolve_ref
from models.manifest import BackboneRef


def build_fleet(model: str, device: str | None, compile: bool = False) -> Fleet:
    """Three zero-shot functions sharing one randomly initialised ``model`` backbone."""
    ref = resolve_ref(model, "random:0")
    encoder = load_backbone(ref, device=device, compile=compile)
    artifacts = fleet_artifacts(ref, encoder)
    return Fleet.from_artifacts(artifacts, device=device, backbones={encoder.key: encoder})


def fleet_artifacts(ref: BackboneRef, encoder: Backbone) -> list[Artifact]:
    """The three zero-shot function artifacts of the benchmark fleets, on ``ref``."""
    return [
        zero_shot("kind", "classify", ["car", "truck", "bike", "bus"], ref, encoder=encoder),
        zero_shot("colours", "tags", ["red", "green", "blue", "black"], ref, encoder=encoder),
        zero_shot("scene", "classify", ["indoor", "outdoor"], ref, encoder=encoder),
    ]


def throughput(fleet: Fleet, batch: int, seconds: float, warmup: int = 2) -> float:
    """Images/s of ``fleet.predict`` on random uint8 batches, for about ``seconds``."""
    rng = np.random.default_rng(0)
    size = fleet.input_size
    images = list(rng.integers(0, 256, size=(batch, size, size, 3), dtype=np.uint8))
    sizes = [(1920, 1080)] * batch
    for _ in range(warmup):
        fleet.predict(images, sizes)
    done, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds or done == 0:
        fleet.predict(images, sizes)
        done += batch
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return done / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--models",
        nargs="+",
        default=["tiny-vit", "ViT-B-32"],
        help="open_clip model names or config paths (default: tiny-vit ViT-B-32)",
    )
    parser.add_argument(
        "--batches", nargs="+", type=int, default=[1, 8, 32], help="batch sizes (default: 1 8 32)"
    )
    parser.add_argument(
        "--seconds", type=float, default=5.0, help="measuring time per point (default: 5)"
    )
    parser.add_argument(
        "--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)"
    )
    parser.add_argument("--device", default=None, help="device (default: auto)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}")
    print(f"{'model':<12} {'batch':>5} {'images/s':>10}")
    for model in args.models:
        fleet = build_fleet(model, args.device)
        for batch in args.batches:
            rate = throughput(fleet, batch, args.seconds)
            print(f"{model:<12} {batch:>5} {rate:>10.1f}", flush=True)


if __name__ == "__main__":
    main()
