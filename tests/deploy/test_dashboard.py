"""The Grafana dashboard and its provisioning: every query reads only metrics the service
exports (docs/architecture.md; the DCGM GPU panels are marked optional), and the panels the
issues ask for are there (issue 15: namespace/pod variables, GPU panels of our pods only,
time to drain, replicas, restarts, score drift against a baseline, shadow comparison)."""

from __future__ import annotations

import json
from collections.abc import Iterator

import yaml
from deploy_helpers import (
    DASHBOARD,
    EXTERNAL_METRICS,
    REPO,
    architecture_metrics,
    exported_series_names,
    metric_names,
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
