"""Artifacts: saved and loaded exactly (local dir and s3://), version = content hash."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from models import Fleet, load_artifact, save_artifact, zero_shot
from models.artifacts import Artifact
from models.backbones import load_backbone, resolve_ref
from models.manifest import Mode


def _outputs(artifact: Artifact, images: list[np.ndarray]) -> list[dict]:
    return Fleet.from_artifacts([artifact]).predict(images, [(64, 64)] * len(images))


def test_local_round_trip_gives_identical_outputs(
    tiny_config: str, images: list[np.ndarray], tmp_path: Path
) -> None:
    artifact = zero_shot("c", "classify", ["a", "b", "c"], tiny_config)
    artifact = save_artifact(artifact, str(tmp_path))
    loaded = load_artifact(str(tmp_path))
    assert loaded.manifest == artifact.manifest
    assert loaded.manifest.backbone.config is not None  # self-contained
    assert _outputs(loaded, images) == _outputs(artifact, images)


def test_finetune_artifact_carries_its_backbone(
    tiny_config: str, images: list[np.ndarray], tmp_path: Path
) -> None:
    base = zero_shot("t", "tags", ["x", "y"], tiny_config)
    own = load_backbone(resolve_ref(tiny_config, "random:3")).model.state_dict()
    tuned = Artifact(base.manifest.model_copy(update={"mode": Mode.FINETUNE}), base.head_state, own)
    saved = save_artifact(tuned, str(tmp_path / "t"))
    assert (tmp_path / "t" / "backbone.safetensors").exists()
    loaded = load_artifact(str(tmp_path / "t"))
    assert _outputs(loaded, images) == _outputs(saved, images)
    fleet = Fleet.from_artifacts([saved, base])
    assert len(fleet.backbones) == 2  # its own pass, not shared with the base backbone


def test_version_is_a_content_hash_and_tampering_is_detected(
    tiny_config: str, tmp_path: Path
) -> None:
    artifact = zero_shot("c", "classify", ["a", "b"], tiny_config)
    again = zero_shot("c", "classify", ["a", "b"], tiny_config)
    assert artifact.manifest.version == again.manifest.version
    other = zero_shot("c", "classify", ["a", "d"], tiny_config)
    assert other.manifest.version != artifact.manifest.version
    save_artifact(artifact, str(tmp_path))
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    manifest["temperature"] = 2.0
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ValueError, match="does not match its content"):
        load_artifact(str(tmp_path))


def test_s3_round_trip_gives_identical_outputs(
    tiny_config: str, images: list[np.ndarray], new_bucket: Callable[..., str]
) -> None:
    bucket = new_bucket()
    artifact = zero_shot("colours", "tags", ["red", "green"], tiny_config)
    uri = f"s3://{bucket}/functions/colours"
    save_artifact(artifact, uri)
    loaded = load_artifact(uri)
    assert loaded.manifest == artifact.manifest
    assert _outputs(loaded, images) == _outputs(artifact, images)
    for key in artifact.head_state:
        assert torch.equal(loaded.head_state[key], artifact.head_state[key])
