"""detect learns: scenes of 1 to 4 shapes of two classes, held-out mAP@0.5 >= 0.5.

Tiny random-init ViT fine-tuned on the CPU; the held-out set is generated with another seed
and never seen in training or threshold calibration.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from detect_data import coco_scenes

from models import evaluate, load_artifact, save_artifact, train
from models.train import TrainSpec


@pytest.mark.slow
def test_detect_finetune_reaches_050_map50_held_out(tiny_config: str, tmp_path: Path) -> None:
    data = coco_scenes(tmp_path / "train", 100, seed=11)
    spec = TrainSpec(
        type="detect",
        name="shapes",
        backbone=tiny_config,
        mode="finetune",
        epochs=12,
        lr=3e-3,
        backbone_lr=1e-3,
        seed=11,
        progress=False,
    )
    save_artifact(train(str(data), spec), str(tmp_path / "artifact"))
    artifact = load_artifact(str(tmp_path / "artifact"))
    report, files = evaluate(artifact, str(coco_scenes(tmp_path / "test", 50, seed=111)))
    metrics = report["metrics"]
    print(json.dumps({k: metrics[k] for k in ("map50", "map50_95")}))
    assert metrics["map50"] >= 0.5, metrics
    assert all(m["ap50"] >= 0.3 for m in metrics["per_label"].values()), metrics
    assert {"pr_red.png", "pr_blue.png", "report.json", "report.md"} <= set(files)
