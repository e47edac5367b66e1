"""The alert rules: promtool checks them and runs their unit tests; every alert has a test
that makes it fire and one that keeps it quiet; every metric they read is one the service
exports (docs/architecture.md)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import yaml
from deploy_helpers import (
    EXTERNAL_METRICS,
    REPO,
    RULES,
    RULES_TEST,
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
