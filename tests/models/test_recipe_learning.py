"""The training recipe of issue 17, learned on generated data (held-out quality, CPU).

Surfaces (``models.synthetic.surfaces_folder``): clean textures, textures with one small dark
mark (8-12 px in a 250 px image, 2-3 px at the tiny backbone's 64 px input), textures stained
over the whole surface; unequal class sizes with the local class the smallest. The held-out
set is generated with another seed and never seen in training, selection or calibration.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from datagen import colour_folder

from models import Fleet
from models.artifacts import Artifact
from models.evaluate import evaluate
from models.function import Function
from models.preprocess import preprocess_image
from models.recipes import demo_classify_spec, surfaces_spec
from models.synthetic import surface_image, surfaces_folder
from models.tiling import Tiling, cut_tiles, predict_tiled
from models.train import train

TRAIN_COUNTS = {"clean": 120, "whole": 80, "local": 40}
TEST_COUNTS = {"clean": 30, "whole": 30, "local": 30}


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    """Tiny models train 10-30x faster on one thread than on two on a shared, busy CPU."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _recalls(report: dict[str, Any]) -> dict[str, float]:
    return {label: m["recall"] for label, m in report["metrics"]["per_label"].items()}


@pytest.fixture(scope="module")
def surfaces(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str, Artifact]:
    """(training data, held-out data, the function the default recipe trains on them), once.

    The function serves images larger than two tiles in tiles of 250 px, its training scale.
    """
    root = tmp_path_factory.mktemp("surfaces")
    data = str(surfaces_folder(root / "train", TRAIN_COUNTS, seed=0))
    held_out = str(surfaces_folder(root / "test", TEST_COUNTS, seed=100))
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return data, held_out, train(data, surfaces_spec("surface", tile=250, progress=False))
    finally:
        torch.set_num_threads(before)


@pytest.mark.slow
def test_default_recipe_finds_small_marks_the_plain_recipe_misses(
    surfaces: tuple[str, str, Artifact],
) -> None:
    data, held_out, default = surfaces
    plain = train(data, surfaces_spec("surface", recipe="plain", progress=False))
    plain_report, _ = evaluate(plain, held_out)
    assert _recalls(plain_report)["local"] < 0.8, plain_report["metrics"]  # the failure

    report, _ = evaluate(default, held_out)
    assert report["metrics"]["macro_f1"] >= 0.9, report["metrics"]
    assert min(_recalls(report).values()) >= 0.8, report["metrics"]

    training = default.manifest.training  # the choices, recorded in the manifest and report
    assert training["recipe"]["recipe"] == "default"
    assert training["recipe"]["balance"] == "sampler" and training["recipe"]["select"] == "best"
    assert set(training["candidates"]) == {"pooled", "patch_max"}
    assert default.manifest.head["pooling"] == training["pooling"]
    assert plain.manifest.head["pooling"] == "pooled"
    recorded = json.loads(default.files["report.json"])["training"]
    assert [run["pooling"] for run in recorded["runs"]] == ["pooled", "patch_max"]
    assert recorded["seconds"] > 0
    assert "## Training" in default.files["report.md"].decode()


@pytest.mark.slow
def test_tiles_find_a_small_mark_in_a_large_image_that_one_resize_misses(
    surfaces: tuple[str, str, Artifact], tmp_path: Path
) -> None:
    artifact = surfaces[2]
    fleet = Fleet.from_artifacts([artifact])
    function = Function(artifact, next(iter(fleet.backbones.values())))
    tiling = Tiling.of(artifact.manifest)
    assert tiling is not None and tiling.tile == 250
    rng = np.random.default_rng(7)
    for kind in ("local", "local", "clean", "clean"):
        image = surface_image(rng, kind, 2000, height=1500)  # marks of 10-14 px, as trained
        whole = fleet.predict([preprocess_image(image, fleet.input_size)], [(2000, 1500)])[0]
        tiles = cut_tiles(image, tiling, fleet.input_size)
        assert len(tiles) == 11 * 8  # 250 px tiles, a quarter shared with each neighbour
        tiled = predict_tiled(function, tiles, (2000, 1500))
        assert tiled["label"] == kind, (kind, tiled["scores"])
        assert whole["surface"]["label"] == "clean", whole  # the resize drops the mark

    # tagfleet eval scores a tiled function as it is served: in tiles of the originals
    large = tmp_path / "large"
    for kind in ("local", "clean"):
        (large / kind).mkdir(parents=True)
        for i in range(3):
            surface_image(rng, kind, 2000, height=1500).save(large / kind / f"{i}.png")
    tiled_report, _ = evaluate(artifact, str(large))
    assert tiled_report["metrics"]["accuracy"] == 1.0, tiled_report["metrics"]
    head = {"pooling": artifact.manifest.head["pooling"]}  # the same function without tiles
    resized = replace(artifact, manifest=artifact.manifest.model_copy(update={"head": head}))
    resized_report, _ = evaluate(resized.with_version(), str(large))
    assert _recalls(resized_report)["local"] == 0.0, resized_report["metrics"]


@pytest.mark.slow
def test_the_saved_function_is_the_best_epoch_not_the_last(tmp_path: Path) -> None:
    data = str(colour_folder(tmp_path / "train", 12, seed=4))
    # a warm-up over the whole run to learning rates far too high for the tiny tower: it
    # learns while the rate is low, then falls apart late
    late = {
        "epochs": 12,
        "patience": 0,
        "pooling": "pooled",
        "warmup_fraction": 0.95,
        "lr": 0.3,
        "backbone_lr": 0.03,
    }
    best = train(data, demo_classify_spec("colour", seed=4, progress=False, **late))
    last = train(data, demo_classify_spec("colour", seed=4, progress=False, select="last", **late))

    history = json.loads(best.files["report.json"])["training"]["runs"][0]["history"]
    assert history == json.loads(last.files["report.json"])["training"]["runs"][0]["history"]
    assert history[-1] < max(history)  # the schedule overfits late: the last epoch is worse
    # the saved function, evaluated through the serving path on the validation split
    assert best.manifest.metrics["macro_f1"] == pytest.approx(max(history), abs=1e-4)
    assert best.manifest.training["kept"] == history.index(max(history)) + 1
    assert last.manifest.metrics["macro_f1"] == pytest.approx(history[-1], abs=1e-4)


@pytest.mark.slow
def test_five_samples_per_label_give_kfold_figures_their_spread_and_a_warning(
    tmp_path: Path,
) -> None:
    data = str(colour_folder(tmp_path / "train", 5, seed=6))  # 4 labels x 5 samples
    artifact = train(data, demo_classify_spec("colour", seed=6, progress=False))
    report = json.loads(artifact.files["report.json"])

    kfold = report["metrics"]["kfold"]
    assert kfold["folds"] == 5 and report["split"].startswith("5-fold cross-validation")
    for key in ("accuracy", "macro_f1"):
        figures = kfold["metrics"][key]
        assert len(figures["per_fold"]) == 5
        assert figures["mean"] == pytest.approx(float(np.mean(figures["per_fold"])))
        assert figures["std"] == pytest.approx(float(np.std(figures["per_fold"], ddof=1)))
        assert report["metrics"][key] == figures["mean"] == artifact.manifest.metrics[key]
    assert kfold["metrics"]["accuracy"]["mean"] >= 0.5, kfold  # learned: chance is 0.25
    assert sum(m["support"] for m in report["metrics"]["per_label"].values()) == 20  # out-of-fold

    assert len(report["warnings"]) == 4  # every label: 5 samples are too few to mean much
    assert all("5 evaluated sample(s)" in w for w in report["warnings"])
    markdown = artifact.files["report.md"].decode()
    assert "**Warning:**" in markdown and "## 5-fold cross-validation" in markdown
    assert report["train_samples"] == 20  # the final function trained on every sample
    assert artifact.manifest.training["kfold"]["folds"] == 5
    assert artifact.manifest.training["recipe"]["select"] == "last"  # for the folds' epochs
