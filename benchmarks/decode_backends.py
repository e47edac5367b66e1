"""Decode backends on one core: milliseconds per photo of the benchmark mix, image to model input.

pillow (the default: draft-scaled JPEG decode, then resize), pillow_full (full-size decode, then
resize) and nvimgcodec (TAGFLEET_DECODE_BACKEND=nvimgcodec: on the CPU its libjpeg-turbo
backend, full size, then Pillow's resize; on a CUDA device nvJPEG and a torch resize there,
synchronised before the clock stops). Each kind of ``benchmarks.assets`` (12 MP JPEG, 1080p JPEG,
1080p PNG) is rendered ``--per-kind`` times; the figure per kind is the median over its images
of the median of ``--runs`` decodes, and the mix weights kinds by their share. Writes
``decode_backends.json`` under ``--out``.

    python -m benchmarks.decode_backends [--per-kind 3] [--runs 3] [--device cpu]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tqdm import tqdm

from benchmarks.assets import KINDS, render
from benchmarks.common import RESULTS, write_results
from consumers.decode import DecodeLimits, decode_image, decode_image_full
from consumers.decode_nvimgcodec import NvImageCodec, available

TARGET = 224


def backends(device: str | None) -> dict[str, Callable[[bytes], Any]]:
    """Name -> decode of one image to the model input."""
    limits = DecodeLimits()
    found: dict[str, Callable[[bytes], Any]] = {
        "pillow": lambda data: decode_image(data, TARGET, limits),
        "pillow_full": lambda data: decode_image_full(data, TARGET, limits),
    }
    if available() is None:
        codec = NvImageCodec(TARGET, limits, device=device)
        if codec.device is None:
            found["nvimgcodec"] = codec.decode
        else:
            import torch

            def on_device(data: bytes) -> Any:
                out = codec.decode(data)
                torch.cuda.synchronize(codec.device)
                return out

            found["nvimgcodec"] = on_device
    return found


def milliseconds(decode: Callable[[bytes], Any], data: bytes, runs: int) -> float:
    decode(data)  # warm-up (the first call builds the decoder)
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        decode(data)
        times.append(time.perf_counter() - started)
    return statistics.median(times) * 1000


def measure(per_kind: int, runs: int, device: str | None) -> dict[str, Any]:
    """Per backend: ms per image by kind and on the mix (kinds weighted by their share)."""
    images = {kind: [render(i, kind) for i in range(per_kind)] for kind in KINDS}
    found = backends(device)
    figures: dict[str, Any] = {"per_kind": per_kind, "runs": runs, "target": TARGET}
    if "nvimgcodec" not in found:
        figures["nvimgcodec_skipped"] = available()
    work = [(name, kind) for name in found for kind in KINDS]
    by_kind: dict[str, dict[str, float]] = {name: {} for name in found}
    for name, kind in tqdm(work, desc="decode backends", unit="kind"):
        by_kind[name][kind] = statistics.median(
            milliseconds(found[name], data, runs) for data in images[kind]
        )
    for name, kinds in by_kind.items():
        mix = sum(KINDS[kind][0] * ms for kind, ms in kinds.items())
        figures[name] = {"mix_ms": mix, "by_kind_ms": kinds, "per_core_images_s": 1000 / mix}
    return figures


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--per-kind", type=int, default=3, help="images per kind (default 3)")
    parser.add_argument("--runs", type=int, default=3, help="decodes per image (default 3)")
    parser.add_argument(
        "--device", default="cpu", help="nvimgcodec's device: cpu (default), cuda, cuda:N"
    )
    parser.add_argument("--out", default=str(RESULTS), help=f"results folder (default {RESULTS})")
    args = parser.parse_args(argv)
    figures = measure(args.per_kind, args.runs, args.device)
    for name in ("pillow", "pillow_full", "nvimgcodec"):
        if name in figures:
            kinds = "  ".join(f"{k} {v:.1f}" for k, v in figures[name]["by_kind_ms"].items())
            print(f"{name:<12} mix {figures[name]['mix_ms']:7.1f} ms/image  {kinds}")
    write_results(Path(args.out), "decode_backends", figures)
    return figures


if __name__ == "__main__":
    main()
