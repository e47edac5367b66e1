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
    CHART,
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
    # issue 18: the tags API and webhook serve
    "TagfleetWebhookDeadLetters",  # webhook dead letters increasing
    "TagfleetWebhookLagGrowing",  # an endpoint's lag growing for 15 minutes
    "TagfleetApiErrors",  # the API's 5xx ratio
    "TagfleetApiDown",  # an API target unscraped (its 5xx are then unseen)
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
    firing: set[str] = set()
    quiet: set[str] = set()
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


def runbook_base_url() -> str:
    """The chart's default ``prometheusRule.runbookBaseUrl``: the standalone file links it."""
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    return values["prometheusRule"]["runbookBaseUrl"]


def check_runbook_links(rules: list[dict], base: str) -> None:
    """Every alert's runbook_url is ``base#anchor``, absolute, and the anchor is a heading of
    docs/runbooks.md (whatever the base, the sections are the repository's)."""
    assert re.fullmatch(r"https?://[^#\s]+", base), base
    anchors = _anchors(RUNBOOKS.read_text())
    for rule in rules:
        url = rule["annotations"].get("runbook_url", "")
        prefix, _, anchor = url.partition("#")
        assert prefix == base and anchor, f"{rule['alert']}: runbook_url {url!r} not {base}#..."
        assert anchor in anchors, f"{rule['alert']}: no heading for #{anchor} in docs/runbooks.md"


def test_every_alert_links_a_runbook_section_that_exists() -> None:
    base = runbook_base_url()
    # Absolute, so that a link in an Alertmanager notification opens; the default is the
    # repository's own docs/runbooks.md.
    assert base.startswith("https://") and base.endswith("/docs/runbooks.md"), base
    check_runbook_links(_rules(), base)
    text = RUNBOOKS.read_text()
    for section in re.split(r"^## ", text, flags=re.M)[1:]:
        for part in ("**Means.**", "**Confirm.**", "**Do.**", "**Roll back.**"):
            assert part in section, f"runbook {section.splitlines()[0]}: no {part}"


def test_aggregations_keep_the_namespace() -> None:
    for rule in _rules():
        for clause in re.findall(r"\b(?:by|on)\s*\(([^)]*)\)", rule["expr"]):
            if rule["alert"] == "TagfleetAbsent" and not clause.strip():
                # `absent(...) unless on () count(kube-state-metrics)`: the fallback without
                # kube-state-metrics, a presence test that drops no label of its left side.
                continue
            assert "namespace" in clause, f"{rule['alert']}: by/on ({clause}) drops namespace"


# The SRE workbook's multiwindow, multi-burn-rate alerts on a 1% budget (99% in 60 s):
# alert -> severity, [(long window, short window, burn rate)].
BURN_PAIRS = {
    "TagfleetLatencyBudgetBurnFast": ("critical", [("1h", "5m", "14.4"), ("6h", "30m", "6")]),
    "TagfleetLatencyBudgetBurnSlow": ("warning", [("1d", "2h", "3"), ("3d", "6h", "1")]),
}


def burn_pairs(expr: str) -> list[str]:
    """The alternatives of a burn-rate alert: ``(long > x and short > x) or (...)``."""
    return [p.strip() for p in expr.split("\nor\n")]


def test_latency_slo_has_the_workbook_burn_rate_pairs() -> None:
    rules = {r["alert"]: r for r in _rules()}
    for name, (severity, pairs) in BURN_PAIRS.items():
        alternatives = burn_pairs(rules[name]["expr"])
        assert len(alternatives) == len(pairs), name
        for text, (long, short, factor) in zip(alternatives, pairs, strict=True):
            windows = re.findall(r"\[(\w+)\]", text)
            assert set(windows) == {long, short}, (name, windows)
            assert text.count(f"> ({factor} * 0.01)") == 2, (name, text)
            assert re.search(r"\n\s*and\n", text), (name, text)
            assert 'tagfleet_end_to_end_seconds_bucket{le="60.0"}' in text, name
        assert rules[name]["labels"]["severity"] == severity
        # Multiwindow burn-rate alerts need no `for:` (the short window gates them).
        assert rules[name].get("for", "0m") in ("0m", "0s", "1m", "2m"), name


def _counter(per_min: int, minutes: int) -> str:
    return f"0+{per_min}x{minutes}"


def _late_then_clean(late_per_mil: int, late_min: int, clean_min: int) -> tuple[str, str]:
    """(count, good bucket) series values: 1000 events a minute, ``late_per_mil`` of them
    over 60 s for ``late_min`` minutes, then none late for ``clean_min`` minutes."""
    good = 1000 - late_per_mil
    count = _counter(1000, late_min + clean_min)
    if not clean_min:
        return count, _counter(good, late_min)
    return count, f"0+{good}x{late_min} {good * late_min + 1000}+1000x{clean_min - 1}"


def test_each_burn_rate_pair_fires_above_its_rate_and_not_below(
    promtool: Path, tmp_path: Path
) -> None:
    """promtool evaluates each pair of each burn-rate alert alone: a steady late share 30%
    above its burn rate makes it true, 30% below false, and the same share above, followed
    by a clean short window (the burn is over), false as well."""
    rules = {r["alert"]: r for r in _rules()}
    (tmp_path / "none.yml").write_text("groups: []\n")
    tests = []
    for name, (_, pairs) in BURN_PAIRS.items():
        for text, (long, short, factor) in zip(burn_pairs(rules[name]["expr"]), pairs, strict=True):
            rate = float(factor) * 10  # late events per 1000 at exactly the burn rate
            # Enough history for the long window to stay above after the clean stretch.
            short_min = {"5m": 5, "30m": 30, "2h": 120, "6h": 360}[short]
            late_min, clean_min = 20 * 60, short_min + 10
            expr = f"count by (namespace) ({text})"
            for label, late, clean, fires in (
                ("above", round(rate * 1.5), 0, True),
                ("below", round(rate * 0.7), 0, False),
                ("above, burn over", round(rate * 1.5), clean_min, False),
            ):
                count, good = _late_then_clean(late, late_min, clean)
                labels = 'namespace="prod",job="tagfleet",instance="a"'
                bucket = f'tagfleet_end_to_end_seconds_bucket{{le="60.0",{labels}}}'
                tests.append(
                    {
                        "name": f"{name} {long}/{short} x{factor}: {label}",
                        "interval": "1m",
                        "input_series": [
                            {
                                "series": f"tagfleet_end_to_end_seconds_count{{{labels}}}",
                                "values": count,
                            },
                            {
                                "series": bucket,
                                "values": good,
                            },
                        ],
                        "promql_expr_test": [
                            {
                                "expr": expr,
                                "eval_time": f"{late_min + clean}m",
                                "exp_samples": (
                                    [{"labels": '{namespace="prod"}', "value": 1}] if fires else []
                                ),
                            }
                        ],
                    }
                )
    test_file = tmp_path / "pairs.test.yml"
    test_file.write_text(
        yaml.safe_dump({"rule_files": ["none.yml"], "evaluation_interval": "1h", "tests": tests})
    )
    out = _promtool(promtool, "test", "rules", str(test_file))
    assert "SUCCESS" in out, out


def test_absence_and_failures_are_not_single_events() -> None:
    rules = {r["alert"]: r for r in _rules()}
    absent = rules["TagfleetAbsent"]["expr"]
    assert 'absent(up{job="tagfleet"} == 1)' in absent
    # Per namespace where kube-state-metrics tells which Deployments want replicas.
    assert 'unless on (namespace) count by (namespace) (up{job="tagfleet"} == 1)' in absent
    failures = rules["TagfleetInferenceFailures"]
    assert "/" in failures["expr"] and failures.get("for"), "a ratio held for a while"
