"""Learning on the CPU with generated data: held-out quality, not "training ran".

Tiny random-init ViT (models/configs/tiny-vit.json); held-out sets are generated with other
seeds than the training sets and never seen in training or calibration.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from datagen import colour_folder, colours_jsonl

from models import Fleet, load_artifact, save_artifact
from models.backbones import load_backbone, resolve_ref
from models.datasets import load_dataset, read_images
from models.evaluate import evaluate
from models.train import TrainSpec, train

FAST = {"lr": 3e-2, "backbone_lr": 3e-3, "progress": False}


@pytest.mark.slow
def test_classify_finetune_reaches_090_held_out(tiny_config: str, tmp_path: Path) -> None:
    data = colour_folder(tmp_path / "train", 40, seed=1)  # 4 classes, 32 train + 8 val each
    spec = TrainSpec(type="classify", name="colour", backbone=tiny_config, mode="finetune",
                     epochs=25, seed=1, **FAST)
    artifact = save_artifact(train(str(data), spec), str(tmp_path / "artifact"))
    assert artifact.backbone_state is not None and artifact.manifest.temperature != 1.0
    report, _ = evaluate(str(tmp_path / "artifact"), str(colour_folder(tmp_path / "test", 25, 101)))
    assert report["metrics"]["accuracy"] >= 0.9, report["metrics"]


@pytest.mark.slow
def test_tags_reach_090_micro_f1_with_stored_thresholds(tiny_config: str, tmp_path: Path) -> None:
    data = colours_jsonl(tmp_path / "train", 200, seed=3)
    spec = TrainSpec(type="tags", name="colours", backbone=tiny_config, mode="finetune",
                     epochs=40, seed=3, **FAST)
    save_artifact(train(str(data), spec), str(tmp_path / "artifact"))
    artifact = load_artifact(str(tmp_path / "artifact"))
    thresholds = artifact.manifest.thresholds
    assert set(thresholds) == set(artifact.manifest.labels)
    assert any(abs(t - 0.5) > 0.01 for t in thresholds.values())  # chosen, not the default

    test_set = load_dataset(str(colours_jsonl(tmp_path / "test", 100, seed=103)), "tags",
                            labels=artifact.manifest.labels)
    report, _ = evaluate(artifact, test_set)
    assert report["metrics"]["micro_f1"] >= 0.9, report["metrics"]
    images, _ = read_images(test_set, 64)
    results = Fleet.from_artifacts([artifact]).predict(list(images[:20]), [(64, 64)] * 20)
    for r in results:  # inference applies the stored per-label thresholds
        got = {t["label"] for t in r["colours"]["tags"]}
        assert got == {k for k, s in r["colours"]["scores"].items() if s >= thresholds[k]}
        assert r["colours"]["thresholds"] == thresholds


@pytest.mark.slow
def test_training_from_zero_shot_init_learns(tiny_config: str, tmp_path: Path) -> None:
    data = colour_folder(tmp_path / "train", 20, seed=5)
    spec = TrainSpec(type="classify", name="colour", backbone=tiny_config, mode="finetune",
                     epochs=12, seed=5, zero_shot_init=True, **FAST)
    artifact = train(str(data), spec)
    report, _ = evaluate(artifact, str(colour_folder(tmp_path / "test", 20, 105)))
    assert report["metrics"]["accuracy"] >= 0.6, report["metrics"]  # chance is 0.25


def test_probe_trains_on_cached_embeddings_and_reuses_them(
    tiny_config: str, tmp_path: Path
) -> None:
    data = str(colour_folder(tmp_path / "train", 15, seed=7))
    backbone = load_backbone(resolve_ref(tiny_config))
    spec = TrainSpec(type="classify", name="colour", backbone=tiny_config, mode="probe",
                     seed=7, cache_dir=str(tmp_path / "cache"), progress=False)
    first = train(data, spec, backbone=backbone)
    first_calls = backbone.forward_calls
    second = train(data, spec, backbone=backbone)
    assert first_calls == 2  # one pass embeds all 60 images, one evaluates the held-out split
    assert backbone.forward_calls - first_calls == 1  # cache hit: only the evaluation pass

    r1 = json.loads(first.files["report.json"])
    r2 = json.loads(second.files["report.json"])
    assert r1["embedding_cache"] == {"hits": 0, "misses": 60}
    assert r2["embedding_cache"] == {"hits": 60, "misses": 0}
    assert second.manifest.version == first.manifest.version  # reproducible with a seed
    assert first.backbone_state is None and first.manifest.mode == "probe"
    assert np.isfinite(first.manifest.metrics["accuracy"])
