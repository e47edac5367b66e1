"""Shared by tests/deploy: repository paths, the tools (helm, promtool), the names the service
knows (settings, flags, metrics) and PromQL metric-name extraction.

Kept free of pytest so each test module states its own fixtures.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import time
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING

import yaml

if TYPE_CHECKING:
    from pydantic.fields import FieldInfo

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "helm" / "tagfleet"
VALUES_FILES = ("defaults", "gpu-keda", "cpu-minimal")
RULES = REPO / "infra" / "prometheus" / "rules" / "tagfleet.rules.yml"
RULES_TEST = REPO / "infra" / "prometheus" / "rules" / "tagfleet.rules.test.yml"
DASHBOARD = REPO / "infra" / "grafana" / "dashboards" / "tagfleet.json"
ARCHITECTURE = REPO / "docs" / "architecture.md"
RUNBOOKS = REPO / "docs" / "runbooks.md"
# A tool build (helm from the Go module proxy) may take minutes on a cold cache.
TOOL_TIMEOUT_S = 900


def ensure_tool(script: str) -> tuple[Path, float]:
    """Run ``infra/<script>`` (builds or installs once, cached) and return the tool's path
    and the seconds it took. Raises with the script's output when it fails: never skips."""
    started = time.monotonic()
    proc = subprocess.run(
        [str(REPO / "infra" / script)],
        capture_output=True,
        text=True,
        timeout=TOOL_TIMEOUT_S,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"infra/{script} failed ({proc.returncode}):\n{proc.stderr}")
    path = Path(proc.stdout.strip().splitlines()[-1])
    assert path.is_file(), f"infra/{script} printed {path}, which is not a file"
    return path, time.monotonic() - started


def helm_template(helm: Path, *args: str, chart: Path = CHART) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(helm), "template", "t", str(chart), "--namespace", "tagfleet", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def render(helm: Path, *args: str, chart: Path = CHART) -> list[dict]:
    """``helm template`` output as a list of documents; fails the test on a render error."""
    proc = helm_template(helm, *args, chart=chart)
    assert proc.returncode == 0, proc.stderr
    return [doc for doc in yaml.safe_load_all(proc.stdout) if doc]


# ---- names the service knows ----


@cache
def settings_fields() -> dict[str, FieldInfo]:
    from consumers.settings import Settings

    return dict(Settings.model_fields)


def _walk_parser(parser: argparse.ArgumentParser) -> Iterator[argparse.Action]:
    for action in parser._actions:  # noqa: SLF001 - argparse has no public walker
        if isinstance(action, argparse._SubParsersAction):  # noqa: SLF001
            for sub in action.choices.values():
                yield from _walk_parser(sub)
        elif action.option_strings:
            yield action


@cache
def known_env() -> frozenset[str]:
    """Every ``TAGFLEET_*`` variable a command reads (the reference page's, from the parser)
    or a literal ``os.environ`` lookup in consumers/ or models/ reads."""
    from consumers.configuration import variables

    names = set(variables())
    lookup = re.compile(r"""environ(?:\.get\(|\[)\s*["'](TAGFLEET_[A-Z0-9_]+)["']""")
    for package in ("consumers", "models"):
        for source in (REPO / package).rglob("*.py"):
            names |= set(lookup.findall(source.read_text()))
    return frozenset(names)


def cli_parses(argv: list[str]) -> argparse.Namespace:
    """Parse ``tagfleet ARGV`` with the real parser (SystemExit on an unknown flag)."""
    from consumers.cli import build_parser

    return build_parser().parse_args(argv)


@cache
def architecture_metrics() -> dict[str, str]:
    """Metric name -> type, from the table in docs/architecture.md."""
    rows = re.findall(
        r"^\|\s*`(tagfleet_[a-z0-9_]+)`\s*\|\s*(\w+)\s*\|", ARCHITECTURE.read_text(), re.M
    )
    assert rows, "no metric table found in docs/architecture.md"
    return dict(rows)


def exported_series_names() -> frozenset[str]:
    """Series names the documented metrics produce in the exposition format."""
    names = set()
    for name, kind in architecture_metrics().items():
        if kind == "histogram":
            names |= {f"{name}_bucket", f"{name}_sum", f"{name}_count"}
        else:
            names.add(name)
    return frozenset(names)


# DCGM exporter metrics: optional dashboard panels; `up`: Prometheus' own per target;
# kafka-exporter's broker-side lag (TagfleetBrokerLagHigh); kube-state-metrics' replica and
# restart counts (dashboard panels, present wherever the Prometheus Operator stack runs).
EXTERNAL_METRICS = frozenset(
    {
        "DCGM_FI_DEV_GPU_UTIL",
        "DCGM_FI_DEV_FB_USED",
        "up",
        "kafka_consumergroup_lag",
        "kube_deployment_status_replicas_available",
        "kube_deployment_spec_replicas",
        "kube_pod_container_status_restarts_total",
    }
)

# ---- PromQL ----

_PROMQL_WORDS = frozenset(
    [
        "by",
        "without",
        "on",
        "ignoring",
        "group_left",
        "group_right",
        "bool",
        "and",
        "or",
        "unless",
        "offset",
        "sum",
        "min",
        "max",
        "avg",
        "count",
        "stddev",
        "stdvar",
        "topk",
        "bottomk",
        "quantile",
        "count_values",
        "group",
        "inf",
        "nan",
    ]
)
_CLAUSE = re.compile(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")


def metric_names(expr: str) -> set[str]:
    """Metric names a PromQL expression reads: strings, label matchers, ranges, grouping
    clauses, function calls and keywords removed, what remains are selectors."""
    text = re.sub(r'"(?:\\.|[^"\\])*"', '""', expr)
    text = re.sub(r"\{[^}]*\}", " ", text)
    text = re.sub(r"\[[^\]]*\]", " ", text)
    text = _CLAUSE.sub(" ", text)
    text = re.sub(r"\$\w+", " ", text)
    names = set()
    for match in re.finditer(r"(?<![\w.])([A-Za-z_:][A-Za-z0-9_:]*)\s*(\()?", text):
        word, call = match.group(1), match.group(2)
        if call or word.lower() in _PROMQL_WORDS:
            continue
        names.add(word)
    return names
