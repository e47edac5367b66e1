"""A function created zero-shot from label names runs end to end through a saved fleet."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from models import load_fleet, save_artifact, zero_shot
from models.fleet import FleetConfig, FleetEntry, write_fleet_config


def test_zero_shot_functions_run_end_to_end(
    tiny_config: str, images: list[np.ndarray], tmp_path: Path
) -> None:
    fruit = zero_shot("fruit", "classify", ["apple", "banana", "cherry"], tiny_config)
    colours = zero_shot("colours", "tags", ["red", "green", "blue"], tiny_config)
    save_artifact(fruit, str(tmp_path / "fruit"))
    save_artifact(colours, str(tmp_path / "colours"))
    write_fleet_config(
        tmp_path / "fleet.yaml",
        FleetConfig(
            functions=[
                FleetEntry(name="fruit", artifact="fruit"),
                FleetEntry(name="colours", artifact="colours"),
            ]
        ),
    )
    fleet = load_fleet(tmp_path / "fleet.yaml")
    assert fleet.input_size == 64
    assert set(fleet.functions) == {"fruit", "colours"}

    results = fleet.predict(images, [(640, 480)] * len(images))
    assert len(results) == len(images)
    for per_image in results:
        json.dumps(per_image)  # plain JSON types only
        c = per_image["fruit"]
        assert c["type"] == "classify" and c["version"] == fruit.manifest.version
        assert c["label"] in ("apple", "banana", "cherry")
        assert sum(c["scores"].values()) == pytest.approx(1.0, abs=1e-5)
        assert c["score"] == max(c["scores"].values())
        t = per_image["colours"]
        assert t["type"] == "tags" and set(t["scores"]) == {"red", "green", "blue"}
        assert all(tag["score"] >= t["thresholds"][tag["label"]] for tag in t["tags"])


def test_zero_shot_rejects_detect(tiny_config: str) -> None:
    with pytest.raises(ValueError, match="classify and tags"):
        zero_shot("logo", "detect", ["logo"], tiny_config)
