"""Stage ceilings on the asset set, each alone on all cores: M, D, D_full, F (images/s).

- M, model only: ``Fleet.predict`` on preprocessed (decoded, 224 px) batches of the
  pipeline's batch size;
- D, decode only: bytes in memory to model-ready arrays with the pipeline's own
  ``decode_image`` (JPEG draft) in its decode processes, one per CPU, as the pipeline;
- D_thread: D in the threads themselves (``decode_mode=thread``): what the isolation costs;
- D_full: the same as D with ``decode_image_full`` (full-size decode, then resize);
- D_nvimgcodec: D with ``TAGFLEET_DECODE_BACKEND=nvimgcodec`` as the service runs it (one
  decode thread per CPU, on the models' device: nvJPEG with CUDA, its CPU backend without);
- F, fetch only: S3 GETs with the pipeline's own ``S3Fetcher`` and its default workers.

D, D_full and F are measured per kind of image on ``--per-kind`` images of each kind; the
mix figure weights each kind by its share of the set (time per image = sum of share x time).
Every figure is the median of ``--repeats`` runs.

    python -m benchmarks.stages [--stages M D D_full D_nvimgcodec F] [--images 1000] [--model ...]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.assets import KINDS, Asset
from benchmarks.common import (
    add_common_args,
    assets_in_s3,
    bench_fleet,
    fleet_dir,
    median_of,
    parser_for,
    peak_rss_mb,
    write_results,
)
from consumers.cpus import available_cpus
from consumers.decode import DecodeLimits, decode_image, decode_image_full
from consumers.decode_nvimgcodec import NvImageCodec
from consumers.decode_processes import DecodeProcesses
from consumers.domain import AssetRequest
from consumers.settings import Settings

ALL = ("M", "D", "D_thread", "D_full", "D_nvimgcodec", "F")


def decode_rate(blobs: list[bytes], target: int, draft: bool, processes: bool = True) -> float:
    """Images/s decoding ``blobs`` as the pipeline does: one decode process per CPU
    (:class:`DecodeProcesses`, the service's default ``decode_mode``) fed by as many threads,
    or with ``processes=False`` in the threads themselves (``decode_mode=thread``)."""
    workers = available_cpus()
    limits = DecodeLimits()
    with ExitStack() as stack:
        if processes:
            decode: Callable[[bytes], Any] = stack.enter_context(
                DecodeProcesses(workers, target, limits, draft=draft)
            )
        else:
            decode = partial(
                decode_image if draft else decode_image_full, target=target, limits=limits
            )
        threads = stack.enter_context(ThreadPoolExecutor(workers))
        started = time.perf_counter()
        list(threads.map(decode, blobs))
        return len(blobs) / (time.perf_counter() - started)


def nvimgcodec_rate(blobs: list[bytes], target: int) -> float:
    """Images/s decoding ``blobs`` with :class:`NvImageCodec` in one thread per CPU, on the
    settings' device (CUDA when available), synchronised before the clock stops."""
    codec = NvImageCodec(target, DecodeLimits(), device=Settings().device)
    with ThreadPoolExecutor(available_cpus()) as threads:
        list(threads.map(codec.decode, blobs[:2]))  # warm-up: the decoders, the CUDA context
        started = time.perf_counter()
        list(threads.map(codec.decode, blobs))
        if codec.device is not None:
            import torch

            torch.cuda.synchronize(codec.device)
        return len(blobs) / (time.perf_counter() - started)


def fetch_rate(assets: list[Asset], bucket: str) -> float:
    """Images/s of S3 GETs with the pipeline's fetcher (its default worker count)."""
    from consumers.fetch import FetchSettings, S3Fetcher

    requests = [
        AssetRequest(asset_id=a.key, uri=f"s3://{bucket}/{a.key}", bucket=bucket, key=a.key)
        for a in assets
    ]
    with S3Fetcher(FetchSettings(workers=Settings().fetch_workers)) as fetcher:
        started = time.perf_counter()
        for _, result in fetcher.fetch_many(requests):
            if isinstance(result, Exception):
                raise result
        return len(requests) / (time.perf_counter() - started)


def model_rate(fleet: Any, arrays: list[np.ndarray], batch: int) -> float:
    """Images/s of ``fleet.predict`` over ``arrays`` in batches of ``batch``."""
    sizes = [(4000, 3000)] * batch
    fleet.predict(arrays[:batch], sizes[: len(arrays[:batch])])  # warm-up
    started = time.perf_counter()
    for start in range(0, len(arrays), batch):
        chunk = arrays[start : start + batch]
        fleet.predict(chunk, sizes[: len(chunk)])
    return len(arrays) / (time.perf_counter() - started)


def by_kind(assets: list[Asset], per_kind: int) -> dict[str, list[Asset]]:
    return {kind: [a for a in assets if a.kind == kind][:per_kind] for kind in KINDS}


def mix_rate(rates: dict[str, float]) -> float:
    """Images/s on the mix: kinds weighted by their share of the set."""
    return 1 / sum(KINDS[kind][0] / rate for kind, rate in rates.items())


def per_kind_figure(
    measure: Callable[[list[Asset]], float], groups: dict[str, list[Asset]], repeats: int
) -> dict[str, Any]:
    rates = {}
    runs = {}
    for kind, group in groups.items():
        rates[kind], runs[kind] = median_of(repeats, lambda group=group: measure(group))
    return {"mix": mix_rate(rates), "by_kind": rates, "runs": runs}


def run(args: argparse.Namespace) -> dict[str, Any]:
    from models import load_fleet

    assets = assets_in_s3(args)
    groups = by_kind(assets, args.per_kind)
    fleet = load_fleet(bench_fleet(args.model, fleet_dir(args.model)))
    target = fleet.input_size
    blobs = {a.key: a.path.read_bytes() for group in groups.values() for a in group}
    figures: dict[str, Any] = {
        "cpus": available_cpus(),
        "per_kind": args.per_kind,
        "model": args.model,
    }
    for stage in args.stages:
        if stage == "M":
            sample = [a for group in groups.values() for a in group][: args.model_images]
            arrays = [decode_image(blobs[a.key], target, DecodeLimits()).array for a in sample]
            batch = Settings().batch_size
            rate, runs = median_of(args.repeats, lambda a=arrays, b=batch: model_rate(fleet, a, b))
            figures["M"] = {"mix": rate, "runs": runs, "batch": batch, "images": len(arrays)}
        elif stage in ("D", "D_thread", "D_full"):
            figures[stage] = per_kind_figure(
                lambda group, draft=stage != "D_full", proc=stage != "D_thread": decode_rate(
                    [blobs[a.key] for a in group], target, draft, proc
                ),
                groups,
                args.repeats,
            )
        elif stage == "D_nvimgcodec":
            figures[stage] = per_kind_figure(
                lambda group: nvimgcodec_rate([blobs[a.key] for a in group], target),
                groups,
                args.repeats,
            )
        elif stage == "F":
            figures["F"] = per_kind_figure(
                lambda group: fetch_rate(group, args.bucket), groups, args.repeats
            )
        print(
            f"{stage:<7} {figures[stage]['mix']:8.1f} images/s  "
            + "  ".join(f"{k} {v:.1f}" for k, v in figures[stage].get("by_kind", {}).items()),
            flush=True,
        )
    figures["peak_rss_mb"] = peak_rss_mb()
    return figures


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = parser_for(__doc__)
    add_common_args(parser)
    parser.add_argument(
        "--stages",
        nargs="+",
        choices=ALL,
        default=list(ALL),
        help="stages to measure (default: all)",
    )
    parser.add_argument(
        "--per-kind",
        type=int,
        default=100,
        help="images of each kind for D, D_full and F (default 100)",
    )
    parser.add_argument(
        "--model-images", type=int, default=256, help="images through the model for M (default 256)"
    )
    args = parser.parse_args(argv)
    figures = run(args)
    write_results(Path(args.out), "stages", figures)
    return figures


if __name__ == "__main__":
    main()
