"""The GPU benchmark (issue 4, item 8): M, D and E with ViT-B-32 and ViT-L-14 in bf16.

One prepared command for a lent CUDA machine, under 8 minutes; it refuses to run without CUDA.
M: ``Fleet.predict`` at batch 128 (bf16 autocast, channels_last: the backbone's CUDA path);
D: the pipeline's decode on every core, per decode backend (pillow: D in processes, D_thread in
threads; nvimgcodec: D_nvimgcodec, nvJPEG on the GPU with the resize there);
E: ``tagfleet consume`` end to end (1,000 events),
which needs the local stack (``infra/stack.sh up``; if it cannot start, E is reported as
skipped). limit = min(M, D, F) with a GPU. Figures go to ``$OUT`` (or var/bench/gpu) as
gpu.json and gpu.md.

    python -m benchmarks.gpu_run [--models ViT-B-32 ViT-L-14] [--images 1000]

``--smoke`` runs the same code path on a CPU machine in well under a minute (the small bench
backbone, 20 images, no E, the stack used only if ``infra/stack.sh status`` says it is up):
a check of the script, not figures.

    python -m benchmarks.gpu_run --smoke
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks.common import DEFAULT_MODEL, REPO


def main() -> None:
    import torch

    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--models",
        nargs="+",
        default=["ViT-B-32", "ViT-L-14"],
        help="open_clip models (default ViT-B-32 ViT-L-14)",
    )
    parser.add_argument("--images", type=int, default=1000, help="asset set size (default 1000)")
    parser.add_argument("--batch", type=int, default=128, help="batch for M and E (default 128)")
    parser.add_argument(
        "--smoke",
        action="store_true",
        help="CPU check of this script: small backbone, 20 images, no E (not figures)",
    )
    args = parser.parse_args()
    if args.smoke:
        args.models, args.images, args.batch = [DEFAULT_MODEL], 20, 8
    elif not torch.cuda.is_available():
        sys.exit("gpu_run.py needs a CUDA device (or --smoke)")
    out = Path(os.environ.get("OUT") or REPO / "var" / "bench" / "gpu")
    out.mkdir(parents=True, exist_ok=True)
    stack = [str(REPO / "infra" / "stack.sh"), "status" if args.smoke else "up"]
    stack_ok = subprocess.run(stack, cwd=REPO, capture_output=args.smoke).returncode == 0
    per_kind, model_images = ("2", "16") if args.smoke else ("200", "1024")
    figures: dict[str, Any] = {
        "smoke": args.smoke,
        "device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu",
        "torch": torch.__version__,
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "stack": stack_ok,
    }
    common = ["--images", str(args.images), "--out", str(out), "--repeats", "1"]
    for model in args.models:
        stages = ["M", "D", "D_thread", "D_nvimgcodec", "F"] if stack_ok else ["M"]
        figures[model] = {
            "stages": _step(
                "stages",
                *common,
                "--model",
                model,
                "--stages",
                *stages,
                "--per-kind",
                per_kind,
                "--model-images",
                model_images,
                env={"TAGFLEET_BATCH_SIZE": str(args.batch)},
            )
        }
        if stack_ok and not args.smoke:
            figures[model]["E"] = _step(
                "end_to_end",
                *common,
                "--model",
                model,
                "--name",
                f"e2e-{model}",
                env={"TAGFLEET_BATCH_SIZE": str(args.batch)},
            )
    (out / "gpu.json").write_text(json.dumps(figures, indent=2, default=str))
    (out / "gpu.md").write_text(_markdown(figures, args.models))
    print((out / "gpu.md").read_text())


def _step(module: str, *argv: str, env: dict[str, str]) -> dict[str, Any]:
    out = Path(argv[argv.index("--out") + 1])
    name = argv[argv.index("--name") + 1] if "--name" in argv else module
    subprocess.run(
        [sys.executable, "-m", f"benchmarks.{module}", *argv],
        cwd=REPO,
        check=True,
        env={**os.environ, **env},
    )
    return json.loads((out / f"{name}.json").read_text())


def _markdown(figures: dict[str, Any], models: list[str]) -> str:
    lines = [
        f"{'SMOKE (not figures), ' if figures.get('smoke') else ''}"
        f"GPU: {figures['device']}, torch {figures['torch']}, {figures['date']}, bf16",
        "",
        "| model | M | D | F | limit = min(M, D, F) | E | E/limit | D in threads | D nvimgcodec |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for model in models:
        st = figures[model]["stages"]
        vals = {k: st[k]["mix"] for k in ("M", "D", "F") if k in st}
        limit = min(vals.values())
        e = figures[model].get("E", {}).get("rate")
        cells = [f"{vals[k]:.0f}" if k in vals else "-" for k in ("M", "D", "F")]
        threads = f"{st['D_thread']['mix']:.0f}" if "D_thread" in st else "-"
        nv = f"{st['D_nvimgcodec']['mix']:.0f}" if "D_nvimgcodec" in st else "-"
        lines.append(
            f"| {model} | {' | '.join(cells)} | {limit:.0f} | "
            f"{f'{e:.0f}' if e else 'skipped'} | {f'{e / limit:.2f}' if e else '-'} | "
            f"{threads} | {nv} |"
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
