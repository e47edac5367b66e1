"""GPU fleet throughput in bf16 for ViT-B-32 and ViT-L-14 (random weights; no model hub).

Prepared for a machine with a CUDA device; it refuses to run without one. Each fleet has three
functions on one backbone (see fleet_throughput.py); the backbone runs under bf16 autocast with
channels_last, normalisation on the device. ``--compile`` adds torch.compile.

    .venv/bin/python benchmarks/gpu_fleet.py [--batches 1 8 32 128] [--compile]
"""

from __future__ import annotations

import argparse
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(__file__))
from fleet_throughput import build_fleet, throughput  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--models",
        nargs="+",
        default=["ViT-B-32", "ViT-L-14"],
        help="open_clip model names (default: ViT-B-32 ViT-L-14)",
    )
    parser.add_argument(
        "--batches",
        nargs="+",
        type=int,
        default=[1, 8, 32, 128],
        help="batch sizes (default: 1 8 32 128)",
    )
    parser.add_argument(
        "--seconds", type=float, default=10.0, help="measuring time per point (default: 10)"
    )
    parser.add_argument(
        "--compile", action="store_true", help="torch.compile the image tower (default: off)"
    )
    args = parser.parse_args()
    if not torch.cuda.is_available():
        sys.exit("gpu_fleet.py needs a CUDA device")
    torch.backends.cuda.matmul.allow_tf32 = True
    print(
        f"torch {torch.__version__}, {torch.cuda.get_device_name()}, bf16 autocast, "
        f"compile={args.compile}"
    )
    print(f"{'model':<10} {'batch':>5} {'images/s':>10} {'peak GiB':>9}")
    for model in args.models:
        fleet = build_fleet(model, "cuda", compile=args.compile)
        backbone = next(iter(fleet.backbones.values()))
        assert backbone.autocast_dtype in (torch.bfloat16, torch.float16)
        for batch in args.batches:
            torch.cuda.reset_peak_memory_stats()
            rate = throughput(fleet, batch, args.seconds, warmup=5)
            peak = torch.cuda.max_memory_allocated() / 2**30
            print(f"{model:<10} {batch:>5} {rate:>10.1f} {peak:>9.2f}", flush=True)


if __name__ == "__main__":
    main()
