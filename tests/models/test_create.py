"""``create``: a zero-shot function from label names, calibrated on a few labelled samples."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from datagen import colour_folder, colours_jsonl

# evaluate from the package, not ``models.evaluate``: importing that module first would leave
# the package attribute ``models.evaluate`` the module, for every later ``from models import``
from models import Fleet, evaluate, load_artifact, save_artifact
from models.create import create, read_prompts
from models.manifest import Mode

LABELS = ["blue", "green", "red", "yellow"]


def test_a_tags_function_from_names_gets_thresholds_a_report_and_serves(
    tiny_config: str, tmp_path: Path
) -> None:
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("# mine\na {} thing\nsomething {}\n")
    samples = str(colours_jsonl(tmp_path / "calibrate", 30, seed=2))
    artifact = create(
        "colours", "tags", LABELS, tiny_config, prompts=str(prompts), calibrate=samples
    )
    m = artifact.manifest
    assert m.mode == Mode.ZERO_SHOT and m.head["templates"] == ["a {} thing", "something {}"]
    assert set(m.thresholds) == set(LABELS)
    assert set(m.metrics) == {"micro_f1", "macro_f1"}
    report = json.loads(artifact.files["report.json"])
    assert report["version"] == m.version and report["metrics"]["samples"] == 30

    saved = save_artifact(artifact, str(tmp_path / "fn"))
    loaded = load_artifact(str(tmp_path / "fn"))
    assert loaded.manifest.version == saved.manifest.version
    image = np.zeros((64, 64, 3), dtype=np.uint8)
    result = Fleet.from_artifacts([loaded]).predict([image], [(640, 480)])[0]["colours"]
    assert result["thresholds"] == pytest.approx(m.thresholds)
    again, _ = evaluate(str(tmp_path / "fn"), str(colours_jsonl(tmp_path / "more", 10, seed=3)))
    assert again["metrics"]["samples"] == 10


def test_a_classify_function_from_names_gets_a_temperature(
    tiny_config: str, tmp_path: Path
) -> None:
    samples = str(colour_folder(tmp_path / "calibrate", 5, seed=4))
    plain = create("colour", "classify", LABELS, tiny_config)
    fitted = create("colour", "classify", LABELS, tiny_config, calibrate=samples)
    assert plain.manifest.temperature == 1.0 and not plain.files
    assert fitted.manifest.temperature != 1.0 and "report.md" in fitted.files


def test_prompts_need_a_place_for_the_label(tmp_path: Path) -> None:
    bad = tmp_path / "bad.txt"
    bad.write_text("a photo\n")
    with pytest.raises(ValueError, match="needs a"):
        read_prompts(str(bad))
