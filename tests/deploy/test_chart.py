"""The Helm chart: lint, render, Kubernetes schemas, and what each values file must produce.

Rendered with helm from the Go module proxy (infra/helm.sh) over helm/tagfleet/ci/*.yaml;
manifests validated offline with kubernetes-validate; CRDs (KEDA, Prometheus Operator)
checked structurally, field by field, since no schema of theirs ships offline.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import typing
from pathlib import Path

import kubernetes_validate
import pytest
import yaml
from deploy_helpers import (
    CHART,
    REPO,
    RULES,
    VALUES_FILES,
    helm_template,
    known_env,
    render,
    settings_fields,
)

# Oldest Kubernetes the chart supports (Chart.yaml kubeVersion) and the newest schemas shipped.
K8S_VERSIONS = ("1.27.0", kubernetes_validate.utils.latest_version())
CRD_KINDS = {
    ("keda.sh/v1alpha1", "ScaledObject"),
    ("keda.sh/v1alpha1", "TriggerAuthentication"),
    ("monitoring.coreos.com/v1", "ServiceMonitor"),
    ("monitoring.coreos.com/v1", "PrometheusRule"),
}


# The least a render needs (image, store, allow-list): the chart refuses to render without it.
MINIMAL = ("-f", str(CHART / "ci" / "defaults.yaml"))


# Kinds the chart renders once per component (consumer, api, webhooks).
COMPONENT_KINDS = {
    "Deployment",
    "Service",
    "PodDisruptionBudget",
    "NetworkPolicy",
    "ServiceMonitor",
}


def component_of(doc: dict) -> str | None:
    return (doc["metadata"].get("labels") or {}).get("app.kubernetes.io/component")


def by_kind(docs: list[dict], kind: str, component: str | None = None) -> list[dict]:
    return [
        d for d in docs if d["kind"] == kind and (component is None or component_of(d) == component)
    ]


def one(docs: list[dict], kind: str, component: str = "consumer") -> dict:
    """The one ``kind`` of the release; for the per-component kinds, the ``component``'s."""
    found = by_kind(docs, kind, component if kind in COMPONENT_KINDS else None)
    assert len(found) == 1, f"expected one {kind} ({component}), got {len(found)}"
    return found[0]


def container(docs: list[dict], kind: str = "Deployment", component: str = "consumer") -> dict:
    return one(docs, kind, component)["spec"]["template"]["spec"]["containers"][0]


def env_of(c: dict) -> dict[str, dict]:
    return {e["name"]: e for e in c.get("env", [])}


# ---- lint and render ----


@pytest.mark.parametrize("values", VALUES_FILES)
def test_helm_lint_strict(helm: Path, values: str) -> None:
    proc = subprocess.run(
        [str(helm), "lint", "--strict", str(CHART), "-f", str(CHART / "ci" / f"{values}.yaml")],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_each_values_file_renders_its_own_set_of_objects(rendered: dict[str, list[dict]]) -> None:
    kinds = {name: sorted({d["kind"] for d in docs}) for name, docs in rendered.items()}
    assert kinds["defaults"] == [
        "Deployment",
        "Job",
        "NetworkPolicy",
        "Pod",  # helm test
        "PodDisruptionBudget",
        "Service",
        "ServiceAccount",
    ]
    assert kinds["gpu-keda"] == [
        "ConfigMap",  # the Grafana dashboard
        "CronJob",  # embeddings maintain
        "Deployment",
        "Job",
        "NetworkPolicy",
        "Pod",
        "PodDisruptionBudget",
        "PrometheusRule",
        "ScaledObject",
        "Service",
        "ServiceAccount",
        "ServiceMonitor",
        "TriggerAuthentication",
    ]
    assert kinds["cpu-minimal"] == [
        "ConfigMap",
        "Deployment",
        "HorizontalPodAutoscaler",
        "Pod",
        "Service",
        "ServiceAccount",
    ]


# ---- Kubernetes schemas ----


@pytest.mark.parametrize("values", VALUES_FILES)
def test_manifests_validate_against_kubernetes_schemas(
    rendered: dict[str, list[dict]], values: str
) -> None:
    checked = 0
    for doc in rendered[values]:
        if (doc["apiVersion"], doc["kind"]) in CRD_KINDS:
            continue  # structural checks below
        for version in K8S_VERSIONS:
            kubernetes_validate.validate(doc, version, strict=True)
        checked += 1
    assert checked >= 4


def test_validation_catches_a_broken_manifest(rendered: dict[str, list[dict]]) -> None:
    deployment = json.loads(json.dumps(one(rendered["defaults"], "Deployment")))
    deployment["spec"]["template"]["spec"]["containers"][0]["livenessProbe"]["httpGet"]["prot"] = 1
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, K8S_VERSIONS[0], strict=True)


def _require(doc: dict, *paths: str) -> None:
    for path in paths:
        node: typing.Any = doc
        for key in path.split("."):
            assert isinstance(node, dict) and key in node, f"{doc['kind']}: missing {path}"
            node = node[key]
        assert node not in (None, "", [], {}), f"{doc['kind']}: empty {path}"


def test_crds_have_their_required_fields(rendered: dict[str, list[dict]]) -> None:
    docs = rendered["gpu-keda"]
    deployment, service = one(docs, "Deployment"), one(docs, "Service")
    for doc in docs:
        if (doc["apiVersion"], doc["kind"]) in CRD_KINDS:
            _require(doc, "metadata.name", "metadata.labels", "spec")

    scaled = one(docs, "ScaledObject")
    _require(scaled, "spec.scaleTargetRef.name", "spec.triggers")
    assert scaled["spec"]["scaleTargetRef"]["name"] == deployment["metadata"]["name"]
    assert scaled["spec"]["minReplicaCount"] <= scaled["spec"]["maxReplicaCount"]
    (trigger,) = scaled["spec"]["triggers"]
    assert trigger["type"] == "kafka"
    meta = trigger["metadata"]
    for key in ("bootstrapServers", "consumerGroup", "topic", "lagThreshold"):
        assert isinstance(meta[key], str) and meta[key], key  # KEDA metadata values are strings
    auth = one(docs, "TriggerAuthentication")
    assert trigger["authenticationRef"]["name"] == auth["metadata"]["name"]
    assert {r["parameter"] for r in auth["spec"]["secretTargetRef"]} == {
        "username",
        "password",
        "ca",
    }
    for ref in auth["spec"]["secretTargetRef"]:
        _require(ref, "name", "key")

    monitor = one(docs, "ServiceMonitor")
    _require(monitor, "spec.selector.matchLabels", "spec.endpoints")
    labels = service["metadata"]["labels"]
    assert monitor["spec"]["selector"]["matchLabels"].items() <= labels.items()
    port_names = {p["name"] for p in service["spec"]["ports"]}
    assert {e["port"] for e in monitor["spec"]["endpoints"]} <= port_names
    assert labels[monitor["spec"]["jobLabel"]] == "tagfleet"  # job="tagfleet" in the rules

    rule = one(docs, "PrometheusRule")
    for group in rule["spec"]["groups"]:
        _require(group, "name", "rules")
        for r in group["rules"]:
            assert r.get("alert") and r.get("expr"), r


# ---- the Deployment ----


def test_gpu_values_request_one_gpu_per_pod_on_gpu_nodes(rendered: dict[str, list[dict]]) -> None:
    docs = rendered["gpu-keda"]
    pod = one(docs, "Deployment")["spec"]["template"]["spec"]
    assert pod["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert len(pod["containers"]) == 1  # one consumer process per GPU
    assert pod["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert pod["tolerations"][0]["key"] == "nvidia.com/gpu"
    assert "podAntiAffinity" in pod["affinity"]
    assert container(docs)["image"].split("@")[0].endswith("-cuda")

    cpu = container(rendered["cpu-minimal"])
    assert "nvidia.com/gpu" not in cpu["resources"].get("limits", {})
    assert cpu["image"].endswith("-cpu")


@pytest.mark.parametrize("values", VALUES_FILES)
def test_probes_hit_the_health_endpoints_on_the_metrics_port(
    rendered: dict[str, list[dict]], values: str
) -> None:
    docs = rendered[values]
    c = container(docs)
    assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}
    assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}
    (port,) = c["ports"]
    assert port["name"] == "metrics"
    assert env_of(c)["TAGFLEET_METRICS_PORT"]["value"] == str(port["containerPort"])
    (svc_port,) = one(docs, "Service")["spec"]["ports"]
    assert svc_port["targetPort"] == "metrics"


@pytest.mark.parametrize("values", VALUES_FILES)
def test_grace_period_covers_the_sigterm_drain(
    rendered: dict[str, list[dict]], values: str
) -> None:
    docs = rendered[values]
    pod = one(docs, "Deployment")["spec"]["template"]["spec"]
    drain = float(env_of(pod["containers"][0])["TAGFLEET_DRAIN_TIMEOUT_S"]["value"])
    assert pod["terminationGracePeriodSeconds"] >= drain + 5
    assert container(docs)["args"] == ["consume"]


def test_a_grace_period_shorter_than_the_drain_is_refused(helm: Path) -> None:
    proc = helm_template(helm, *MINIMAL, "--set", "terminationGracePeriodSeconds=20")
    assert proc.returncode != 0
    assert "drain_timeout_s" in proc.stderr
    assert (
        helm_template(
            helm,
            *MINIMAL,
            "--set",
            "config.drain_timeout_s=55",
            "--set",
            "terminationGracePeriodSeconds=60",
        ).returncode
        == 0
    )


@pytest.mark.parametrize("values", VALUES_FILES)
def test_every_tagfleet_env_var_is_a_setting_the_service_reads(
    rendered: dict[str, list[dict]], values: str
) -> None:
    for kind in ("Deployment", "Job"):
        for doc in by_kind(rendered[values], kind):
            for c in doc["spec"]["template"]["spec"]["containers"]:
                unknown = {n for n in env_of(c) if n.startswith("TAGFLEET_")} - known_env()
                assert not unknown, f"{kind} sets variables the service does not read: {unknown}"


def test_config_values_become_env_strings(rendered: dict[str, list[dict]]) -> None:
    env = env_of(container(rendered["gpu-keda"]))
    assert env["TAGFLEET_MAX_OBJECT_BYTES"]["value"] == "50000000"  # no 5e+07
    assert env["TAGFLEET_ALLOWED_BUCKETS"]["value"] == "photos-prod,photos-archive"
    assert env["TAGFLEET_SECURITY_PROTOCOL"]["value"] == "SASL_SSL"


def test_liveness_limits_reach_the_service_and_are_checked(
    helm: Path, rendered: dict[str, list[dict]]
) -> None:
    """partition_stall_s, liveness_stall_s and max_inference_s (issue 13 item 3) are service
    settings the chart passes on, with the service's defaults, overridable, never 0."""
    env = env_of(container(rendered["defaults"]))
    assert env["TAGFLEET_PARTITION_STALL_S"]["value"] == "60"
    assert env["TAGFLEET_LIVENESS_STALL_S"]["value"] == "300"
    assert env["TAGFLEET_MAX_INFERENCE_S"]["value"] == "300"
    slow = env_of(container(render(helm, *MINIMAL, "--set", "config.max_inference_s=900")))
    assert slow["TAGFLEET_MAX_INFERENCE_S"]["value"] == "900"
    for name in ("partition_stall_s", "liveness_stall_s", "max_inference_s"):
        proc = helm_template(helm, *MINIMAL, "--set", f"config.{name}=0")
        assert proc.returncode != 0 and "exclusiveMinimum" in proc.stderr, (name, proc.stderr)


def test_static_membership_takes_the_pod_name_as_group_instance_id(
    rendered: dict[str, list[dict]],
) -> None:
    env = env_of(container(rendered["gpu-keda"]))  # staticMembership: true
    assert env["TAGFLEET_GROUP_INSTANCE_ID"]["valueFrom"] == {
        "fieldRef": {"fieldPath": "metadata.name"}
    }
    for values in ("defaults", "cpu-minimal"):  # off by default: dynamic members
        assert "TAGFLEET_GROUP_INSTANCE_ID" not in env_of(container(rendered[values]))


def test_secrets_are_referenced_never_inlined(rendered: dict[str, list[dict]]) -> None:
    gpu = env_of(container(rendered["gpu-keda"]))
    for name in ("TAGFLEET_SASL_PLAIN_USERNAME", "TAGFLEET_SASL_PLAIN_PASSWORD", "TAGFLEET_STORE"):
        assert "value" not in gpu[name] and gpu[name]["valueFrom"]["secretKeyRef"]["name"], name
    assert gpu["TAGFLEET_SASL_MECHANISM"]["value"] == "SCRAM-SHA-512"
    sa = one(rendered["gpu-keda"], "ServiceAccount")
    assert sa["metadata"]["annotations"]["eks.amazonaws.com/role-arn"].startswith("arn:aws:iam::")
    assert (
        one(rendered["gpu-keda"], "Deployment")["spec"]["template"]["spec"]["serviceAccountName"]
        == sa["metadata"]["name"]
    )

    cpu = env_of(container(rendered["cpu-minimal"]))
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        assert cpu[name]["valueFrom"]["secretKeyRef"]["name"] == "tagfleet-minio"
    assert cpu["AWS_ENDPOINT_URL_S3"]["value"] == "http://minio.minio.svc:9000"
    for docs in rendered.values():
        assert not by_kind(docs, "Secret"), "the chart must not create Secrets from values"


def test_runs_as_non_root_with_a_read_only_root(rendered: dict[str, list[dict]]) -> None:
    pod = one(rendered["defaults"], "Deployment")["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["containers"][0]["securityContext"]["readOnlyRootFilesystem"] is True
    mounts = {m["mountPath"] for m in pod["containers"][0]["volumeMounts"]}
    assert {"/var/cache/tagfleet", "/tmp"} <= mounts
    assert env_of(pod["containers"][0])["TAGFLEET_CACHE_DIR"]["value"] == "/var/cache/tagfleet"


# ---- the fleet ----


def test_inline_fleet_is_a_mounted_config_map_the_models_package_accepts(
    rendered: dict[str, list[dict]],
) -> None:
    from models.fleet import FleetConfig

    docs = rendered["cpu-minimal"]
    cm = one(docs, "ConfigMap")
    FleetConfig.model_validate(yaml.safe_load(cm["data"]["fleet.yaml"]))
    pod = one(docs, "Deployment")["spec"]["template"]["spec"]
    assert env_of(pod["containers"][0])["TAGFLEET_FLEET"]["value"] == "/etc/tagfleet/fleet.yaml"
    volume = next(v for v in pod["volumes"] if v.get("configMap"))
    assert volume["configMap"]["name"] == cm["metadata"]["name"]
    mount = next(m for m in pod["containers"][0]["volumeMounts"] if m["name"] == volume["name"])
    assert mount["mountPath"] == "/etc/tagfleet"


def test_s3_fleet_is_passed_by_uri(rendered: dict[str, list[dict]], helm: Path) -> None:
    env = env_of(container(rendered["gpu-keda"]))
    assert env["TAGFLEET_FLEET"]["value"] == "s3://tagfleet-models/fleets/prod/fleet.yaml"
    both = helm_template(
        helm, *MINIMAL, "--set", "fleet.uri=s3://b/fleet.yaml", "--set", "fleet.inline=x"
    )
    assert both.returncode != 0 and "not both" in both.stderr


# ---- scaling, disruption, migrations ----


def test_keda_scales_on_the_consumers_own_group_and_topic(rendered: dict[str, list[dict]]) -> None:
    docs = rendered["gpu-keda"]
    env = env_of(container(docs))
    meta = one(docs, "ScaledObject")["spec"]["triggers"][0]["metadata"]
    assert meta["bootstrapServers"] == env["TAGFLEET_BOOTSTRAP_SERVERS"]["value"]
    assert meta["consumerGroup"] == env["TAGFLEET_GROUP_ID"]["value"]
    assert meta["topic"] == env["TAGFLEET_TOPIC"]["value"]
    assert meta["lagThreshold"] == "500"
    assert meta["sasl"] == "scram_sha512" and meta["tls"] == "enable"
    assert "replicas" not in one(docs, "Deployment")["spec"]  # KEDA owns the replica count
    assert not by_kind(docs, "HorizontalPodAutoscaler")  # hpa.enabled is ignored under KEDA


def test_hpa_is_the_fallback_without_keda(rendered: dict[str, list[dict]]) -> None:
    docs = rendered["cpu-minimal"]
    hpa = one(docs, "HorizontalPodAutoscaler")
    assert hpa["spec"]["scaleTargetRef"]["name"] == one(docs, "Deployment")["metadata"]["name"]
    (metric,) = hpa["spec"]["metrics"]
    assert metric["external"]["metric"]["name"] == "tagfleet_consumer_lag"
    assert "replicas" not in one(docs, "Deployment")["spec"]
    assert one(rendered["defaults"], "Deployment")["spec"]["replicas"] == 1


def test_pdb_selects_the_consumer_pods(rendered: dict[str, list[dict]]) -> None:
    docs = rendered["defaults"]
    pdb = one(docs, "PodDisruptionBudget")
    pod_labels = one(docs, "Deployment")["spec"]["template"]["metadata"]["labels"]
    assert pdb["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    assert pdb["spec"]["maxUnavailable"] == 1
    # Readiness does not follow the store after start-up (docs/deploy.md, "Probes"): no
    # eviction policy needed; the API's budget has one.
    assert "unhealthyPodEvictionPolicy" not in pdb["spec"]


def test_db_upgrade_runs_as_a_pre_install_and_pre_upgrade_hook(
    rendered: dict[str, list[dict]],
) -> None:
    docs = rendered["gpu-keda"]
    job = one(docs, "Job")
    hooks = job["metadata"]["annotations"]["helm.sh/hook"].split(",")
    assert sorted(hooks) == ["pre-install", "pre-upgrade"]
    c = container(docs, "Job")
    assert c["args"] == ["db", "upgrade"]
    assert env_of(c)["TAGFLEET_STORE"] == env_of(container(docs))["TAGFLEET_STORE"]
    assert env_of(container(docs))["TAGFLEET_MIGRATE_ON_START"]["value"] == "false"
    # Without the hook, each consumer migrates at start-up.
    assert (
        env_of(container(rendered["cpu-minimal"]))["TAGFLEET_MIGRATE_ON_START"]["value"] == "true"
    )


def test_runtime_client_and_review_settings_reach_the_service(helm: Path) -> None:
    sets = (
        "config.offline=true,config.device=cuda:1,config.kafka_client=confluent,config.review=true"
    )
    env = env_of(container(render(helm, *MINIMAL, "--set", sets)))
    assert env["TAGFLEET_OFFLINE"]["value"] == "true"
    assert env["TAGFLEET_DEVICE"]["value"] == "cuda:1"
    assert env["TAGFLEET_KAFKA_CLIENT"]["value"] == "confluent"
    assert env["TAGFLEET_REVIEW"]["value"] == "true"


# ---- values schema ----


def test_values_schema_config_names_are_settings_with_matching_types() -> None:
    schema = json.loads((CHART / "values.schema.json").read_text())
    config = schema["properties"]["config"]
    assert config["additionalProperties"] is False
    fields = settings_fields()
    unknown = set(config["properties"]) - set(fields)
    assert not unknown, f"values.schema.json config has no such settings: {unknown}"
    for name, prop in config["properties"].items():
        annotation = fields[name].annotation
        if typing.get_origin(annotation) is typing.Literal:
            assert prop["enum"] == list(typing.get_args(annotation)), name
        elif annotation in (int, float, bool, str):
            expected: dict[object, str] = {
                int: "integer",
                float: "number",
                bool: "boolean",
                str: "string",
            }
            assert prop["type"] == expected[annotation], name


@pytest.mark.parametrize(
    "override",
    [
        "unknownKey=1",
        "config.no_such_setting=1",
        "image.variant=tpu",
        "config.batch_size=zero",
        "config.device=gpu0",
        "config.kafka_client=librdkafka",
        "fleet.uri=http://example.com/fleet.yaml",
        "gpu.count=2",
        "api.unknownKey=1",
        "api.port=0",
        "api.embeddings=s3://moved/to/embeddings.location",
        "embeddings.location=/local/dir",
        "embeddings.maintain.indexType=FLAT",
        "embeddings.maintain.indexMinRows=0",
        "webhooks.delivery.no_such_setting=1",
        "webhooks.delivery.budget_s=0",
    ],
)
def test_values_schema_is_strict(helm: Path, override: str) -> None:
    proc = helm_template(helm, "--set", override)
    assert proc.returncode != 0, f"--set {override} rendered"
    assert "schema" in proc.stderr.lower() or "values don't meet" in proc.stderr, proc.stderr


# ---- alert rules: one source ----


def test_prometheus_rule_renders_the_alert_rules_file(rendered: dict[str, list[dict]]) -> None:
    copy = CHART / "files" / "tagfleet.rules.yml"
    assert copy.read_bytes() == RULES.read_bytes(), (
        f"{copy.relative_to(REPO)} differs from {RULES.relative_to(REPO)}: copy it over"
    )
    rule = one(rendered["gpu-keda"], "PrometheusRule")
    names = [r["alert"] for g in rule["spec"]["groups"] for r in g["rules"]]
    source = yaml.safe_load(RULES.read_text())["groups"]
    assert names == [r["alert"] for g in source for r in g["rules"]]
    # What the chart sets per release (namespace, group, runbook base): test_chart_rules.py.


# ---- NOTES.txt ----


@pytest.mark.parametrize("values", VALUES_FILES)
def test_notes_render(helm: Path, tmp_path: Path, values: str) -> None:
    # `helm template` skips NOTES.txt and `install --dry-run` wants a cluster: render it through
    # a copy of the chart with one extra template that includes it.
    chart = tmp_path / "tagfleet"
    shutil.copytree(CHART, chart)
    (chart / "templates" / "notes-check.yaml").write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: notes}\ndata:\n  notes: |\n"
        '    {{- include "tagfleet/templates/NOTES.txt" . | nindent 4 }}\n'
    )
    docs = render(
        helm,
        "-f",
        str(CHART / "ci" / f"{values}.yaml"),
        "--show-only",
        "templates/notes-check.yaml",
        chart=chart,
    )
    notes = docs[0]["data"]["notes"]
    assert "t-tagfleet" in notes and "/readyz" in notes
    assert ("WARNING: no fleet configured" in notes) == (values == "defaults")
    assert ("KEDA scales it" in notes) == (values == "gpu-keda")
    # The API's address and how to make a key; webhooks' restart after an endpoint change.
    assert "svc/t-tagfleet-api" in notes
    assert "exec deploy/t-tagfleet-api -- tagfleet api-key create" in notes
    assert ("rollout restart deploy/t-tagfleet-webhooks" in notes) == (values == "gpu-keda")


# ---- the tags API and webhook serve (issue 18) ----

WEBHOOKS_ON = ("--set", "webhooks.enabled=true", "--set", "webhooks.existingSecret=hooks")


def _pod(doc: dict) -> dict:
    return doc["spec"]["template"]["spec"]


def _selects(selector: dict, labels: dict) -> bool:
    return selector.items() <= labels.items()


def test_the_api_is_deployed_by_default_with_its_service_probes_and_budget(
    rendered: dict[str, list[dict]],
) -> None:
    docs = rendered["defaults"]
    deployment = one(docs, "Deployment", "api")
    c = container(docs, component="api")
    assert c["args"] == ["api"]
    assert c["image"] == "registry.example.com/tagfleet:0.1.0-cpu"  # no CUDA image for HTTP
    assert "nvidia.com/gpu" not in str(c["resources"]) and c["resources"]["limits"]["memory"]
    (port,) = c["ports"]
    env = env_of(c)
    assert port["name"] == "http"
    assert env["TAGFLEET_API_PORT"]["value"] == str(port["containerPort"])
    assert env["TAGFLEET_API_HOST"]["value"] == "0.0.0.0"  # its default is loopback
    assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert c["startupProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert deployment["spec"]["replicas"] == 2
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert labels["app.kubernetes.io/component"] == "api"
    assert _selects(deployment["spec"]["selector"]["matchLabels"], labels)

    service = one(docs, "Service", "api")
    (svc_port,) = service["spec"]["ports"]
    assert (svc_port["name"], svc_port["targetPort"]) == ("http", "http")
    assert _selects(service["spec"]["selector"], labels)
    consumer_labels = one(docs, "Deployment")["spec"]["template"]["metadata"]["labels"]
    assert not _selects(service["spec"]["selector"], consumer_labels)
    assert not _selects(one(docs, "Service")["spec"]["selector"], labels)
    pdb = one(docs, "PodDisruptionBudget", "api")
    assert _selects(pdb["spec"]["selector"]["matchLabels"], labels)
    assert pdb["spec"]["maxUnavailable"] == 1
    # Readiness follows the store: a store outage must not block node drains.
    assert pdb["spec"]["unhealthyPodEvictionPolicy"] == "AlwaysAllow"
    # One DNS label, the release's name with the component's suffix.
    assert deployment["metadata"]["name"] == service["metadata"]["name"] == "t-tagfleet-api"


@pytest.mark.parametrize("values", VALUES_FILES)
def test_the_api_reads_the_consumers_store_s3_and_fleet(
    rendered: dict[str, list[dict]], values: str
) -> None:
    """The same TAGFLEET_STORE (the Secret's key, never inlined), S3 settings, fleet and
    ServiceAccount as the consumers: the helpers they share, not copies."""
    docs = rendered[values]
    api, consumer = env_of(container(docs, component="api")), env_of(container(docs))
    for name in ("TAGFLEET_STORE", "TAGFLEET_FLEET", "AWS_ENDPOINT_URL_S3", "AWS_REGION"):
        assert api.get(name) == consumer.get(name), name
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        assert api.get(name) == consumer.get(name), name
    api_pod, consumer_pod = _pod(one(docs, "Deployment", "api")), _pod(one(docs, "Deployment"))
    for key in ("serviceAccountName", "securityContext", "automountServiceAccountToken"):
        assert api_pod[key] == consumer_pod[key], key
    assert api_pod["containers"][0]["securityContext"]["readOnlyRootFilesystem"] is True
    assert "TAGFLEET_SASL_PLAIN_PASSWORD" not in api  # the API reads no Kafka
    if values == "cpu-minimal":  # inline fleet: the same ConfigMap, mounted the same way
        mounts = {m["name"]: m["mountPath"] for m in api_pod["containers"][0]["volumeMounts"]}
        assert mounts["fleet"] == "/etc/tagfleet"
        (volume,) = [v for v in api_pod["volumes"] if v["name"] == "fleet"]
        assert volume["configMap"]["name"] == one(docs, "ConfigMap")["metadata"]["name"]


def test_the_api_can_be_turned_off_and_is_refused_with_a_sqlite_trial(helm: Path) -> None:
    docs = render(helm, *MINIMAL, "--set", "api.enabled=false")
    assert {component_of(d) for d in docs} == {"consumer", "migrations", "test", None}
    trial = ("--set", "image.repository=r/t", "--set", "security.allowAllBuckets=true")
    refused = helm_template(helm, *trial, "--set", "store.sqlite.enabled=true")
    assert refused.returncode != 0
    assert "api.enabled=false" in refused.stderr and "store.sqlite" in refused.stderr
    docs = render(helm, *trial, "--set", "store.sqlite.enabled=true", "--set", "api.enabled=false")
    assert not by_kind(docs, "Deployment", "api")


def test_webhooks_are_off_by_default_and_need_the_endpoints_secret(
    helm: Path, rendered: dict[str, list[dict]]
) -> None:
    for values in ("defaults", "cpu-minimal"):
        assert not [d for d in rendered[values] if component_of(d) == "webhooks"], values
    refused = helm_template(helm, *MINIMAL, "--set", "webhooks.enabled=true")
    assert refused.returncode != 0 and "webhooks.existingSecret" in refused.stderr
    docs = render(helm, *MINIMAL, *WEBHOOKS_ON)
    assert {d["kind"] for d in docs if component_of(d) == "webhooks"} == {
        "Deployment",
        "Service",
        "NetworkPolicy",
    }


def test_webhook_serve_delivers_the_consumers_result_topic_with_its_kafka_credentials(
    rendered: dict[str, list[dict]],
) -> None:
    docs = rendered["gpu-keda"]  # webhooks on, SASL_SSL Kafka
    deployment = one(docs, "Deployment", "webhooks")
    c = container(docs, component="webhooks")
    assert c["args"] == ["webhook", "serve"]
    assert c["image"].split("@")[0].endswith("-cpu")
    env, consumer = env_of(c), env_of(container(docs))
    assert (
        env["TAGFLEET_WEBHOOK_RESULTS_TOPIC"]["value"]
        == consumer["TAGFLEET_RESULTS_TOPIC"]["value"]
    )
    for name in (
        "TAGFLEET_BOOTSTRAP_SERVERS",
        "TAGFLEET_SECURITY_PROTOCOL",
        "TAGFLEET_SASL_MECHANISM",
        "TAGFLEET_SASL_PLAIN_USERNAME",
        "TAGFLEET_SASL_PLAIN_PASSWORD",
        "TAGFLEET_SSL_CAFILE",
    ):
        assert env[name] == consumer[name], name
    # The private CA is mounted where ssl_cafile points, in both pods.
    for c_ in (c, container(docs)):
        mounts = {m["mountPath"] for m in c_["volumeMounts"]}
        assert env["TAGFLEET_SSL_CAFILE"]["value"].rsplit("/", 1)[0] in mounts
    assert "TAGFLEET_STORE" not in env  # webhook serve reads Kafka only
    # The endpoints' file: the Secret's key, mounted read-only where TAGFLEET_WEBHOOK_WEBHOOKS
    # points, readable by the pod's group only (it holds the signing secrets).
    path = env["TAGFLEET_WEBHOOK_WEBHOOKS"]["value"]
    pod = _pod(deployment)
    (mount,) = [m for m in c["volumeMounts"] if path.startswith(m["mountPath"] + "/")]
    assert mount["readOnly"] is True
    (volume,) = [v for v in pod["volumes"] if v["name"] == mount["name"]]
    assert volume["secret"]["secretName"] == "tagfleet-webhooks"
    assert volume["secret"]["items"] == [{"key": "webhooks.json", "path": path.rsplit("/", 1)[1]}]
    assert volume["secret"]["defaultMode"] == 0o440
    # Metrics, /healthz and /readyz on the named port the Service and ServiceMonitor use.
    (port,) = c["ports"]
    assert port["name"] == "metrics"
    assert env["TAGFLEET_WEBHOOK_METRICS_PORT"]["value"] == str(port["containerPort"])
    assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}
    assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}
    (svc_port,) = one(docs, "Service", "webhooks")["spec"]["ports"]
    assert svc_port["targetPort"] == "metrics"
    # Not on the consumers' GPU nodes.
    assert "nodeSelector" not in pod and "tolerations" not in pod


def test_the_service_monitors_scrape_the_consumers_the_api_and_webhooks_as_their_own_jobs(
    rendered: dict[str, list[dict]],
) -> None:
    docs = rendered["gpu-keda"]
    jobs = {}
    for component in ("consumer", "api", "webhooks"):
        monitor = one(docs, "ServiceMonitor", component)
        service = one(docs, "Service", component)
        selector = monitor["spec"]["selector"]["matchLabels"]
        selected = [
            s for s in by_kind(docs, "Service") if _selects(selector, s["metadata"]["labels"])
        ]
        assert selected == [service], component
        (endpoint,) = monitor["spec"]["endpoints"]
        assert endpoint["port"] in {p["name"] for p in service["spec"]["ports"]}
        assert endpoint["path"] == "/metrics"
        assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
        relabel = {r["targetLabel"]: r["replacement"] for r in endpoint.get("relabelings", [])}
        jobs[component] = (
            relabel.get("job") or service["metadata"]["labels"][monitor["spec"]["jobLabel"]]
        )
    # The jobs of tests/deploy/test_prometheus_scrape.py and infra/prometheus/prometheus.yml:
    # the consumers' alone are job="tagfleet" (TagfleetAbsent, TagfleetTargetDown).
    assert jobs == {"consumer": "tagfleet", "api": "tagfleet-api", "webhooks": "tagfleet-webhooks"}
    prom = yaml.safe_load((REPO / "infra/prometheus/prometheus.yml").read_text())
    assert set(jobs.values()) <= {j["job_name"] for j in prom["scrape_configs"]}
    # Without webhooks, no monitor for them; without the API, none for it.
    assert len(by_kind(rendered["defaults"], "ServiceMonitor")) == 0  # serviceMonitor off


def test_service_monitors_follow_the_components_enabled(helm: Path) -> None:
    on = ("--set", "serviceMonitor.enabled=true")
    docs = render(helm, *MINIMAL, *on)
    assert sorted(str(component_of(d)) for d in by_kind(docs, "ServiceMonitor")) == [
        "api",
        "consumer",
    ]
    docs = render(helm, *MINIMAL, *on, "--set", "api.enabled=false", *WEBHOOKS_ON)
    assert sorted(str(component_of(d)) for d in by_kind(docs, "ServiceMonitor")) == [
        "consumer",
        "webhooks",
    ]


def test_network_policies_admit_clients_to_the_api_and_only_prometheus_to_webhooks(
    rendered: dict[str, list[dict]],
) -> None:
    # Default: every client may reach the API's port (each /v1 request needs a key).
    (rule,) = one(rendered["defaults"], "NetworkPolicy", "api")["spec"]["ingress"]
    assert rule == {"ports": [{"port": "http", "protocol": "TCP"}]}
    docs = rendered["gpu-keda"]  # api.allowedClients: the DAM's namespace
    policy = one(docs, "NetworkPolicy", "api")["spec"]
    api_labels = one(docs, "Deployment", "api")["spec"]["template"]["metadata"]["labels"]
    assert _selects(policy["podSelector"]["matchLabels"], api_labels)
    (rule,) = policy["ingress"]
    assert rule["ports"] == [{"port": "http", "protocol": "TCP"}]
    peers = rule["from"]
    assert peers[0]["podSelector"]["matchLabels"] == {"app.kubernetes.io/name": "prometheus"}
    assert {"ipBlock": {"cidr": "10.0.0.0/16"}} in peers  # the kubelet's probes
    assert {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "dam"}}} in peers
    test_pod = one(docs, "Pod")["metadata"]["labels"]
    assert any(
        _selects(p.get("podSelector", {}).get("matchLabels", {"x": "y"}), test_pod) for p in peers
    )
    (rule,) = one(docs, "NetworkPolicy", "webhooks")["spec"]["ingress"]
    assert rule["ports"] == [{"port": "metrics", "protocol": "TCP"}]
    assert [p for p in rule["from"] if "ipBlock" not in p] == [peers[0]]  # Prometheus only


def test_helm_test_checks_the_apis_readyz_too(rendered: dict[str, list[dict]]) -> None:
    docs = rendered["defaults"]
    urls = one(docs, "Pod")["spec"]["containers"][0]["command"][3:]
    api, consumer = one(docs, "Service", "api"), one(docs, "Service")
    assert urls == [
        f"http://{api['metadata']['name']}.tagfleet.svc:{api['spec']['ports'][0]['port']}/readyz",
        f"http://{consumer['metadata']['name']}.tagfleet.svc:"
        f"{consumer['spec']['ports'][0]['port']}/readyz",
    ]


# ---- the embedding store ----

EMBEDDINGS = "s3://emb-bucket/tagfleet/embeddings"


def _cronjob_container(doc: dict) -> dict:
    return dict(doc["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0])


def test_consumers_the_api_and_the_maintain_job_share_one_embedding_store(helm: Path) -> None:
    docs = render(helm, *MINIMAL, "--set", f"embeddings.location={EMBEDDINGS}")
    consumer, api = env_of(container(docs)), env_of(container(docs, component="api"))
    assert consumer["TAGFLEET_EMBEDDINGS"] == api["TAGFLEET_EMBEDDINGS"]
    assert consumer["TAGFLEET_EMBEDDINGS"]["value"] == EMBEDDINGS
    assert "TAGFLEET_STORE_EMBEDDINGS" not in consumer  # kept: the setting's default
    (cron,) = by_kind(docs, "CronJob")
    assert cron["spec"]["schedule"] == "17 3 * * *"  # nightly by default
    assert cron["spec"]["concurrencyPolicy"] == "Forbid"
    job = _cronjob_container(cron)
    assert job["args"] == ["embeddings", "maintain"]
    env = env_of(job)
    assert env["TAGFLEET_EMBEDDINGS"] == consumer["TAGFLEET_EMBEDDINGS"]
    assert env["TAGFLEET_EMBEDDINGS_MAINTAIN_INDEX_MIN_ROWS"]["value"] == "100000"
    assert env["TAGFLEET_EMBEDDINGS_MAINTAIN_INDEX_TYPE"]["value"] == "IVF_PQ"
    for name in ("AWS_ENDPOINT_URL_S3", "AWS_REGION", "AWS_ACCESS_KEY_ID"):
        assert env.get(name) == consumer.get(name), name  # the same S3 as the writers
    assert job["securityContext"]["readOnlyRootFilesystem"] is True
    assert set(env) - {"AWS_ENDPOINT_URL_S3", "AWS_REGION"} <= known_env() | {
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
    }


def test_without_a_location_consumers_keep_no_embeddings_and_no_job_runs(
    rendered: dict[str, list[dict]],
) -> None:
    for name, docs in rendered.items():
        if name == "gpu-keda":
            continue  # sets embeddings.location
        consumer = env_of(container(docs))
        assert consumer["TAGFLEET_STORE_EMBEDDINGS"]["value"] == "false"
        assert "TAGFLEET_EMBEDDINGS" not in consumer  # not ./tagfleet-embeddings, read-only root
        for api in by_kind(docs, "Deployment", "api"):  # search answers 503
            assert "TAGFLEET_EMBEDDINGS" not in env_of(
                api["spec"]["template"]["spec"]["containers"][0]
            )
        assert not by_kind(docs, "CronJob")


def test_the_maintain_job_follows_its_values(helm: Path) -> None:
    on = ("--set", f"embeddings.location={EMBEDDINGS}")
    docs = render(
        helm,
        *MINIMAL,
        *on,
        "--set",
        "embeddings.maintain.schedule=0 */6 * * *",
        "--set",
        "embeddings.maintain.indexMinRows=5000",
        "--set",
        "embeddings.maintain.indexType=IVF_HNSW_SQ",
    )
    (cron,) = by_kind(docs, "CronJob")
    assert cron["spec"]["schedule"] == "0 */6 * * *"
    env = env_of(_cronjob_container(cron))
    assert env["TAGFLEET_EMBEDDINGS_MAINTAIN_INDEX_MIN_ROWS"]["value"] == "5000"
    assert env["TAGFLEET_EMBEDDINGS_MAINTAIN_INDEX_TYPE"]["value"] == "IVF_HNSW_SQ"
    off = render(helm, *MINIMAL, *on, "--set", "embeddings.maintain.enabled=false")
    assert not by_kind(off, "CronJob")
    assert env_of(container(off))["TAGFLEET_EMBEDDINGS"]["value"] == EMBEDDINGS
