"""A registry of immutable function versions: a folder or ``s3://`` prefix.

Layout::

    REGISTRY/FUNCTION/VERSION/      one artifact (models.artifacts), VERSION = its content hash
    REGISTRY/FUNCTION/index.json    the versions: creation time, parent, data fingerprint, metrics

A version is written once: publishing an artifact whose version is already there writes
nothing (same hash, same content). The index is rewritten atomically after the artifact is
complete, so a version in the index is always loadable; a version folder the index lacks (a
writer that died between the two) is listed too, from its manifest.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from models import storage
from models.artifacts import Artifact, load_manifest, save_artifact
from models.manifest import MANIFEST_FILE, FunctionType

INDEX_FILE = "index.json"


class VersionRecord(BaseModel):
    """One version of a function, as the index lists it."""

    model_config = ConfigDict(extra="ignore")

    version: str
    type: FunctionType
    labels: list[str]
    created_at: datetime | None = None
    parent: str | None = None
    training_data_hash: str | None = None
    metrics: dict[str, Any] = Field(default_factory=dict)


class VersionIndex(BaseModel):
    model_config = ConfigDict(extra="ignore")

    function: str
    versions: list[VersionRecord] = Field(default_factory=list)


def function_uri(registry: str, function: str) -> str:
    return storage.join(registry, function)


def version_uri(registry: str, function: str, version: str) -> str:
    """Where ``version`` of ``function`` lives in ``registry``."""
    return storage.join(function_uri(registry, function), version)


def read_index(registry: str, function: str) -> VersionIndex:
    """The function's versions, oldest first (empty for an unknown function)."""
    try:
        raw = storage.read_bytes(storage.join(function_uri(registry, function), INDEX_FILE))
        index = VersionIndex.model_validate(json.loads(raw))
    except FileNotFoundError:
        index = VersionIndex(function=function)
    known = {r.version for r in index.versions}
    for path in storage.list_files(function_uri(registry, function)):
        parts = path.replace("\\", "/").rstrip("/").split("/")
        if parts[-1] != MANIFEST_FILE or len(parts) < 2 or parts[-2] in known:
            continue
        manifest = load_manifest(path.rsplit("/", 1)[0])  # a version the index lacks
        index.versions.append(_record(manifest.model_dump(), parent=None, created=None))
        known.add(parts[-2])
    return index


def has_version(registry: str, function: str, version: str) -> bool:
    return storage.exists(storage.join(version_uri(registry, function, version), MANIFEST_FILE))


def latest(registry: str, function: str) -> str | None:
    """The newest version in the index, if any."""
    versions = read_index(registry, function).versions
    return versions[-1].version if versions else None


def publish(artifact: Artifact, registry: str, parent: str | None) -> tuple[Artifact, bool]:
    """Write ``artifact`` as a new version of its function; return it with its version and
    whether it was new. An existing version is never written over (it is the same content)."""
    artifact = artifact.with_version()
    m = artifact.manifest
    assert m.version is not None
    dest = version_uri(registry, m.name, m.version)
    if has_version(registry, m.name, m.version):
        return artifact, False
    index = read_index(registry, m.name)  # before the new folder, which it would list
    artifact = save_artifact(artifact, dest)
    if m.version not in {r.version for r in index.versions}:
        index.versions.append(_record(m.model_dump(), parent=parent, created=datetime.now(UTC)))
    body = index.model_dump_json(indent=2).encode()
    storage.write_atomic(storage.join(function_uri(registry, m.name), INDEX_FILE), body)
    return artifact, True


def _record(
    manifest: dict[str, Any], parent: str | None, created: datetime | None
) -> VersionRecord:
    return VersionRecord(
        version=manifest["version"],
        type=manifest["type"],
        labels=manifest["labels"],
        created_at=created,
        parent=parent,
        training_data_hash=manifest.get("training_data_hash"),
        metrics=manifest.get("metrics", {}),
    )
