"""Every container image the project refers to (compose, the Dockerfile's base, the chart's
rendered workloads) comes from a repository in infra/images.yaml: repositories checked by hand
to be published and maintained, with the date (no registry is reachable here). Pinning a tag
cannot see a repository that was deleted; this list can be reviewed when one is."""

from __future__ import annotations

import datetime
import re

import yaml
from deploy_helpers import REPO

LIST = yaml.safe_load((REPO / "infra" / "images.yaml").read_text())
KNOWN = {entry["repository"] for entry in LIST["repositories"]}


def repository(image: str) -> str:
    """`registry/path:tag@digest` -> `registry/path` (Docker Hub's `library/` and host kept off)."""
    name = image.split("@", 1)[0]
    if ":" in name.rsplit("/", 1)[-1]:
        name = name.rsplit(":", 1)[0]
    return name.removeprefix("docker.io/").removeprefix("library/")


def compose_images() -> dict[str, str]:
    services = yaml.safe_load((REPO / "infra" / "compose.yaml").read_text())["services"]
    return {name: svc["image"] for name, svc in services.items()}


def dockerfile_bases() -> list[str]:
    text = (REPO / "infra" / "Dockerfile").read_text()
    args = dict(re.findall(r"^ARG (\w+)=(\S+)$", text, re.M))
    return [args[ref] for ref in re.findall(r"^FROM \$\{(\w+)\}", text, re.M)]


def test_the_list_is_dated_and_names_the_removed_repositories() -> None:
    for entry in LIST["repositories"]:
        assert isinstance(entry["checked"], datetime.date) and entry["source"], entry
    assert {"minio/minio", "minio/mc"} <= set(LIST["removed"])
    assert not KNOWN & set(LIST["removed"])


def test_every_compose_image_is_a_maintained_repository() -> None:
    for service, image in compose_images().items():
        assert repository(image) in KNOWN, f"{service}: {image} is not in infra/images.yaml"
        assert repository(image) not in LIST["removed"], service


def test_the_dockerfile_base_is_maintained_and_pinned_by_digest() -> None:
    bases = dockerfile_bases()
    assert bases
    for image in bases:
        assert repository(image) in KNOWN, image
        assert re.search(r"@sha256:[0-9a-f]{64}$", image), f"{image}: pin the base by digest"


def test_every_chart_image_is_a_maintained_repository(rendered: dict[str, list[dict]]) -> None:
    for docs in rendered.values():
        for doc in docs:
            spec = doc.get("spec", {})
            pod = spec if doc["kind"] == "Pod" else spec.get("template", {}).get("spec", {})
            for c in pod.get("containers", []) + pod.get("initContainers", []):
                # Users push the tagfleet image to their own registry: its last path segment.
                name = repository(c["image"])
                assert name in KNOWN or name.rsplit("/", 1)[-1] in KNOWN, c["image"]
