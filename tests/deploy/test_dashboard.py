"""The Grafana dashboard and its provisioning: every query reads only metrics the service
exports (docs/architecture.md; the DCGM GPU panels are marked optional), and the panels the
issues ask for are there (issue 15: namespace/pod variables, GPU panels of our pods only,
time to drain, replicas, restarts, score drift against a baseline, shadow comparison)."""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import yaml
from deploy_helpers import (
    CHART,
    DASHBOARD,
    EXTERNAL_METRICS,
    REPO,
    architecture_metrics,
    exported_series_names,
    metric_names,
    render,
)

DCGM = {"DCGM_FI_DEV_GPU_UTIL", "DCGM_FI_DEV_FB_USED"}


def _dashboard() -> dict:
    return json.loads(DASHBOARD.read_text())


def _panels(dash: dict) -> Iterator[dict]:
    for panel in dash["panels"]:
        yield panel
        yield from panel.get("panels", [])


def _queries(dash: dict) -> Iterator[tuple[str, str]]:
    """(where, PromQL) for every panel target and every query variable."""
    for panel in _panels(dash):
        for target in panel.get("targets", []):
            yield panel["title"], target["expr"]
    for var in dash["templating"]["list"]:
        if var["type"] == "query":
            query = var["query"]["query"] if isinstance(var["query"], dict) else var["query"]
            inner = query.removeprefix("label_values(").rsplit(",", 1)[0]
            yield f"variable {var['name']}", inner


def test_dashboard_queries_read_only_exported_metrics() -> None:
    allowed = exported_series_names() | EXTERNAL_METRICS
    seen: set[str] = set()
    for where, expr in _queries(_dashboard()):
        names = metric_names(expr)
        assert names, f"{where}: no metric found in {expr!r}"
        assert not names - allowed, f"{where}: unknown metrics {names - allowed}"
        seen |= names
    # Every documented metric is on the dashboard somewhere.
    histograms = {n for n, kind in architecture_metrics().items() if kind == "histogram"}
    base = {n.rsplit("_", 1)[0] if n.rsplit("_", 1)[0] in histograms else n for n in seen}
    assert set(architecture_metrics()) - base == set(), "documented metrics with no panel"


def test_dashboard_has_the_panels_ops_needs() -> None:
    dash = _dashboard()
    panels = [p for p in _panels(dash) if p["type"] != "row"]
    ids = [p["id"] for p in _panels(dash)]
    assert len(ids) == len(set(ids)), "panel ids must be unique"

    def panel_reading(metric: str) -> list[dict]:
        return [p for p in panels if any(metric in t["expr"] for t in p.get("targets", []))]

    for metric in (
        "tagfleet_events_total",
        "tagfleet_consumer_lag",
        "tagfleet_stage_seconds_bucket",
        "tagfleet_batch_size",
        "tagfleet_dlq_total",
        "tagfleet_predictions_total",
        "tagfleet_prediction_score_bucket",
        "tagfleet_in_flight",
        "tagfleet_paused_partitions",
        *DCGM,
    ):
        assert panel_reading(metric), f"no panel reads {metric}"
    lag = panel_reading("tagfleet_consumer_lag")
    assert any("partition" in t["expr"] for p in lag for t in p["targets"]), "lag per partition"
    quantiles = [
        t["expr"] for p in panel_reading("tagfleet_stage_seconds_bucket") for t in p["targets"]
    ]
    assert all("histogram_quantile" in q and "stage" in q for q in quantiles)
    assert any(p["type"] == "heatmap" for p in panel_reading("tagfleet_prediction_score_bucket"))
    for metric in DCGM:
        for p in panel_reading(metric):
            assert "optional" in p["description"].lower(), (
                f"{p['title']}: mark DCGM panels optional"
            )


def test_panels_use_the_datasource_variable() -> None:
    dash = _dashboard()
    assert any(
        v["type"] == "datasource" and v["name"] == "datasource" for v in dash["templating"]["list"]
    )
    for panel in _panels(dash):
        if panel["type"] != "row":
            assert panel["datasource"]["uid"] == "${datasource}", panel["title"]


def test_grafana_provisioning_points_where_compose_mounts_the_dashboard() -> None:
    compose = yaml.safe_load((REPO / "infra" / "compose.yaml").read_text())
    mounts = dict(m.split(":")[:2] for m in compose["services"]["grafana"]["volumes"])
    provider = yaml.safe_load(
        (REPO / "infra/grafana/provisioning/dashboards/tagfleet.yml").read_text()
    )["providers"][0]
    assert mounts["./grafana/dashboards"] == provider["options"]["path"]
    assert mounts["./grafana/provisioning"] == "/etc/grafana/provisioning"
    source = yaml.safe_load(
        (REPO / "infra/grafana/provisioning/datasources/prometheus.yml").read_text()
    )["datasources"][0]
    assert source["type"] == "prometheus"
    assert source["url"] == "http://prometheus:9090" and "prometheus" in compose["services"]
    home = compose["services"]["grafana"]["environment"][
        "GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"
    ]
    assert home == f"{provider['options']['path']}/{DASHBOARD.name}"


def test_namespace_and_pod_variables_filter_every_tagfleet_query() -> None:
    dash = _dashboard()
    variables = {v["name"]: v for v in dash["templating"]["list"]}
    assert {"namespace", "pod", "function", "shadow", "baseline"} <= set(variables)
    assert 'namespace=~"$namespace"' in variables["pod"]["query"]["query"]
    assert "instance" not in variables, "in Kubernetes an instance is a pod IP: use pod"
    for panel in _panels(dash):
        for target in panel.get("targets", []):
            expr = target["expr"]
            assert "$instance" not in expr, panel["title"]
            if "tagfleet_" in expr or "DCGM_" in expr:
                assert 'namespace=~"$namespace"' in expr and 'pod=~"$pod"' in expr, panel["title"]


def test_issue_15_panels() -> None:
    panels = {p["title"]: p for p in _panels(_dashboard())}
    exprs = {
        title: " ".join(t["expr"] for t in p.get("targets", [])) for title, p in panels.items()
    }
    assert "tagfleet_consumer_lag" in exprs["Time to drain"] and "rate(" in exprs["Time to drain"]
    assert (
        "up{" in exprs["Replicas"]
        and "kube_deployment_status_replicas_available" in exprs["Replicas"]
    )
    assert "kube_pod_container_status_restarts_total" in exprs["Restarts (1h)"]
    assert "offset $baseline" in exprs["Score drift against the baseline"]
    assert "$shadow" in exprs["Shadow agreement: label shares"]
    for title in ("GPU utilisation", "GPU memory used"):
        assert 'pod=~"$pod"' in exprs[title], "GPU panels show our pods only"


# ---- review fixes: names the chart does not fix, DCGM's label forms, the shadow variable ----


def _variables(dash: dict) -> dict[str, dict]:
    return {v["name"]: v for v in dash["templating"]["list"]}


def _substitute(expr: str, pod: str = "tagfleet-.*", namespace: str = "prod") -> str:
    """The dashboard's variables as Grafana would send them (regex-valued)."""
    expr = expr.replace("$__rate_interval", "5m").replace("$baseline", "1h")
    expr = expr.replace("$namespace", namespace).replace("$pod", pod)
    return (
        expr.replace("$deployment", "tagfleet").replace("$function", ".*").replace("$shadow", ".*")
    )


def test_every_dashboard_query_parses(promtool: Path, tmp_path: Path) -> None:
    rules = [
        {"record": f"dashboard:q{i}", "expr": _substitute(expr)}
        for i, (_, expr) in enumerate(_queries(_dashboard()))
    ]
    (tmp_path / "q.yml").write_text(yaml.safe_dump({"groups": [{"name": "q", "rules": rules}]}))
    proc = subprocess.run(
        [str(promtool), "check", "rules", str(tmp_path / "q.yml")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_replicas_follow_the_scraped_pods_not_a_guessed_deployment_name(helm: Path) -> None:
    dash = _dashboard()
    for panel in _panels(dash):
        for target in panel.get("targets", []):
            expr = target["expr"]
            assert "tagfleet.*" not in expr, f"{panel['title']}: a name pattern breaks overrides"
            if "kube_deployment_" in expr:
                assert 'deployment=~"$deployment"' in expr and 'namespace=~"$namespace"' in expr
    variable = _variables(dash)["deployment"]
    assert 'job="tagfleet"' in variable["query"]["query"] and variable["query"]["query"].endswith(
        ", pod)"
    )
    pattern = re.compile(variable["regex"].strip("/"))
    # Grafana keeps the regex's capture group: a Deployment's pods are named
    # <deployment>-<pod-template-hash>-<5 characters>, whatever fullnameOverride says.
    for args, pods in (
        (("--set", "fullnameOverride=vision-tags"), ["vision-tags-7d9c5b8f46-x2k4p"]),
        ((), ["t-tagfleet-5f6d8c7b9-q8z2m", "t-tagfleet-66b9d7c8f4-abcde"]),
    ):
        docs = render(helm, "-f", str(CHART / "ci" / "defaults.yaml"), *args)
        (deployment,) = [  # the consumers' (job="tagfleet"), not the API's
            d
            for d in docs
            if d["kind"] == "Deployment"
            and d["metadata"]["labels"]["app.kubernetes.io/component"] == "consumer"
        ]
        for pod in pods:
            match = pattern.match(pod)
            assert match and match.group(1) == deployment["metadata"]["name"], pod
    assert not pattern.match("tagfleet"), "compose's static pod label names no Deployment"


def _dcgm_expr(metric: str) -> str:
    (expr,) = [
        t["expr"]
        for p in _panels(_dashboard())
        for t in p.get("targets", [])
        if metric in t["expr"]
    ]
    return expr


def test_gpu_panels_show_our_pods_with_or_without_honor_labels(
    promtool: Path, tmp_path: Path
) -> None:
    """DCGM's pod mapping labels its series namespace/pod/container. Scraped with honorLabels
    they stay; without it (the GPU operator's ServiceMonitor default) Prometheus renames them
    exported_* and sets namespace/pod to the exporter's own. Either way only our pods show:
    not an idle GPU, not the exporter, not another workload's GPU."""
    (tmp_path / "none.yml").write_text("groups: []\n")
    tests = []
    for metric in sorted(DCGM):
        expr = _substitute(_dcgm_expr(metric))
        assert 'exported_pod=~"tagfleet-.*"' in expr and 'pod=~"tagfleet-.*"' in expr
        honored = 'gpu="{g}",UUID="GPU-{g}",namespace="{ns}",pod="{pod}",container="{c}"'
        renamed = (
            'gpu="{g}",UUID="GPU-{g}",namespace="gpu-operator",pod="dcgm-exporter-abc12",'
            'container="dcgm-exporter",exported_namespace="{ns}",exported_pod="{pod}",'
            'exported_container="{c}"'
        )
        idle_renamed = (
            'gpu="9",UUID="GPU-9",namespace="gpu-operator",pod="dcgm-exporter-abc12",'
            'container="dcgm-exporter"'
        )
        for form in (honored, renamed):
            ours = form.format(g=0, ns="prod", pod="tagfleet-7d9c5b8f46-x2k4p", c="tagfleet")
            other_app = form.format(g=1, ns="prod", pod="tagfleet-db-0", c="postgres")
            other_ns = form.format(g=2, ns="staging", pod="tagfleet-6c-abcde", c="tagfleet")
            series = [ours, other_app, other_ns, idle_renamed, 'gpu="8",UUID="GPU-8"']
            tests.append(
                {
                    "interval": "1m",
                    "input_series": [
                        {"series": f"{metric}{{{labels}}}", "values": "50x10"} for labels in series
                    ],
                    "promql_expr_test": [
                        {
                            "expr": expr,
                            "eval_time": "5m",
                            "exp_samples": [
                                {
                                    "labels": '{namespace="prod",pod="tagfleet-7d9c5b8f46-x2k4p",'
                                    'gpu="0"}',
                                    "value": 50,
                                }
                            ],
                        }
                    ],
                }
            )
    (tmp_path / "dcgm.test.yml").write_text(
        yaml.safe_dump({"rule_files": ["none.yml"], "evaluation_interval": "1m", "tests": tests})
    )
    proc = subprocess.run(
        [str(promtool), "test", "rules", str(tmp_path / "dcgm.test.yml")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for metric in DCGM:
        (panel,) = [
            p
            for p in _panels(_dashboard())
            if any(metric in t["expr"] for t in p.get("targets", []))
        ]
        assert "honorLabels" in panel["description"], "say which scrape setting is expected"


def test_the_shadow_variable_lists_shadows_only_if_the_service_says_which_they_are() -> None:
    from consumers.metrics import Metrics

    labels = set(Metrics().fleet_function._labelnames)  # noqa: SLF001 - no public accessor
    variable = _variables(_dashboard())["shadow"]
    role = labels & {"role", "shadow", "mode"}
    if role:
        (name,) = role
        assert name in variable["query"]["query"], "filter the variable by the role label"
    else:
        # No role label: the variable cannot tell a shadow apart; it must say so, not guess.
        assert "tagfleet_fleet_function_info" in variable["query"]["query"]
        assert "no shadow role" in variable["description"], variable["description"]
        assert set(labels) == {"function", "type", "version"}, labels
