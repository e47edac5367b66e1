"""A first `helm install` (issue 15): the chart's defaults either render into a release that can
work or fail at render time with one message naming what to set; the consumer pods, not the
migration Job's or the helm test's, are what the PDB, Service, ServiceMonitor and
NetworkPolicy select; the isolation and sizing values of issue 11 reach the pods."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import yaml
from deploy_helpers import CHART, REPO, helm_template, render

MINIMAL = ("-f", str(CHART / "ci" / "defaults.yaml"))
DASHBOARD = REPO / "infra" / "grafana" / "dashboards" / "tagfleet.json"


# Kinds the chart renders once per component (consumer, api, webhooks).
COMPONENT_KINDS = {
    "Deployment",
    "Service",
    "PodDisruptionBudget",
    "NetworkPolicy",
    "ServiceMonitor",
}
COMPONENTS = ("consumer", "api", "webhooks")


def component_of(doc: dict) -> str | None:
    return (doc["metadata"].get("labels") or {}).get("app.kubernetes.io/component")


def by_kind(docs: list[dict], kind: str, component: str | None = None) -> list[dict]:
    return [
        d for d in docs if d["kind"] == kind and (component is None or component_of(d) == component)
    ]


def one(docs: list[dict], kind: str, component: str = "consumer") -> dict:
    """The one ``kind`` of the release; for the per-component kinds, the ``component``'s."""
    (doc,) = by_kind(docs, kind, component if kind in COMPONENT_KINDS else None)
    return doc


def pod_spec(doc: dict) -> dict:
    return doc["spec"] if doc["kind"] == "Pod" else doc["spec"]["template"]["spec"]


def pod_labels(doc: dict) -> dict:
    return (
        doc["metadata"]["labels"]
        if doc["kind"] == "Pod"
        else doc["spec"]["template"]["metadata"]["labels"]
    )


def env_of(doc: dict) -> dict[str, dict]:
    return {e["name"]: e for e in pod_spec(doc)["containers"][0].get("env", [])}


def selects(selector: dict, labels: dict) -> bool:
    return selector.items() <= labels.items()


# ---- render or refuse ----


def test_bare_defaults_fail_at_render_time_with_one_message_naming_what_to_set(
    helm: Path,
) -> None:
    proc = helm_template(helm)
    assert proc.returncode != 0
    errors = [line for line in proc.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1, proc.stderr
    for name in (
        "image.repository",
        "store.existingSecret",
        "store.sqlite.enabled",
        "security.allowedBuckets",
        "security.allowAllBuckets",
    ):
        assert name in errors[0], name


def test_without_a_bucket_allow_list_the_chart_refuses_to_render(helm: Path) -> None:
    proc = helm_template(
        helm, "--set", "image.repository=r/tagfleet", "--set", "store.existingSecret=s"
    )
    assert proc.returncode != 0
    assert "security.allowedBuckets" in proc.stderr and "allowAllBuckets=true" in proc.stderr
    assert "image.repository" not in proc.stderr and "store." not in proc.stderr


def test_the_allow_list_becomes_the_services_setting(helm: Path) -> None:
    docs = render(helm, *MINIMAL, "--set", "security.allowedBuckets={a-photos,b-photos}")
    assert (
        env_of(one(docs, "Deployment"))["TAGFLEET_ALLOWED_BUCKETS"]["value"] == "a-photos,b-photos"
    )
    open_all = render(
        helm,
        *MINIMAL,
        "--set-json",
        "security.allowedBuckets=[]",
        "--set",
        "security.allowAllBuckets=true",
    )
    assert "TAGFLEET_ALLOWED_BUCKETS" not in env_of(one(open_all, "Deployment"))
    both = helm_template(helm, *MINIMAL, "--set", "security.allowAllBuckets=true")
    assert both.returncode != 0 and "not both" in both.stderr
    old = helm_template(helm, *MINIMAL, "--set", "config.allowed_buckets=x")
    assert old.returncode != 0 and "allowed_buckets" in old.stderr  # one route: security


def test_the_minimal_install_migrates_a_real_store_with_a_small_job(
    rendered: dict[str, list[dict]],
) -> None:
    docs = rendered["defaults"]
    job, deployment = one(docs, "Job"), one(docs, "Deployment")
    store = env_of(job)["TAGFLEET_STORE"]
    assert store["valueFrom"]["secretKeyRef"]["name"] == "tagfleet-store"  # never sqlite:///
    assert env_of(deployment)["TAGFLEET_STORE"] == store
    image = pod_spec(job)["containers"][0]["image"]
    assert image == "registry.example.com/tagfleet:0.1.0-cpu"  # not the multi-GB CUDA image
    # The hook counts against helm's default --timeout of 5 minutes.
    assert job["spec"]["activeDeadlineSeconds"] < 300
    assert pod_spec(job)["containers"][0]["resources"]["limits"]["memory"]


def test_migration_job_has_its_own_scheduling_fields(rendered: dict[str, list[dict]]) -> None:
    job = pod_spec(one(rendered["gpu-keda"], "Job"))
    deployment = pod_spec(one(rendered["gpu-keda"], "Deployment"))
    assert job["nodeSelector"] == {"kubernetes.io/os": "linux"}
    assert "tolerations" not in job and "nvidia.com/gpu" not in str(job["containers"][0])
    assert deployment["nodeSelector"] == {"nvidia.com/gpu.present": "true"}


def test_a_sqlite_trial_keeps_its_file_on_a_writable_volume_and_migrates_at_start(
    helm: Path,
) -> None:
    # api.enabled=false: the SQLite file is on the consumer's volume only.
    values: tuple[str, ...] = ("--set", "image.repository=r/t", "--set", "api.enabled=false")
    values = (*values, "--set", "security.allowAllBuckets=true")
    docs = render(helm, *values, "--set", "store.sqlite.enabled=true")
    assert not by_kind(docs, "Job")
    deployment = one(docs, "Deployment")
    env = env_of(deployment)
    assert env["TAGFLEET_STORE"]["value"] == "sqlite:////var/lib/tagfleet/data/tags.db"
    assert env["TAGFLEET_MIGRATE_ON_START"]["value"] == "true"
    mounts = {
        m["mountPath"]: m["name"] for m in pod_spec(deployment)["containers"][0]["volumeMounts"]
    }
    volume = next(
        v for v in pod_spec(deployment)["volumes"] if v["name"] == mounts["/var/lib/tagfleet/data"]
    )
    assert "emptyDir" in volume or "persistentVolumeClaim" in volume
    two = helm_template(
        helm, *values, "--set", "store.sqlite.enabled=true", "--set", "replicaCount=2"
    )
    assert two.returncode != 0 and "replicaCount=1" in two.stderr


# ---- selectors: the consumer pods only ----


@pytest.mark.parametrize("values", ["defaults", "gpu-keda"])
def test_selectors_match_the_consumer_pods_and_not_the_jobs_or_the_tests(
    rendered: dict[str, list[dict]], values: str
) -> None:
    docs = rendered[values]
    consumer = pod_labels(one(docs, "Deployment"))
    others = [pod_labels(d) for d in by_kind(docs, "Job") + by_kind(docs, "Pod")]
    assert others
    selectors = {
        "Deployment": one(docs, "Deployment")["spec"]["selector"]["matchLabels"],
        "PodDisruptionBudget": one(docs, "PodDisruptionBudget")["spec"]["selector"]["matchLabels"],
        "Service": one(docs, "Service")["spec"]["selector"],
        "NetworkPolicy": one(docs, "NetworkPolicy")["spec"]["podSelector"]["matchLabels"],
    }
    for monitor in by_kind(docs, "ServiceMonitor", "consumer"):  # selects the Service
        assert selects(
            monitor["spec"]["selector"]["matchLabels"], one(docs, "Service")["metadata"]["labels"]
        )
        selectors["ServiceMonitor->Service"] = one(docs, "Service")["spec"]["selector"]
    # The API's and webhook serve's pods are not consumers either.
    others += [
        pod_labels(d) for d in by_kind(docs, "Deployment") if d is not one(docs, "Deployment")
    ]
    assert len(others) > 2
    for kind, selector in selectors.items():
        assert selects(selector, consumer), kind
        assert selector["app.kubernetes.io/component"] == "consumer", kind
        for labels in others:
            assert not selects(selector, labels), f"{kind} selects {labels}"


@pytest.mark.parametrize("values", ["defaults", "gpu-keda", "cpu-minimal"])
def test_each_components_objects_select_its_own_pods_only(
    rendered: dict[str, list[dict]], values: str
) -> None:
    """The API's and webhook serve's Deployment, Service, PDB, NetworkPolicy and
    ServiceMonitor (through its Service) select their own pods, and nobody else's: no
    consumer, no Job, no test pod, not each other's."""
    docs = rendered[values]
    pods = {component_of(d) or "?": pod_labels(d) for d in by_kind(docs, "Deployment")}
    pods |= {f"{d['kind']}/{d['metadata']['name']}": pod_labels(d) for d in by_kind(docs, "Job")}
    pods |= {f"Pod/{d['metadata']['name']}": pod_labels(d) for d in by_kind(docs, "Pod")}
    checked = 0
    for component in ("api", "webhooks"):
        if component not in pods:
            continue
        selectors = {
            "Deployment": one(docs, "Deployment", component)["spec"]["selector"]["matchLabels"],
            "Service": one(docs, "Service", component)["spec"]["selector"],
        }
        for pdb in by_kind(docs, "PodDisruptionBudget", component):
            selectors["PodDisruptionBudget"] = pdb["spec"]["selector"]["matchLabels"]
        for policy in by_kind(docs, "NetworkPolicy", component):
            selectors["NetworkPolicy"] = policy["spec"]["podSelector"]["matchLabels"]
        for monitor in by_kind(docs, "ServiceMonitor", component):
            service = one(docs, "Service", component)
            assert selects(
                monitor["spec"]["selector"]["matchLabels"], service["metadata"]["labels"]
            )
            selectors["ServiceMonitor->Service"] = service["spec"]["selector"]
        for kind, selector in selectors.items():
            for name, labels in pods.items():
                assert selects(selector, labels) == (name == component), (component, kind, name)
                checked += 1
    assert checked >= {"defaults": 12, "gpu-keda": 40, "cpu-minimal": 6}[values]


@pytest.mark.parametrize("values", ["defaults", "gpu-keda", "cpu-minimal"])
def test_every_workload_names_its_component(rendered: dict[str, list[dict]], values: str) -> None:
    components = {
        (doc["kind"], pod_labels(doc)["app.kubernetes.io/component"])
        for doc in rendered[values]
        if doc["kind"] in ("Deployment", "Job", "Pod")
    }
    expected = {("Deployment", "consumer"), ("Deployment", "api"), ("Pod", "test")}
    expected |= {
        "defaults": {("Job", "migrations")},
        "gpu-keda": {("Job", "migrations"), ("Deployment", "webhooks")},
        "cpu-minimal": set(),
    }[values]
    assert components == expected


# DNS labels (RFC 1123/1035) and label values: 63 characters. Pod and ConfigMap names may be
# longer (253); a Job's name also becomes its pods' `batch.kubernetes.io/job-name` label.
NAME_63 = {"Deployment", "Service", "Job", "ServiceAccount"}


@pytest.mark.parametrize(
    "naming",
    [
        ("--set", f"fullnameOverride={'f' * 63}"),
        ("--set", f"nameOverride={'n' * 40}"),
    ],
)
def test_long_names_are_cut_to_63_characters_keeping_their_suffix(
    helm: Path, naming: tuple[str, str]
) -> None:
    docs = []
    for release in ("t", "r" * 53):  # a short release and helm's longest release name
        proc = subprocess.run(
            [str(helm), "template", release, str(CHART), "-f", str(CHART / "ci/gpu-keda.yaml")]
            + list(naming),
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert proc.returncode == 0, proc.stderr
        docs += [d for d in yaml.safe_load_all(proc.stdout) if d]
    jobs = by_kind(docs, "Job")
    assert len(jobs) == 2
    for job in jobs:
        assert job["metadata"]["name"].endswith("-db-upgrade"), job["metadata"]["name"]
    for doc in docs:
        name = doc["metadata"]["name"]
        if doc["kind"] in NAME_63:
            assert len(name) <= 63 and not name.endswith("-"), (doc["kind"], name)
        labels = dict(doc["metadata"].get("labels") or {})
        if doc["kind"] in ("Deployment", "Job"):
            labels |= pod_labels(doc)
        for key, value in labels.items():
            assert len(str(value)) <= 63, (doc["kind"], key, value)


@pytest.mark.parametrize(
    "key",
    [
        "app.kubernetes.io/component",
        "app.kubernetes.io/name",
        "app.kubernetes.io/instance",
        "app.kubernetes.io/part-of",
    ],
)
def test_pod_labels_cannot_override_the_charts_own_labels(helm: Path, key: str) -> None:
    escaped = key.replace(".", "\\.")
    proc = helm_template(helm, *MINIMAL, "--set", f"podLabels.{escaped}=other")
    assert proc.returncode != 0, "podLabels overrode " + key
    assert f"podLabels: {key} is set by the chart" in proc.stderr, proc.stderr


def test_pod_labels_are_added_and_the_selectors_still_match(helm: Path) -> None:
    docs = render(helm, *MINIMAL, "--set", "podLabels.team=vision", "--set", "podLabels.tier=gpu")
    deployment = one(docs, "Deployment")
    labels = pod_labels(deployment)
    assert labels["team"] == "vision" and labels["tier"] == "gpu"
    assert labels["app.kubernetes.io/component"] == "consumer"
    assert selects(deployment["spec"]["selector"]["matchLabels"], labels)
    assert selects(one(docs, "Service")["spec"]["selector"], labels)
    assert selects(one(docs, "PodDisruptionBudget")["spec"]["selector"]["matchLabels"], labels)


# ---- the pods ----


def test_decode_sizing_reads_the_containers_limits_through_the_downward_api(
    rendered: dict[str, list[dict]],
) -> None:
    deployment = one(rendered["defaults"], "Deployment")
    env = env_of(deployment)
    memory = env["TAGFLEET_MEMORY_LIMIT_BYTES"]["valueFrom"]["resourceFieldRef"]
    cpu = env["TAGFLEET_CPU_LIMIT_MILLICORES"]["valueFrom"]["resourceFieldRef"]
    assert (memory["resource"], str(memory["divisor"])) == ("limits.memory", "1")
    assert (cpu["resource"], cpu["divisor"]) == ("limits.cpu", "1m")
    container = pod_spec(deployment)["containers"][0]
    assert memory["containerName"] == cpu["containerName"] == container["name"]
    assert {"cpu", "memory"} <= set(container["resources"]["limits"])  # meaningful by default


def test_image_by_digest_and_runtime_class(rendered: dict[str, list[dict]]) -> None:
    pod = pod_spec(one(rendered["gpu-keda"], "Deployment"))
    repo, digest = pod["containers"][0]["image"].split("@")
    assert repo == "registry.example.com/tagfleet:0.1.0-cuda" and digest.startswith("sha256:")
    assert pod["runtimeClassName"] == "nvidia"
    assert "runtimeClassName" not in pod_spec(one(rendered["defaults"], "Deployment"))


def test_helm_test_pod_checks_readyz_through_the_service(rendered: dict[str, list[dict]]) -> None:
    docs = rendered["defaults"]
    pod = one(docs, "Pod")
    assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    service = one(docs, "Service")
    url = pod["spec"]["containers"][0]["command"][-1]
    port = service["spec"]["ports"][0]["port"]
    assert url == f"http://{service['metadata']['name']}.tagfleet.svc:{port}/readyz"


def test_network_policy_admits_only_prometheus_and_the_test_to_the_metrics_port(
    rendered: dict[str, list[dict]], helm: Path
) -> None:
    policy = one(rendered["defaults"], "NetworkPolicy")["spec"]
    assert policy["policyTypes"] == ["Ingress"]  # egress left open by default
    (rule,) = policy["ingress"]
    assert rule["ports"] == [{"port": "metrics", "protocol": "TCP"}]
    prometheus, test = rule["from"]
    assert prometheus["namespaceSelector"]["matchLabels"] == {
        "kubernetes.io/metadata.name": "monitoring"
    }
    assert prometheus["podSelector"]["matchLabels"] == {"app.kubernetes.io/name": "prometheus"}
    assert selects(test["podSelector"]["matchLabels"], pod_labels(one(rendered["defaults"], "Pod")))
    kubelet = one(rendered["gpu-keda"], "NetworkPolicy")["spec"]["ingress"][0]["from"][-1]
    assert kubelet == {"ipBlock": {"cidr": "10.0.0.0/16"}}
    closed = render(helm, *MINIMAL, "--set", "networkPolicy.egress[0].ports[0].port=9092")
    assert one(closed, "NetworkPolicy")["spec"]["policyTypes"] == ["Ingress", "Egress"]


# ---- KEDA ----


def test_keda_follows_the_consumers_offset_reset_and_scales_gently(
    rendered: dict[str, list[dict]], helm: Path
) -> None:
    scaled = one(rendered["gpu-keda"], "ScaledObject")["spec"]
    assert scaled["triggers"][0]["metadata"]["offsetResetPolicy"] == "latest"  # config says so
    behavior = scaled["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]
    assert behavior["scaleDown"]["stabilizationWindowSeconds"] >= 300
    assert behavior["scaleUp"]["stabilizationWindowSeconds"] > 0
    default = render(helm, *MINIMAL, "--set", "keda.enabled=true")
    meta = one(default, "ScaledObject")["spec"]["triggers"][0]["metadata"]
    assert meta["offsetResetPolicy"] == "earliest"  # the service's default
    assert not by_kind(default, "TriggerAuthentication")


def test_keda_private_ca_goes_through_the_trigger_authentication(helm: Path) -> None:
    args = (*MINIMAL, "--set", "keda.enabled=true", "--set", "keda.tls.caSecret.name=ca")
    refused = helm_template(helm, *args)
    assert refused.returncode != 0 and "SSL" in refused.stderr
    docs = render(helm, *args, "--set", "config.security_protocol=SSL")
    auth = one(docs, "TriggerAuthentication")["spec"]["secretTargetRef"]
    assert auth == [{"parameter": "ca", "name": "ca", "key": "ca.crt"}]
    trigger = one(docs, "ScaledObject")["spec"]["triggers"][0]
    assert (
        trigger["authenticationRef"]["name"]
        == one(docs, "TriggerAuthentication")["metadata"]["name"]
    )
    assert trigger["metadata"]["tls"] == "enable"


# ---- the dashboard ----


def test_dashboard_config_map_ships_the_dashboard(rendered: dict[str, list[dict]]) -> None:
    copy = CHART / "files" / "tagfleet.dashboard.json"
    assert copy.read_bytes() == DASHBOARD.read_bytes(), (
        "copy the dashboard into helm/tagfleet/files"
    )
    (cm,) = [
        d
        for d in by_kind(rendered["gpu-keda"], "ConfigMap")
        if "dashboard" in d["metadata"]["name"]
    ]
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert json.loads(cm["data"]["tagfleet.json"]) == json.loads(DASHBOARD.read_text())
