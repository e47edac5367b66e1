"""Learning on the CPU with generated data: held-out quality, not "training ran".

Tiny random-init ViT (models/configs/tiny-vit.json) trained with the recipes of
``models.recipes`` (the demo's too); held-out sets are generated with other seeds than the
training sets and never seen in training or calibration.

CI runs each learning test with one committed seed (data and training). A local seed sweep
runs two more per test: ``TAGFLEET_SEED_SWEEP=1 pytest -m slow tests/models/test_learning.py``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from datagen import colour_folder, colours_jsonl

from models import Fleet, load_artifact, save_artifact
from models.backbones import load_backbone, resolve_ref
from models.data.labelled import read_images
from models.data.load import load_dataset
from models.evaluate import evaluate
from models.recipes import demo_classify_spec, demo_tags_spec
from models.train import TrainSpec, train


def seeds(committed: int, *others: int) -> list[int]:
    """The committed seed; with ``TAGFLEET_SEED_SWEEP=1`` (local runs) the others too."""
    return [committed, *others] if os.environ.get("TAGFLEET_SEED_SWEEP") == "1" else [committed]


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    """Tiny models train 10-30x faster on one thread than on two on a shared, busy CPU."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.mark.slow
@pytest.mark.parametrize("seed", seeds(1, 11, 21))
def test_classify_finetune_reaches_090_held_out(seed: int, tmp_path: Path) -> None:
    data = colour_folder(tmp_path / "train", 40, seed=seed)  # 4 classes, 32 train + 8 val each
    spec = demo_classify_spec("colour", seed=seed, progress=False)
    artifact = save_artifact(train(str(data), spec), str(tmp_path / "artifact"))
    assert artifact.backbone_state is not None and artifact.manifest.temperature != 1.0
    test_set = str(colour_folder(tmp_path / "test", 25, seed + 100))
    report, _ = evaluate(str(tmp_path / "artifact"), test_set)
    assert report["metrics"]["accuracy"] >= 0.9, report["metrics"]
    # the colour of a large shape: patch evidence adds nothing, the pooled-only head stays
    candidates = artifact.manifest.training["candidates"]
    assert candidates["pooled"] >= candidates["patch_max"], candidates
    assert artifact.manifest.head["pooling"] == "pooled"


@pytest.mark.slow
@pytest.mark.parametrize("seed", seeds(3, 13, 23))
def test_tags_reach_090_micro_f1_with_stored_thresholds(seed: int, tmp_path: Path) -> None:
    data = colours_jsonl(tmp_path / "train", 200, seed=seed)
    spec = demo_tags_spec("colours", seed=seed, progress=False)
    save_artifact(train(str(data), spec), str(tmp_path / "artifact"))
    artifact = load_artifact(str(tmp_path / "artifact"))
    thresholds = artifact.manifest.thresholds
    assert set(thresholds) == set(artifact.manifest.labels)
    assert any(abs(t - 0.5) > 0.01 for t in thresholds.values())  # chosen, not the default

    test_set = load_dataset(
        str(colours_jsonl(tmp_path / "test", 100, seed=seed + 100)),
        "tags",
        labels=artifact.manifest.labels,
    )
    report, _ = evaluate(artifact, test_set)
    assert report["metrics"]["micro_f1"] >= 0.9, report["metrics"]
    images, _ = read_images(test_set, 64)
    results = Fleet.from_artifacts([artifact]).predict(list(images[:20]), [(64, 64)] * 20)
    for r in results:  # inference applies the stored per-label thresholds
        got = {t["label"] for t in r["colours"]["tags"]}
        assert got == {k for k, s in r["colours"]["scores"].items() if s >= thresholds[k]}
        assert r["colours"]["thresholds"] == thresholds


@pytest.mark.slow
@pytest.mark.parametrize("seed", seeds(5, 15, 25))
def test_training_from_zero_shot_init_learns(seed: int, tmp_path: Path) -> None:
    data = colour_folder(tmp_path / "train", 20, seed=seed)
    spec = demo_classify_spec("colour", seed=seed, zero_shot_init=True, progress=False)
    artifact = train(str(data), spec)
    report, _ = evaluate(artifact, str(colour_folder(tmp_path / "test", 20, seed + 100)))
    assert report["metrics"]["accuracy"] >= 0.6, report["metrics"]  # chance is 0.25


def test_probe_trains_on_cached_embeddings_and_reuses_them(
    tiny_config: str, tmp_path: Path
) -> None:
    data = str(colour_folder(tmp_path / "train", 15, seed=7))
    backbone = load_backbone(resolve_ref(tiny_config))
    spec = TrainSpec(
        type="classify",
        name="colour",
        backbone=tiny_config,
        mode="probe",
        seed=7,
        cache_dir=str(tmp_path / "cache"),
        progress=False,
    )
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
