"""The benchmark report: every figure and ratio from var/bench/results/*.json as markdown.

    python -m benchmarks.report [--out var/bench/results] [--doc docs/benchmarks.md]

The CPU section of the doc is replaced between its markers; the rest of the page is kept.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path
from typing import Any

from benchmarks.common import REPO, RESULTS, s3_server

DOC = REPO / "docs" / "benchmarks.md"
BEGIN, END = "<!-- cpu-report:begin -->", "<!-- cpu-report:end -->"


def _load(out: Path, name: str) -> dict[str, Any] | None:
    path = out / f"{name}.json"
    return json.loads(path.read_text()) if path.exists() else None


def _cpu() -> str:
    model = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{model}, {len(os.sched_getaffinity(0))} CPUs, {platform.python_version()}"


def ratios(stages: dict[str, Any], e: float | None, n: float | None) -> dict[str, float]:
    m, d, f = (stages[k]["mix"] for k in ("M", "D", "F"))
    limit = 1 / (1 / m + 1 / d + 1 / f)
    out = {
        "limit": limit,
        "D/D_full (mix)": d / stages["D_full"]["mix"],
        "D/D_full (12 MP JPEG)": stages["D"]["by_kind"]["jpeg12mp"]
        / stages["D_full"]["by_kind"]["jpeg12mp"],
    }
    if e:
        out["E/limit"] = e / limit
    if e and n:
        out["E/N"] = e / n
    return out


def build(
    out: Path = RESULTS, command: str = "python -m benchmarks.run_all", minutes: float | None = None
) -> str:
    stages = _load(out, "stages")
    e1, e2 = _load(out, "e2e-throughput-1"), _load(out, "e2e-throughput-2")
    naive, lat = _load(out, "naive"), _load(out, "e2e-latency-1")
    if stages is None:
        return "no results yet: run python -m benchmarks.run_all"
    e = e1["rate"] if e1 else None
    n = naive["rate"] if naive else None
    r = ratios(stages, e, n)
    lines = [
        f"Measured {time.strftime('%Y-%m-%d')} on {_cpu()}, no GPU; model "
        f"`{Path(stages['model']).name}`; command `{command}`"
        + (f" ({minutes:.1f} min)." if minutes else "."),
        "",
        "| figure | images/s | by kind (12 MP JPEG / 1080p JPEG / PNG) | runs | peak RSS MB |",
        "|---|---|---|---|---|",
    ]
    for key, label in (
        ("M", f"M, model only (batch {stages['M']['batch']})"),
        ("D", "D, pipeline decode (draft, decode processes), all cores"),
        ("D_thread", "D in threads (decode_mode=thread), all cores"),
        ("D_full", "D_full, full-size decode, all cores"),
        ("F", f"F, fetch only (S3Fetcher, {s3_server(stages.get('s3_endpoint'))})"),
    ):
        if key not in stages:
            continue
        fig = stages[key]
        kinds = " / ".join(f"{v:.1f}" for v in fig.get("by_kind", {}).values()) or "-"
        runs = (
            fig["runs"]
            if isinstance(fig["runs"], list)
            else [f"{v:.1f}" for vs in fig["runs"].values() for v in vs]
        )
        lines.append(
            f"| {label} | {fig['mix']:.1f} | {kinds} | {_fmt(runs)} | "
            f"{stages['peak_rss_mb']:.0f} (all stages, one process) |"
        )
    lines.append(f"| limit = 1/(1/M + 1/D + 1/F) | {r['limit']:.1f} | | | |")
    for label, fig in (
        ("E, end to end, 1 consumer", e1),
        ("E, end to end, 2 consumers", e2),
        ("N, naive consumer", naive),
    ):
        if fig:
            lines.append(
                f"| {label} ({fig['events']} events, S3 {s3_server(fig.get('s3_endpoint'))})"
                f" | {fig['rate']:.2f} | | "
                f"{_fmt(fig.get('runs', [fig['rate']]))} | "
                f"{_fmt(fig['peak_rss_mb'])} |"
            )
    lines += ["", "| ratio | value | must show |", "|---|---|---|"]
    targets = {"E/limit": ">= 0.85", "E/N": ">= 5", "D/D_full (12 MP JPEG)": ">= 4"}
    for key, value in r.items():
        if key != "limit":
            lines.append(f"| {key} | {value:.2f} | {targets.get(key, '')} |")
    if e2 and e1:
        lines.append(f"| scaling, 2 consumers / 1 | {e2['rate'] / e1['rate']:.2f} | |")
    if lat:
        q = lat["latency_s"]
        lines += [
            "",
            f"Latency at an offered load of {lat['offered_rate']:.1f} events/s "
            f"(half of E), {lat['results']} events: p50 {q['p50']:.2f} s, "
            f"p95 {q['p95']:.2f} s, p99 {q['p99']:.2f} s (event produced to result "
            f"event); consumer peak RSS {_fmt(lat['peak_rss_mb'])} MB.",
        ]
    return "\n".join(lines) + "\n"


def _fmt(values: Any) -> str:
    if isinstance(values, list):
        return ", ".join(v if isinstance(v, str) else f"{v:.1f}" for v in values)
    return f"{values:.1f}"


def write(text: str, doc: str | Path = DOC) -> None:
    """Replace the CPU section of ``doc`` (between its markers) with ``text``."""
    path = Path(doc)
    page = path.read_text() if path.exists() else f"# Benchmarks\n\n{BEGIN}\n{END}\n"
    head, _, rest = page.partition(BEGIN)
    _, _, tail = rest.partition(END)
    path.write_text(f"{head}{BEGIN}\n{text}{END}{tail}")
    print(f"wrote {path}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=RESULTS, help="results folder")
    parser.add_argument("--doc", type=Path, default=DOC, help="report file (docs/benchmarks.md)")
    args = parser.parse_args()
    text = build(args.out)
    print(text)
    write(text, args.doc)


if __name__ == "__main__":
    main()
