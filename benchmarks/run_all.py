"""Every benchmark in one run, side by side, then the report (printed and docs/benchmarks.md).

Order: asset set, stage ceilings (M, D, D_full, F), E (1 consumer), naive N, latency at half
of E, E with 2 consumers (scaling). Each step runs as its own process (so peak memory is its
own) and writes var/bench/results/<name>.json; ``benchmarks.report`` assembles them. The bucket
is deleted at the end unless ``--keep-bucket`` (moto keeps objects in memory).

    python -m benchmarks.run_all [--images 1000] [--model M] [--naive-limit 300]
"""

from __future__ import annotations

import subprocess
import sys
import time

from benchmarks import report
from benchmarks.common import REPO, add_common_args, parser_for
from benchmarks.stack import s3_client


def step(module: str, *args: str) -> None:
    command = [sys.executable, "-m", f"benchmarks.{module}", *args]
    print(f"\n$ {' '.join(command[1:])}", flush=True)
    started = time.time()
    subprocess.run(command, cwd=REPO, check=True)
    print(f"({time.time() - started:.0f} s)", flush=True)


def main() -> None:
    parser = parser_for(__doc__)
    add_common_args(parser)
    parser.add_argument(
        "--naive-limit",
        type=int,
        default=300,
        help="assets the naive consumer processes (default 300: the same mix)",
    )
    parser.add_argument(
        "--e-repeats", type=int, default=2, help="runs of each end-to-end measurement (default 2)"
    )
    parser.add_argument(
        "--keep-bucket",
        action="store_true",
        help="keep the asset bucket in S3 for later runs (default: delete)",
    )
    parser.add_argument(
        "--doc",
        default=str(report.DOC),
        help=f"report file (default {report.DOC.relative_to(REPO)})",
    )
    args = parser.parse_args()
    common = [
        "--images",
        str(args.images),
        "--model",
        args.model,
        "--bucket",
        args.bucket,
        "--out",
        str(args.out),
    ]
    e_runs = ["--repeats", str(args.e_repeats)]
    started = time.time()
    try:
        step("assets", "--images", str(args.images), "--bucket", args.bucket)
        step("stages", *common, "--repeats", str(args.repeats))
        step("end_to_end", *common, *e_runs, "--mode", "throughput", "--consumers", "1")
        step("naive", *common, "--limit", str(args.naive_limit))
        step("end_to_end", *common, "--repeats", "1", "--mode", "latency")
        step("end_to_end", *common, *e_runs, "--mode", "throughput", "--consumers", "2")
    finally:
        if not args.keep_bucket:
            from benchmarks.assets import delete_bucket

            delete_bucket(s3_client(), args.bucket)
    minutes = (time.time() - started) / 60
    text = report.build(
        args.out, command=" ".join(["python -m benchmarks.run_all", *sys.argv[1:]]), minutes=minutes
    )
    print(text)
    report.write(text, args.doc)


if __name__ == "__main__":
    main()
