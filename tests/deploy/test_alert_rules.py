"""The alert rules: promtool checks them and runs their unit tests; every alert has a test
that makes it fire and one that keeps it quiet; every metric they read is one the service
exports (docs/architecture.md) or a named exporter's; every alert links a runbook section that
exists; aggregations keep `namespace`; the latency SLO has its burn-rate pairs."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import yaml
from deploy_helpers import (
    EXTERNAL_METRICS,
    REPO,
    RULES,
    RULES_TEST,
    RUNBOOKS,
    exported_series_names,
    metric_names,
)

# What issue 6 asks the alerts to cover, by alert name.
REQUIRED_ALERTS = {
    "TagfleetConsumerLagGrowing",  # lag growing
    "TagfleetNoProgress",  # no progress while lag > 0
    "TagfleetDeadLetterRateHigh",  # DLQ rate
    "TagfleetTransientErrors",  # error rates
    "TagfleetInferenceFailures",
    "TagfleetNotReady",  # tagfleet_ready == 0
    "TagfleetTargetDown",
    # issue 15
    "TagfleetAbsent",  # nothing to scrape at all
    "TagfleetBrokerLagHigh",  # lag from the broker, with no consumer running
    "TagfleetLatencyBudgetBurnFast",  # burn-rate pair, page
    "TagfleetLatencyBudgetBurnSlow",  # burn-rate pair, ticket
}


def _promtool(promtool: Path, *args: str) -> str:
    proc = subprocess.run(
        [str(promtool), *args], capture_output=True, text=True, timeout=120, check=False, cwd=REPO
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


def _rules() -> list[dict]:
    return [r for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"]]


def test_promtool_check_rules(promtool: Path) -> None:
    out = _promtool(promtool, "check", "rules", str(RULES))
    assert f"SUCCESS: {len(_rules())} rules found" in out


def test_promtool_test_rules(promtool: Path) -> None:
    out = _promtool(promtool, "test", "rules", str(RULES_TEST))
    assert "SUCCESS" in out


def test_promtool_check_compose_prometheus_config(promtool: Path) -> None:
    out = _promtool(promtool, "check", "config", str(REPO / "infra/prometheus/prometheus.yml"))
    assert "1 rule files found" in out


def test_the_required_alerts_exist_with_severity_and_summary() -> None:
    rules = _rules()
    assert {r["alert"] for r in rules} >= REQUIRED_ALERTS
    for rule in rules:
        assert rule["labels"]["severity"] in ("warning", "critical"), rule["alert"]
        assert rule["annotations"]["summary"] and rule["annotations"]["description"]
    not_ready = next(r for r in rules if r["alert"] == "TagfleetNotReady")
    assert not_ready["expr"].strip() == "tagfleet_ready == 0"


def test_every_alert_has_a_firing_and_a_quiet_unit_test() -> None:
    tests = yaml.safe_load(RULES_TEST.read_text())["tests"]
    firing, quiet = set(), set()
    for case in tests:
        for check in case.get("alert_rule_test", []):
            (firing if check.get("exp_alerts") else quiet).add(check["alertname"])
    alerts = {r["alert"] for r in _rules()}
    assert alerts - firing == set(), "alerts no test makes fire"
    assert alerts - quiet == set(), "alerts no test keeps quiet"


def test_rules_read_only_exported_metrics() -> None:
    allowed = exported_series_names() | EXTERNAL_METRICS
    for rule in _rules():
        unknown = metric_names(rule["expr"]) - allowed
        assert not unknown, f"{rule['alert']} reads metrics the service does not export: {unknown}"


def _anchors(markdown: str) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces to hyphens."""
    headings = re.findall(r"^#{1,6}\s+(.+?)\s*$", markdown, re.M)
    return {re.sub(r"[^\w\- ]", "", h.lower()).replace(" ", "-") for h in headings}


def test_every_alert_links_a_runbook_section_that_exists() -> None:
    anchors = _anchors(RUNBOOKS.read_text())
    for rule in _rules():
        url = rule["annotations"].get("runbook_url", "")
        path, _, anchor = url.partition("#")
        assert path == "docs/runbooks.md" and anchor, f"{rule['alert']}: runbook_url {url!r}"
        assert (REPO / path).is_file()
        assert anchor in anchors, f"{rule['alert']}: no heading for #{anchor} in docs/runbooks.md"
    text = RUNBOOKS.read_text()
    for section in re.split(r"^## ", text, flags=re.M)[1:]:
        for part in ("**Means.**", "**Confirm.**", "**Do.**", "**Roll back.**"):
            assert part in section, f"runbook {section.splitlines()[0]}: no {part}"


def test_aggregations_keep_the_namespace() -> None:
    for rule in _rules():
        for clause in re.findall(r"\b(?:by|on)\s*\(([^)]*)\)", rule["expr"]):
            assert "namespace" in clause, f"{rule['alert']}: by/on ({clause}) drops namespace"


def test_latency_slo_has_both_burn_rate_pairs() -> None:
    rules = {r["alert"]: r for r in _rules()}
    for name, windows, factor, severity in (
        ("TagfleetLatencyBudgetBurnFast", ("[1h]", "[5m]"), "14.4", "critical"),
        ("TagfleetLatencyBudgetBurnSlow", ("[6h]", "[30m]"), "6", "warning"),
    ):
        expr = rules[name]["expr"]
        assert all(w in expr for w in windows) and f"({factor} * 0.01)" in expr, name
        assert "tagfleet_end_to_end_seconds_bucket" in expr and "\nand\n" in expr, name
        assert rules[name]["labels"]["severity"] == severity


def test_absence_and_failures_are_not_single_events() -> None:
    rules = {r["alert"]: r for r in _rules()}
    assert rules["TagfleetAbsent"]["expr"].startswith("absent(")
    failures = rules["TagfleetInferenceFailures"]
    assert "/" in failures["expr"] and failures.get("for"), "a ratio held for a while"
