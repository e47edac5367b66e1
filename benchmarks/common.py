"""What every benchmark shares: the local stack's environment, the bench fleet, the asset set
in memory and in S3, unique resource names, medians, peak memory and the results files.

Each benchmark command writes its figures to ``var/bench/results/<name>.json``;
``benchmarks.report`` turns them into ``docs/benchmarks.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks.assets import REPO, Asset, generate, print_summary, summary, upload
from benchmarks.stack import s3_client

RESULTS = REPO / "var" / "bench" / "results"
BENCH_CONFIG = REPO / "benchmarks" / "configs" / "bench-vit-224.json"
DEFAULT_MODEL = str(BENCH_CONFIG)
sys.path.insert(0, str(REPO / "tests" / "consumers"))  # the service-test harness, reused


def add_common_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--images", type=int, default=1000, help="images in the asset set (default 1000)"
    )
    parser.add_argument(
        "--model",
        default=DEFAULT_MODEL,
        help="open_clip model name or config JSON of the fleet's backbone "
        "(default benchmarks/configs/bench-vit-224.json)",
    )
    parser.add_argument(
        "--bucket",
        default="tagfleet-bench",
        help="S3 bucket of the asset set (default tagfleet-bench)",
    )
    parser.add_argument(
        "--repeats",
        type=int,
        default=3,
        help="timed repetitions, the median is reported (default 3)",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=RESULTS,
        help=f"folder of the JSON results (default {RESULTS.relative_to(REPO)})",
    )


def parser_for(doc: str | None) -> argparse.ArgumentParser:
    return argparse.ArgumentParser(
        description=doc, formatter_class=argparse.RawDescriptionHelpFormatter
    )


def assets_in_s3(args: argparse.Namespace) -> list[Asset]:
    """The asset set, rendered if needed (cached on disk) and uploaded if missing."""
    assets = generate(args.images)
    print_summary(assets)
    puts = upload(s3_client(), args.bucket, assets)
    if puts:
        print(f"uploaded {puts} objects to s3://{args.bucket}")
    return assets


def bench_fleet(model: str, directory: Path) -> Path:
    """fleet.yaml of the benchmark fleet: three zero-shot functions on one ``model`` backbone
    with seeded random weights (classify, tags, classify; see fleet_throughput.py)."""
    from benchmarks.fleet_throughput import fleet_artifacts
    from models import save_artifact
    from models.backbones import load_backbone, resolve_ref
    from models.fleet import FleetConfig, FleetEntry, write_fleet_config

    path = directory / "fleet.yaml"
    if path.exists():
        return path
    ref = resolve_ref(model, "random:0")
    entries = []
    for artifact in fleet_artifacts(ref, load_backbone(ref, device="cpu")):
        name = artifact.manifest.name
        save_artifact(artifact, str(directory / name))
        entries.append(FleetEntry(name=name, artifact=name))
    write_fleet_config(path, FleetConfig(functions=entries))
    return path


def fleet_dir(model: str) -> Path:
    """A cache folder per model (the artifacts are deterministic)."""
    slug = Path(model).stem if model.endswith(".json") else model
    return REPO / "var" / "bench" / "fleets" / slug


def run_id() -> str:
    return time.strftime("%H%M%S") + "-" + uuid.uuid4().hex[:6]


def median_of(repeats: int, measure: Callable[[], float]) -> tuple[float, list[float]]:
    """The median and every value of ``repeats`` calls of ``measure``."""
    values = [measure() for _ in range(max(1, repeats))]
    return statistics.median(values), values


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far (MB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def proc_peak_mb(pid: int) -> float | None:
    """Peak resident memory (VmHWM) of a live process, MB; None once it is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def tree_peak_mb(pid: int) -> float | None:
    """:func:`proc_peak_mb` of ``pid`` plus that of each of its live children (the service's
    decode processes); None once ``pid`` is gone."""
    own = proc_peak_mb(pid)
    if own is None:
        return None
    try:  # a child is listed under the thread that started it
        children = [
            c
            for t in Path(f"/proc/{pid}/task").iterdir()
            for c in (t / "children").read_text().split()
        ]
    except OSError:
        children = []
    return own + sum(proc_peak_mb(int(child)) or 0 for child in children)


def s3_server(endpoint: str | None) -> str:
    """Which S3 server of the stack an endpoint is: ``VersityGW`` (TAGFLEET_GW_ENDPOINT,
    port 17070 by default) or ``moto`` (the stack's default S3 endpoint, and every result
    written before the endpoint was recorded); another endpoint is named as it is."""
    if endpoint is None:
        return "moto"
    gateway = os.environ.get("TAGFLEET_GW_ENDPOINT", "http://127.0.0.1:17070")
    if endpoint.rstrip("/") == gateway.rstrip("/"):
        return "VersityGW"
    return "moto" if endpoint.rstrip("/").endswith(":15000") else endpoint


def write_results(out: Path, name: str, figures: dict[str, Any]) -> Path:
    """Write ``figures`` as ``out/<name>.json`` with the time and the S3 endpoint used."""
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{name}.json"
    figures = {
        "name": name,
        "time": time.strftime("%Y-%m-%d %H:%M:%S"),
        "s3_endpoint": os.environ.get("AWS_ENDPOINT_URL_S3"),
        **figures,
    }
    path.write_text(json.dumps(figures, indent=2, default=str))
    print(f"wrote {path}")
    return path


def asset_summary(assets: list[Asset]) -> dict[str, dict[str, float]]:
    return summary(assets)
