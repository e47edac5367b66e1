"""What a head-only shadow costs (issue 16): E with one serving function, then E with the same
function plus a shadow candidate on the same backbone, alternated on the same asset set.

The shadow runs in the serving function's backbone pass (one pass per batch either way), so
its cost is one more head and one more row per asset in ``version_results``. Each fleet is
run ``--repeats`` times, alternating, and the medians are compared.

    python -m benchmarks.shadow_cost [--images 200] [--repeats 2] [--model CONFIG.json]
"""

from __future__ import annotations

import statistics
from pathlib import Path

from benchmarks.common import (
    REPO,
    add_common_args,
    assets_in_s3,
    parser_for,
    write_results,
)
from benchmarks.end_to_end import run

FLEETS = REPO / "var" / "bench" / "shadow-fleets"
LABELS = ["car", "truck", "bike", "bus"]


def fleets(model: str) -> tuple[Path, Path]:
    """(one serving function, the same plus a head-only shadow of it) as fleet files."""
    from models import save_artifact, zero_shot
    from models.backbones import load_backbone, resolve_ref
    from models.fleet import FleetConfig, FleetEntry, Role, write_fleet_config

    directory = FLEETS / (Path(model).stem if model.endswith(".json") else model)
    alone, with_shadow = directory / "alone.yaml", directory / "with-shadow.yaml"
    if alone.exists() and with_shadow.exists():
        return alone, with_shadow
    ref = resolve_ref(model, "random:0")
    encoder = load_backbone(ref, device="cpu")
    serving = zero_shot("kind", "classify", LABELS, ref, encoder=encoder)
    candidate = zero_shot("kind", "classify", [*LABELS[:3], "van"], ref, encoder=encoder)
    save_artifact(serving, str(directory / "kind"))
    save_artifact(candidate, str(directory / "kind-candidate"))
    entry = FleetEntry(name="kind", artifact="kind")
    shadow = FleetEntry(name="kind", artifact="kind-candidate", role=Role.SHADOW)
    write_fleet_config(alone, FleetConfig(functions=[entry]))
    write_fleet_config(with_shadow, FleetConfig(functions=[entry, shadow]))
    return alone, with_shadow


def model_only(alone: Path, with_shadow: Path, seconds: float, repeats: int) -> dict[str, float]:
    """M: images/s of the fleet alone (``predict``) and with its shadow
    (``predict_with_shadows``) at batch 32, alternated in this process."""
    import time

    import numpy as np

    from models import load_fleet

    rates: dict[str, list[float]] = {"alone": [], "with_shadow": []}
    fleets = {"alone": load_fleet(alone), "with_shadow": load_fleet(with_shadow)}
    size = fleets["alone"].input_size
    images = list(np.random.default_rng(0).integers(0, 256, (32, size, size, 3), dtype=np.uint8))
    sizes = [(1920, 1080)] * 32
    for _ in range(repeats):
        for name, fleet in fleets.items():
            call = fleet.predict if name == "alone" else fleet.predict_with_shadows
            call(images, sizes)  # warm-up
            done, start = 0, time.perf_counter()
            while time.perf_counter() - start < seconds:
                call(images, sizes)
                done += 32
            rates[name].append(done / (time.perf_counter() - start))
    return {name: statistics.median(r) for name, r in rates.items()}


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = parser_for(__doc__)
    add_common_args(parser)
    parser.set_defaults(images=200, repeats=2)
    parser.add_argument(
        "--model-only", action="store_true", help="only M (Fleet.predict), no service run"
    )
    args = parser.parse_args(argv)
    args.mode, args.consumers, args.partitions, args.rate = "throughput", 1, 4, None
    alone, with_shadow = fleets(args.model)
    m = model_only(alone, with_shadow, seconds=10.0, repeats=max(3, args.repeats))
    print(
        f"M alone {m['alone']:.2f}/s, with a head-only shadow {m['with_shadow']:.2f}/s:"
        f" the shadow costs {1 - m['with_shadow'] / m['alone']:.1%}"
    )
    if args.model_only:
        return m
    assets = assets_in_s3(args)
    rates: dict[str, list[float]] = {"alone": [], "with_shadow": []}
    for _ in range(args.repeats):
        rates["alone"].append(run(args, assets, alone)["rate"])
        rates["with_shadow"].append(run(args, assets, with_shadow)["rate"])
    figures = {
        "images": float(len(assets)),
        "alone": statistics.median(rates["alone"]),
        "with_shadow": statistics.median(rates["with_shadow"]),
    }
    figures["shadow_cost"] = 1 - figures["with_shadow"] / figures["alone"]
    print(
        f"E alone {figures['alone']:.2f}/s (runs {rates['alone']}), with a head-only shadow"
        f" {figures['with_shadow']:.2f}/s (runs {rates['with_shadow']}):"
        f" the shadow costs {figures['shadow_cost']:.1%}"
    )
    figures.update(m_alone=m["alone"], m_with_shadow=m["with_shadow"])
    write_results(Path(args.out), "shadow-cost", {**figures, "runs": rates})
    return figures


if __name__ == "__main__":
    main()
