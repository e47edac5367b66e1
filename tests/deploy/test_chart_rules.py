"""The chart's PrometheusRule: infra/prometheus/rules/tagfleet.rules.yml set for one release.

With two releases in one Prometheus, TagfleetAbsent of one namespace must fire while the other
namespace's consumers are up (a global ``absent(up == 1)`` is silenced by any target), and
TagfleetBrokerLagHigh must watch the release's own consumer group, not a name pattern. Every
runbook_url is absolute (``prometheusRule.runbookBaseUrl``) and its anchor is a section of
docs/runbooks.md. promtool runs unit tests on the rendered rules.
"""

from __future__ import annotations

import copy
import subprocess
from pathlib import Path

import pytest
import yaml
from deploy_helpers import CHART, REPO, RULES, render
from test_alert_rules import check_runbook_links, runbook_base_url

CI_VALUES = str(CHART / "ci" / "gpu-keda.yaml")
BASE = "https://docs.example.com/tagfleet/runbooks.md"


def _render_rule(helm: Path, namespace: str, *args: str) -> dict:
    docs = render(helm, "-f", CI_VALUES, "--namespace", namespace, *args)
    (rule,) = [d for d in docs if d["kind"] == "PrometheusRule"]
    return rule


def _alerts(rule: dict) -> dict[str, dict]:
    return {r["alert"]: r for g in rule["spec"]["groups"] for r in g["rules"]}


def test_the_chart_sets_namespace_group_and_runbook_links_and_nothing_else(helm: Path) -> None:
    rule = _render_rule(
        helm,
        "staging",
        "--set",
        "config.group_id=tf-staging",
        "--set",
        f"prometheusRule.runbookBaseUrl={BASE}",
    )
    alerts = _alerts(rule)
    absent = alerts["TagfleetAbsent"]
    assert absent["expr"].strip() == 'absent(up{job="tagfleet", namespace="staging"} == 1)'
    assert absent["labels"]["namespace"] == "staging"
    assert absent["annotations"]["summary"] == "no tagfleet consumer is up in staging"
    broker = alerts["TagfleetBrokerLagHigh"]["expr"]
    assert broker.count('consumergroup="tf-staging"') == 2 and "=~" not in broker
    check_runbook_links(list(alerts.values()), BASE)

    # Everything else is the standalone file as it is.
    expected = yaml.safe_load(RULES.read_text())["groups"]
    got = copy.deepcopy(rule["spec"]["groups"])
    for group in (expected, got):
        for r in (r for g in group for r in g["rules"]):
            r["annotations"]["runbook_url"] = r["annotations"]["runbook_url"].partition("#")[2]
            if r["alert"] in ("TagfleetAbsent", "TagfleetBrokerLagHigh"):
                r.pop("expr")
                r["labels"].pop("namespace", None)
                r["annotations"].pop("summary")
    assert got == expected


def test_the_default_group_and_runbook_base(helm: Path, tmp_path: Path) -> None:
    values = yaml.safe_load(Path(CI_VALUES).read_text())
    values["config"].pop("group_id")
    (tmp_path / "v.yaml").write_text(yaml.safe_dump(values))
    docs = render(helm, "-f", str(tmp_path / "v.yaml"))
    (rule,) = [d for d in docs if d["kind"] == "PrometheusRule"]
    alerts = _alerts(rule)
    assert 'consumergroup="tagfleet"' in alerts["TagfleetBrokerLagHigh"]["expr"]
    check_runbook_links(list(alerts.values()), runbook_base_url())


@pytest.mark.parametrize("base", ["docs/runbooks.md", "https://x.example/runbooks.md#top"])
def test_a_relative_or_anchored_runbook_base_is_refused(helm: Path, base: str) -> None:
    proc = subprocess.run(
        [str(helm), "template", "t", str(CHART), "-f", CI_VALUES]
        + ["--set", f"prometheusRule.runbookBaseUrl={base}"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode != 0 and "runbookBaseUrl" in proc.stderr, proc.stderr


def _series(name: str, labels: dict[str, str], values: str) -> dict:
    body = ",".join(f'{k}="{v}"' for k, v in labels.items())
    return {"series": f"{name}{{{body}}}", "values": values}


def test_promtool_two_releases_one_down(helm: Path, promtool: Path, tmp_path: Path) -> None:
    """staging's release: its pods all Pending (no target up) while prod's are up; the lag of
    its own group grows while prod's group (another release) also lags."""
    rule = _render_rule(helm, "staging", "--set", "config.group_id=tf-staging")
    (tmp_path / "staging.rules.yml").write_text(yaml.safe_dump({"groups": rule["spec"]["groups"]}))
    proc = subprocess.run(
        [str(promtool), "check", "rules", str(tmp_path / "staging.rules.yml")],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr

    prod_up = _series("up", {"namespace": "prod", "job": "tagfleet", "pod": "tagfleet-0"}, "1x30")
    staging = {"namespace": "staging", "job": "tagfleet", "pod": "staging-tagfleet-0"}
    runbook = f"{runbook_base_url()}#tagfleetabsent"
    absent_alert = {
        "exp_labels": {"namespace": "staging", "severity": "critical"},
        "exp_annotations": {
            "summary": "no tagfleet consumer is up in staging",
            "description": "Prometheus has had no tagfleet target up for 10 minutes: every pod"
            " Pending or crash-looping, the release scaled to zero, or the ServiceMonitor"
            " selecting nothing.",
            "runbook_url": runbook,
        },
    }
    lag = {"topic": "assets", "partition": "0", "namespace": "kafka", "job": "kafka-exporter"}
    tests = [
        {
            "name": "staging down (target 0), prod up: staging's rule fires",
            "interval": "1m",
            "input_series": [prod_up, _series("up", staging, "0x30")],
            "alert_rule_test": [
                {"eval_time": "5m", "alertname": "TagfleetAbsent", "exp_alerts": []},
                {"eval_time": "15m", "alertname": "TagfleetAbsent", "exp_alerts": [absent_alert]},
            ],
        },
        {
            "name": "staging Pending (no target at all), prod up: staging's rule fires",
            "interval": "1m",
            "input_series": [prod_up],
            "alert_rule_test": [
                {"eval_time": "15m", "alertname": "TagfleetAbsent", "exp_alerts": [absent_alert]},
            ],
        },
        {
            "name": "staging up, prod down: not staging's rule's business",
            "interval": "1m",
            "input_series": [
                _series("up", {**staging}, "1x30"),
                _series("up", {"namespace": "prod", "job": "tagfleet", "pod": "t-0"}, "0x30"),
            ],
            "alert_rule_test": [
                {"eval_time": "15m", "alertname": "TagfleetAbsent", "exp_alerts": []},
            ],
        },
        {
            "name": "broker lag: staging's own group fires, another release's group does not",
            "interval": "1m",
            "input_series": [
                _series(
                    "kafka_consumergroup_lag", {**lag, "consumergroup": "tf-staging"}, "0+100x40"
                ),
                _series(
                    "kafka_consumergroup_lag", {**lag, "consumergroup": "tagfleet"}, "0+100x40"
                ),
                _series(
                    "kafka_consumergroup_lag", {**lag, "consumergroup": "tagfleet-prod"}, "0+100x40"
                ),
            ],
            "alert_rule_test": [
                {
                    "eval_time": "30m",
                    "alertname": "TagfleetBrokerLagHigh",
                    "exp_alerts": [
                        {
                            "exp_labels": {
                                "namespace": "kafka",
                                "consumergroup": "tf-staging",
                                "topic": "assets",
                                "severity": "warning",
                            },
                            "exp_annotations": {
                                "summary": "group tf-staging lags on assets (broker side)",
                                "description": "The broker reports more than 1000 messages of"
                                " lag for group tf-staging on assets, not shrinking for 15"
                                " minutes.",
                                "runbook_url": f"{runbook_base_url()}#tagfleetbrokerlaghigh",
                            },
                        }
                    ],
                },
            ],
        },
    ]
    test_file = tmp_path / "staging.rules.test.yml"
    test_file.write_text(
        yaml.safe_dump(
            {"rule_files": ["staging.rules.yml"], "evaluation_interval": "1m", "tests": tests}
        )
    )
    proc = subprocess.run(
        [str(promtool), "test", "rules", str(test_file)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=REPO,
    )
    assert proc.returncode == 0 and "SUCCESS" in proc.stdout, proc.stdout + proc.stderr
