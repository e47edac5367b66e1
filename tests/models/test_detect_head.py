"""The detect head: box mapping to original pixels, NMS, thresholds, round trip, fleet sharing."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from models import Fleet, load_artifact, save_artifact, zero_shot
from models.artifacts import Artifact
from models.backbones import resolve_ref
from models.data.coco import DetectSample, input_boxes
from models.heads.detect import results
from models.manifest import Manifest

GRID = 4  # cells in the crafted raw outputs


def _manifest(thresholds: dict[str, float] | None = None, tiny: str = "tiny-vit") -> Manifest:
    return Manifest(
        name="logo",
        type="detect",
        labels=["logo", "text"],
        backbone=resolve_ref(tiny),
        thresholds=thresholds or {"*": 0.5},
        head={"nms_iou": 0.5, "max_detections": 10},
        version="v1",
    )


def _raw(cells: list[tuple[int, int, float, list[float]]]) -> dict[str, torch.Tensor]:
    """One image; each (cell, label, score, normalised box) sets that cell's output."""
    logits = torch.full((1, GRID, 2), -20.0)
    boxes = torch.zeros(1, GRID, 4)
    for cell, label, p, box in cells:
        logits[0, cell, label] = float(torch.logit(torch.tensor(p * p)))  # score = sqrt(p²·1)
        boxes[0, cell] = torch.tensor(box)
    return {"logits": logits, "centerness": torch.full((1, GRID), 20.0), "boxes": boxes}


def test_boxes_map_back_to_a_non_square_original_and_are_clipped() -> None:
    raw = _raw([(0, 0, 0.9, [0.25, 0.5, 0.5, 0.75]), (1, 1, 0.8, [0.9, -0.1, 1.2, 0.2])])
    [out] = results(raw, _manifest(), [(640, 480)])
    assert out["type"] == "detect" and out["version"] == "v1"
    first, second = out["objects"]
    assert first["label"] == "logo" and first["score"] == pytest.approx(0.9)
    assert first["box"] == pytest.approx([160, 240, 320, 360])
    assert second["box"] == pytest.approx([576, 0, 640, 96])
    assert all(type(v) is float for o in out["objects"] for v in [o["score"], *o["box"]])


def test_coco_boxes_scale_into_the_model_input_and_back() -> None:
    sample = DetectSample("x.png", ("logo",), ((160.0, 240.0, 320.0, 360.0),), (640, 480))
    inside = input_boxes(sample, (640, 480), 64)
    assert inside[0].tolist() == pytest.approx([16, 32, 32, 48])
    [out] = results(_raw([(0, 0, 0.9, (inside[0] / 64).tolist())]), _manifest(), [(640, 480)])
    assert out["objects"][0]["box"] == pytest.approx([160, 240, 320, 360])


def test_nms_removes_duplicates_of_one_label_only() -> None:
    box = [0.1, 0.1, 0.5, 0.5]
    raw = _raw(
        [
            (0, 0, 0.9, box),
            (1, 0, 0.8, [0.11, 0.1, 0.5, 0.52]),
            (2, 1, 0.7, box),
            (3, 0, 0.6, [0.6, 0.6, 0.9, 0.9]),
        ]
    )
    [out] = results(raw, _manifest(), [(100, 100)])
    assert [(o["label"], round(o["score"], 2)) for o in out["objects"]] == [
        ("logo", 0.9),
        ("text", 0.7),
        ("logo", 0.6),
    ]


def test_thresholds_per_label_then_global() -> None:
    raw = _raw([(0, 0, 0.6, [0.1, 0.1, 0.3, 0.3]), (3, 1, 0.6, [0.6, 0.6, 0.9, 0.9])])
    [out] = results(raw, _manifest({"*": 0.5, "logo": 0.7}), [(100, 100)])
    assert [o["label"] for o in out["objects"]] == ["text"]
    # every label's threshold travels with the result (provenance, review flagging)
    assert out["thresholds"] == {"logo": 0.7, "text": 0.5}


def test_boxes_above_the_floor_are_kept_as_candidates_and_the_objects_stay() -> None:
    raw = _raw(
        [
            (0, 0, 0.9, [0.1, 0.1, 0.4, 0.4]),
            (1, 0, 0.3, [0.6, 0.6, 0.9, 0.9]),
            (2, 1, 0.2, [0.1, 0.6, 0.3, 0.9]),
            (3, 1, 0.04, [0.5, 0.1, 0.9, 0.3]),  # below the floor (0.05)
        ]
    )
    [out] = results(raw, _manifest(), [(100, 100)])
    assert [(o["label"], round(o["score"], 2)) for o in out["objects"]] == [("logo", 0.9)]
    assert [(o["label"], round(o["score"], 2)) for o in out["candidates"]] == [
        ("logo", 0.9),
        ("logo", 0.3),
        ("text", 0.2),
    ]
    assert out["score_floor"] == 0.05
    # the floor and the bound are the manifest's; the objects do not depend on them
    manifest = _manifest()
    bounded = manifest.model_copy(update={"head": {**manifest.head, "max_candidates": 1}})
    [few] = results(raw, bounded, [(100, 100)])
    assert few["objects"] == out["objects"] and len(few["candidates"]) == 2
    high = manifest.model_copy(update={"head": {**manifest.head, "score_floor": 0.25}})
    [none_below] = results(raw, high, [(100, 100)])
    assert [round(o["score"], 2) for o in none_below["candidates"]] == [0.9, 0.3]


def _random_detect(tiny_config: str, seed: int = 0) -> Artifact:
    """An untrained detect artifact on the tiny backbone that reports every candidate."""
    manifest = Manifest(
        name="things",
        type="detect",
        labels=["a", "b"],
        backbone=resolve_ref(tiny_config),
        thresholds={"*": 0.0},
    )
    from models.backbones import load_backbone
    from models.function import build_head

    torch.manual_seed(seed)
    head = build_head(manifest, load_backbone(manifest.backbone))
    return Artifact(manifest, {k: v.clone() for k, v in head.state_dict().items()})


def test_artifact_round_trip_gives_identical_detections(
    tiny_config: str, tmp_path: Path, images: list[np.ndarray]
) -> None:
    saved = save_artifact(_random_detect(tiny_config), str(tmp_path / "det"))
    sizes = [(640, 480), (64, 64), (100, 300)] * 2
    before = Fleet.from_artifacts([saved]).predict(images, sizes)
    after = Fleet.from_artifacts([load_artifact(str(tmp_path / "det"))]).predict(images, sizes)
    assert before == after
    objects = before[0]["things"]["objects"]
    assert 0 < len(objects) <= 100
    assert all(
        0 <= o["box"][0] <= o["box"][2] <= 640 and 0 <= o["box"][1] <= o["box"][3] <= 480
        for o in objects
    )


def test_classify_tags_and_detect_on_one_backbone_run_it_once_per_batch(
    tiny_config: str, images: list[np.ndarray]
) -> None:
    fleet = Fleet.from_artifacts(
        [
            zero_shot("shape", "classify", ["circle", "square"], tiny_config),
            zero_shot("colours", "tags", ["red", "blue"], tiny_config),
            _random_detect(tiny_config),
        ]
    )
    assert len(fleet.backbones) == 1
    backbone = next(iter(fleet.backbones.values()))
    for _ in range(3):
        out = fleet.predict(images, [(640, 480)] * len(images))
        assert all(set(r) == {"shape", "colours", "things"} for r in out)
        assert out[0]["things"]["type"] == "detect"
    assert backbone.forward_calls == 3
