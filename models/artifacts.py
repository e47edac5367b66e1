"""Function artifacts: a directory or ``s3://`` prefix with the manifest, weights and report.

Layout::

    manifest.json            the Manifest, ``version`` = content hash
    head.safetensors         head weights
    backbone.safetensors     only in finetune mode: the function's own backbone weights
    report.json, report.md, *.png   evaluation report (not part of the version)

Loading verifies the version against the content, so a half-written or edited artifact fails
loudly instead of serving under a wrong version.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field, replace

from models import storage
from models.manifest import MANIFEST_FILE, Manifest, Mode
from models.weights import StateDict, state_dict_bytes, state_dict_from_bytes

HEAD_FILE = "head.safetensors"
BACKBONE_FILE = "backbone.safetensors"
REPORT_FILES = ("report.json", "report.md")


@dataclass
class Artifact:
    """A function in memory. ``files`` holds the report files (name -> bytes)."""

    manifest: Manifest
    head_state: StateDict
    backbone_state: StateDict | None = None
    files: dict[str, bytes] = field(default_factory=dict)

    def blobs(self) -> list[bytes]:
        """The weight files' bytes, in the order the version hashes them."""
        blobs = [state_dict_bytes(self.head_state)]
        if self.backbone_state is not None:
            blobs.append(state_dict_bytes(self.backbone_state))
        return blobs

    def backbone_weights_id(self) -> str | None:
        """Identity of the artifact's own backbone weights (finetune mode), else ``None``."""
        if self.backbone_state is None:
            return None
        return "sha256:" + hashlib.sha256(state_dict_bytes(self.backbone_state)).hexdigest()[:16]

    def with_version(self) -> Artifact:
        """A copy whose manifest carries its content hash as ``version``."""
        version = self.manifest.content_hash(self.blobs())
        return replace(self, manifest=self.manifest.model_copy(update={"version": version}))


def save_artifact(artifact: Artifact, dest: str) -> Artifact:
    """Write ``artifact`` to a local directory or ``s3://`` prefix; return it with its version.

    The manifest is written last, so a reader never sees a manifest without its weights.
    """
    artifact = artifact.with_version()
    blobs = artifact.blobs()
    storage.write_bytes(storage.join(dest, HEAD_FILE), blobs[0])
    if artifact.backbone_state is not None:
        storage.write_bytes(storage.join(dest, BACKBONE_FILE), blobs[1])
    for name, data in artifact.files.items():
        storage.write_bytes(storage.join(dest, name), data)
    body = artifact.manifest.model_dump_json(indent=2).encode()
    storage.write_bytes(storage.join(dest, MANIFEST_FILE), body)
    return artifact


def load_manifest(src: str) -> Manifest:
    """Read and validate only the manifest of the artifact at ``src``."""
    try:
        data = storage.read_bytes(storage.join(src, MANIFEST_FILE))
    except FileNotFoundError as exc:
        raise FileNotFoundError(f"no artifact at {src}: {MANIFEST_FILE} missing") from exc
    return Manifest.model_validate(json.loads(data))


def load_artifact(src: str, with_files: bool = False) -> Artifact:
    """Load the artifact at ``src``; ``ValueError`` when its content does not match its version.

    ``with_files`` also reads the report files named in ``REPORT_FILES``.
    """
    manifest = load_manifest(src)
    head = state_dict_from_bytes(storage.read_bytes(storage.join(src, HEAD_FILE)))
    backbone = None
    if manifest.mode == Mode.FINETUNE:
        backbone = state_dict_from_bytes(storage.read_bytes(storage.join(src, BACKBONE_FILE)))
    files: dict[str, bytes] = {}
    if with_files:
        for name in REPORT_FILES:
            if storage.exists(storage.join(src, name)):
                files[name] = storage.read_bytes(storage.join(src, name))
    artifact = Artifact(manifest, head, backbone, files)
    expected = manifest.content_hash(artifact.blobs())
    if manifest.version != expected:
        raise ValueError(
            f"artifact {src}: version {manifest.version} does not match its content ({expected})"
        )
    return artifact
