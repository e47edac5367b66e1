"""``Fleet.predict`` routes functions with a tiling through the tiles the decoder cut, and
every other function through the one whole-image pass."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from models import Fleet
from models.artifacts import Artifact
from models.backbones import Backbone, load_backbone, resolve_ref
from models.function import Function, build_head
from models.manifest import Manifest
from models.preprocess import preprocess_image
from models.tiling import Tiling, cut_tile_set, predict_tiled

TILE = {"tile": 48, "overlap": 0.25}


def _artifact(backbone: Backbone, config: str, name: str, kind: str, **head: Any) -> Artifact:
    manifest = Manifest(
        name=name,
        type=kind,
        labels=["a", "b", "c"],
        backbone=resolve_ref(config),
        thresholds={"*": 0.0} if kind == "detect" else {},
        head=head,
    )
    torch.manual_seed(len(name))
    state = {k: v.clone() for k, v in build_head(manifest, backbone).state_dict().items()}
    return Artifact(manifest, state).with_version()


@pytest.fixture
def fleet_parts(tiny_config: str) -> tuple[Fleet, Backbone, dict[str, Artifact]]:
    backbone = load_backbone(resolve_ref(tiny_config), device="cpu")
    artifacts = {
        "whole": _artifact(backbone, tiny_config, "whole", "classify", pooling="patch_max"),
        "tiled": _artifact(
            backbone, tiny_config, "tiled", "classify", pooling="patch_max", tiling=TILE
        ),
        "things": _artifact(
            backbone, tiny_config, "things", "detect", nms_iou=0.5, max_detections=30, tiling=TILE
        ),
    }
    fleet = Fleet.from_artifacts(
        list(artifacts.items()), device="cpu", backbones={backbone.key: backbone}
    )
    return fleet, backbone, artifacts


def test_tiled_functions_read_the_tiles_and_the_others_the_whole_image(
    fleet_parts: tuple[Fleet, Backbone, dict[str, Artifact]],
) -> None:
    fleet, backbone, artifacts = fleet_parts
    assert fleet.tilings == (Tiling(48, 0.25),)
    rng = np.random.default_rng(1)
    images = [Image.fromarray(rng.integers(0, 256, (96, 160, 3), dtype=np.uint8)) for _ in "ab"]
    size = fleet.input_size
    whole = [preprocess_image(im, size) for im in images]
    tile_sets = [[cut_tile_set(im, Tiling(48, 0.25), size, max_tiles=64)] for im in images]
    assert len(tile_sets[0][0].array) == 5 * 3  # stride 36 over 160 x 96, the last at the edge

    served = fleet.predict(whole, [(160, 96)] * 2, tiles=tile_sets)
    untiled = fleet.predict(whole, [(160, 96)] * 2)  # no tiles given: every function whole
    for sets, got, plain in zip(tile_sets, served, untiled, strict=True):
        (tile_set,) = sets
        expected = predict_tiled(Function(artifacts["tiled"], backbone), tile_set.array, (160, 96))
        assert got["tiled"]["label"] == expected["label"]
        for label, score in expected["scores"].items():
            assert got["tiled"]["scores"][label] == pytest.approx(score, abs=1e-5)
        assert got["tiled"]["scores"] != plain["tiled"]["scores"]  # the tiles were read
        assert got["whole"] == plain["whole"]  # the untiled function: the one-pass batch

        boxes = predict_tiled(
            Function(artifacts["things"], backbone),
            tile_set.array,
            (160, 96),
            boxes=tile_set.boxes,
        )["objects"]
        objects = got["things"]["objects"]
        assert [o["label"] for o in objects] == [o["label"] for o in boxes]
        assert np.allclose([o["box"] for o in objects], [o["box"] for o in boxes], atol=1e-4)
        # in the original's pixels: inside the image, and found beyond the first tile too
        assert all(0 <= o["box"][0] <= o["box"][2] <= 160 + 1e-3 for o in objects)
        assert all(0 <= o["box"][1] <= o["box"][3] <= 96 + 1e-3 for o in objects)
        assert max(o["box"][2] for o in objects) > 48
        # the boxes kept above the floor (retag) are the image's too, the objects among them
        candidates = got["things"]["candidates"]
        assert all(0 <= o["box"][0] <= o["box"][2] <= 160 + 1e-3 for o in candidates)
        assert max(o["box"][2] for o in candidates) > 48
        assert all(any(o["box"] == c["box"] for c in candidates) for o in objects)


def test_a_selection_without_the_tiled_function_encodes_no_tile(
    fleet_parts: tuple[Fleet, Backbone, dict[str, Artifact]], monkeypatch: pytest.MonkeyPatch
) -> None:
    import models.fleet

    fleet, _, _ = fleet_parts
    image = Image.fromarray(np.zeros((96, 160, 3), dtype=np.uint8))
    tile_set = cut_tile_set(image, Tiling(48, 0.25), fleet.input_size, max_tiles=64)
    encoded: list[int] = []
    real = models.fleet.encode_tiles

    def counting(backbone: Backbone, tiles: np.ndarray) -> Any:
        encoded.append(len(tiles))
        return real(backbone, tiles)

    monkeypatch.setattr(models.fleet, "encode_tiles", counting)
    whole = [preprocess_image(image, fleet.input_size)]
    got = fleet.predict(whole, [(160, 96)], [["whole"]], tiles=[[tile_set]])[0]
    assert set(got) == {"whole"} and encoded == []
    got = fleet.predict(whole, [(160, 96)], [["tiled", "things"]], tiles=[[tile_set]])[0]
    assert set(got) == {"tiled", "things"}
    assert encoded == [15]  # one tiling: its tiles encoded once for both functions
    with pytest.raises(ValueError, match="tile lists"):
        fleet.predict(whole, [(160, 96)], tiles=[[tile_set], [tile_set]])


def test_tiled_functions_name_the_tilings_each_function_reads(
    fleet_parts: tuple[Fleet, Backbone, dict[str, Artifact]],
) -> None:
    fleet, _, _ = fleet_parts
    assert fleet.tiled_functions == {"tiled": (Tiling(48, 0.25),), "things": (Tiling(48, 0.25),)}
