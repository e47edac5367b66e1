"""The recipe's pieces without training: presets, schedule, balance, folds, heads, report."""

from __future__ import annotations

import hashlib
import io
import json

import numpy as np
import pytest
import torch
from PIL import Image

from models.backbones import Features
from models.heads.linear import LinearHead
from models.manifest import BackboneRef, FunctionType, Manifest
from models.training.errors import contact_sheet, thin_labels, worst_confused
from models.training.folds import spread, stratified_folds
from models.training.loop import sample_weights, warmup_cosine
from models.training.presets import resolve
from models.training.spec import TrainSpec


def _spec(**fields: object) -> TrainSpec:
    return TrainSpec.model_validate({"type": "classify", "name": "f", "mode": "finetune", **fields})


def test_presets_resolve_and_explicit_fields_win() -> None:
    default = resolve(_spec())
    assert default.poolings == ("pooled", "patch_max") and default.select == "best"
    assert default.balance == "sampler" and default.label_smoothing > 0 and default.clip > 0
    plain = resolve(_spec(recipe="plain"))
    assert (plain.poolings, plain.balance, plain.select, plain.augment, plain.clip) == (
        ("pooled",),
        "none",
        "last",
        "shift",
        0.0,
    )
    assert "patch_attention" in resolve(_spec(recipe="thorough")).poolings
    assert (
        resolve(_spec(recipe="fast")).epochs
        < default.epochs
        < resolve(_spec(recipe="thorough")).epochs
    )
    mine = resolve(_spec(pooling="patch_attention", balance="loss", epochs=3, augment=False))
    assert (mine.poolings, mine.balance, mine.epochs, mine.augment) == (
        ("patch_attention",),
        "loss",
        3,
        "none",
    )
    probe = resolve(_spec(mode="probe", pooling="patch_max"))
    assert probe.poolings == ("pooled",) and probe.balance == "loss"  # probe: pooled embeddings


def test_warmup_then_cosine_decay() -> None:
    factor = warmup_cosine(100, 0.1)
    values = [factor(step) for step in range(101)]
    assert values[0] < 0.1 and values[10] == pytest.approx(1.0)
    assert all(a <= b for a, b in zip(values[:10], values[1:11], strict=True))  # warm-up rises
    assert all(a >= b for a, b in zip(values[10:-1], values[11:], strict=True))  # then decays
    assert values[100] == pytest.approx(0.0, abs=1e-9)


def test_balanced_sampling_weighs_every_class_alike() -> None:
    y = np.array([0] * 60 + [1] * 30 + [2] * 10)
    weights = sample_weights(FunctionType.CLASSIFY, y)
    totals = [weights[y == k].sum() for k in range(3)]
    assert totals == pytest.approx([1.0, 1.0, 1.0])


def test_stratified_folds_cover_every_sample_once_and_deal_each_class_round() -> None:
    y = np.repeat(np.arange(4), 5)
    folds = stratified_folds(y, 5, seed=0)
    assert sorted(np.concatenate(folds).tolist()) == list(range(20))
    assert all(sorted(y[f].tolist()) == [0, 1, 2, 3] for f in folds)
    figures = spread([{"macro_f1": v} for v in (0.5, 0.7, 0.9)], ("macro_f1",))["macro_f1"]
    assert figures["mean"] == pytest.approx(0.7) and figures["std"] == pytest.approx(0.2)


@pytest.mark.parametrize("pooling", ["patch_max", "patch_attention"])
def test_a_patch_head_loads_a_pooled_only_state_and_scores_as_it(pooling: str) -> None:
    pooled = LinearHead(8, 3)
    patch = LinearHead(8, 3, token_dim=6, pooling=pooling)
    patch.load_state_dict(pooled.state_dict(), strict=True)  # patch layers come in at zero
    tokens = torch.randn(2, 5, 6)
    features = Features(torch.randn(2, 8), tokens, (1, 5))
    assert torch.allclose(patch(features), pooled(features))
    with torch.no_grad():
        assert patch.patch is not None
        patch.patch.weight[0, 0] = 1.0  # label 0 reads token feature 0
    tokens[1, 3, 0] = 50.0  # one patch of image 1 lights up
    gain = patch(features) - pooled(features)
    assert gain[1, 0] > gain[0, 0] + 5  # a single patch moves the label (max or attention)


def test_an_empty_training_record_keeps_old_versions() -> None:
    ref = BackboneRef(model="tiny-vit")
    old = Manifest(name="f", type="classify", labels=["a", "b"], backbone=ref)
    assert "training" not in old.model_dump(exclude={"training"})
    trained = old.model_copy(update={"training": {"recipe": {"recipe": "default"}}})
    assert old.content_hash([]) != trained.content_hash([])
    body = old.model_dump(mode="json", exclude={"version", "training"})

    digest = hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:16]
    assert old.content_hash([]) == digest  # the hash as it was before ``training`` existed


def test_the_report_says_where_the_errors_go() -> None:
    confusion = [[8, 2, 0], [5, 3, 0], [0, 1, 9]]
    pairs = worst_confused(confusion, ["clean", "local", "whole"])
    assert (pairs[0]["true"], pairs[0]["predicted"], pairs[0]["count"]) == ("local", "clean", 5)
    assert pairs[0]["share"] == pytest.approx(5 / 8) and len(pairs) == 3
    assert thin_labels({"a": 3, "b": 40}) == [
        "label 'a' has 3 evaluated sample(s): its figures rest on too few to mean much "
        "(at least 10 wanted)"
    ]
    images = np.zeros((4, 16, 16, 3), dtype=np.uint8)
    scores = np.array([[0.9, 0.1], [0.2, 0.8], [0.7, 0.3], [0.4, 0.6]])
    sheet = contact_sheet(images, scores, np.array([0, 0, 1, 1]), ["a", "b"])
    assert sheet is not None
    assert Image.open(io.BytesIO(sheet)).size == (2 * 96, 96 + 14)  # two misclassified
    assert contact_sheet(images, scores, np.array([0, 1, 0, 1]), ["a", "b"]) is None


def test_training_without_weights_says_the_backbone_is_random() -> None:
    from models.train import random_backbone_warning

    warning = random_backbone_warning(_spec(backbone="ViT-B-32"))
    assert warning is not None and "ViT-B-32 starts from random weights" in warning
    assert random_backbone_warning(_spec(weights="laion2b_s34b_b79k")) is None


def test_detect_through_tiles_maps_boxes_back_to_the_image(tiny_config: str) -> None:
    from models import Fleet
    from models.artifacts import Artifact
    from models.backbones import resolve_ref
    from models.function import Function, build_head
    from models.tiling import Tiling, cut_tiles, predict_tiled

    manifest = Manifest(
        name="things",
        type="detect",
        labels=["a", "b"],
        backbone=resolve_ref(tiny_config),
        thresholds={"*": 0.0},
        head={"nms_iou": 0.5, "max_detections": 20},
    )
    from models.backbones import load_backbone

    backbone = load_backbone(manifest.backbone, device="cpu")
    torch.manual_seed(3)
    state = {k: v.clone() for k, v in build_head(manifest, backbone).state_dict().items()}
    artifact = Artifact(manifest, state).with_version()
    fleet = Fleet.from_artifacts([artifact], device="cpu", backbones={backbone.key: backbone})
    function = Function(artifact, backbone)
    rng = np.random.default_rng(0)

    small = Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8))
    one = Tiling(64)  # one tile: the same objects as the whole-image path
    tiled = predict_tiled(function, cut_tiles(small, one, 64), (64, 64), boxes=one.boxes(64, 64))
    whole = fleet.predict([np.asarray(small)], [(64, 64)])[0]["things"]["objects"]
    assert [o["label"] for o in tiled["objects"]] == [o["label"] for o in whole]
    got = np.array([o["box"] for o in tiled["objects"]])
    assert np.allclose(got, np.array([o["box"] for o in whole]), atol=1e-4)

    large = Image.fromarray(rng.integers(0, 256, (96, 160, 3), dtype=np.uint8))
    tiling = Tiling(64, 0.25)
    tile_boxes = tiling.boxes(160, 96)
    assert len(tile_boxes) == 3 * 2  # stride 48: x at 0, 48, 96; y at 0, 32 (the last at the edge)
    tiles = cut_tiles(large, tiling, 64)
    objects = predict_tiled(function, tiles, (160, 96), boxes=tile_boxes)["objects"]
    assert 0 < len(objects) <= 20
    assert [o["score"] for o in objects] == sorted((o["score"] for o in objects), reverse=True)
    for o in objects:  # in the image's pixels, inside the tile it was found in
        x1, y1, x2, y2 = o["box"]
        assert any(
            tx1 - 1e-3 <= x1 <= x2 <= tx2 + 1e-3 and ty1 - 1e-3 <= y1 <= y2 <= ty2 + 1e-3
            for tx1, ty1, tx2, ty2 in tile_boxes
        )
    with pytest.raises(ValueError, match="needs each tile's box"):
        predict_tiled(function, tiles, (160, 96))
