"""COCO detection datasets: loading, clear errors naming the file or category, augmentation."""

from __future__ import annotations

import json
from pathlib import Path
from typing import cast

import numpy as np
import pytest
import torch
from detect_data import coco_scenes
from torchvision.transforms import v2

from models.data.coco import DetectDataset, DetectSample, read_detect_images
from models.data.load import load_dataset
from models.data.samples import DatasetError
from models.detection.augment import augment_sample, detect_augmentation


@pytest.fixture
def coco(tmp_path: Path) -> Path:
    return coco_scenes(tmp_path, 8, seed=0, width=96, height=72)


def _edit(path: Path, change) -> str:  # noqa: ANN001
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))
    return str(path)


def test_loads_images_boxes_and_labels(coco: Path) -> None:
    ds = cast(DetectDataset, load_dataset(str(coco), "detect"))
    assert ds.labels == ["red", "blue"]  # category id order
    assert len(ds.samples) == 8 and all(
        len(cast(DetectSample, s).boxes) == len(s.labels) >= 1 for s in ds.samples
    )
    images, hashes, sizes = read_detect_images(ds, 64)
    assert images.shape == (8, 64, 64, 3) and sizes == [(96, 72)] * 8 and len(set(hashes)) == 8
    assert ds.targets().shape == (8, 2)


def _blue_in_one_image(anns: list[dict]) -> list[dict]:
    first = next(a["image_id"] for a in anns if a["category_id"] == 2)
    return [a for a in anns if a["category_id"] != 2 or a["image_id"] == first]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            lambda d: d["annotations"][0].update(category_id=9),
            r"coco.json: annotation 1: unknown category_id 9",
        ),
        (
            lambda d: d["annotations"][0].update(bbox=[90, 10, 20, 20]),
            r"coco.json: annotation 1 \(img/0.png\): box \[90.0, 10.0, 110.0, 30.0\] is outside",
        ),
        (lambda d: d["annotations"][0].update(bbox=[10, 10, 0, 20]), r"annotation 1: .* no area"),
        (
            lambda d: d["categories"].append({"id": 7, "name": "green"}),
            r"coco.json: category 'green' has no annotations",
        ),
        (
            lambda d: d.update(annotations=_blue_in_one_image(d["annotations"])),
            r"coco.json: category 'blue' appears in 1 image\(s\); at least 2",
        ),
        (lambda d: d.pop("categories"), r"coco.json: a COCO file needs"),
        (lambda d: d["annotations"][0].update(image_id=99), r"annotation 1: unknown image_id 99"),
    ],
)
def test_bad_coco_files_name_the_file_and_the_problem(coco: Path, change, message: str) -> None:  # noqa: ANN001
    with pytest.raises(DatasetError, match=message):
        load_dataset(_edit(coco, change), "detect")


def test_unreadable_and_mismatched_images_are_named(coco: Path) -> None:
    (coco.parent / "img" / "3.png").write_bytes(b"not an image")
    with pytest.raises(DatasetError, match=r"unreadable image .*img/3.png"):
        read_detect_images(cast(DetectDataset, load_dataset(str(coco), "detect")), 64)
    path = _edit(coco, lambda d: d["images"][3].update(file_name="img/missing.png"))
    with pytest.raises(DatasetError, match=r"cannot read image .*img/missing.png"):
        read_detect_images(cast(DetectDataset, load_dataset(path, "detect")), 64)
    path = _edit(coco, lambda d: d["images"][0].update(width=200))
    with pytest.raises(DatasetError, match=r"img/0.png is 96x72 but the COCO file says 200x72"):
        read_detect_images(cast(DetectDataset, load_dataset(path, "detect")), 64)


def test_eval_labels_must_be_the_functions(coco: Path) -> None:
    with pytest.raises(DatasetError, match=r"coco.json: unknown category 'blue'"):
        load_dataset(str(coco), "detect", labels=["red", "green"], min_per_label=1)


def test_horizontal_flip_moves_the_boxes_with_the_image() -> None:
    image = np.zeros((64, 64, 3), dtype=np.uint8)
    image[10:30, 5:20] = 255
    flip = v2.RandomHorizontalFlip(1.0)
    out, boxes, labels = augment_sample(flip, image, np.array([[5.0, 10, 20, 30]]), np.array([1]))
    assert boxes.tolist() == [[44, 10, 59, 30]] and labels.tolist() == [1]
    assert out[10:30, 44:59].min() == 255 and out[:, :44].max() == 0


def test_augmentation_is_seeded_and_keeps_boxes_on_the_image() -> None:
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
    boxes, labels = np.array([[0.0, 0, 30, 30], [40, 40, 64, 64]]), np.array([0, 1])
    runs = []
    for _ in range(2):
        torch.manual_seed(3)
        transform = detect_augmentation()
        runs.append([augment_sample(transform, image, boxes, labels) for _ in range(10)])
    for (a_img, a_box, a_lab), (b_img, b_box, _) in zip(*runs, strict=True):
        assert np.array_equal(a_img, b_img) and np.array_equal(a_box, b_box)
        assert a_img.dtype == np.uint8 and a_img.shape == (64, 64, 3)
        assert (a_box >= 0).all() and (a_box <= 64).all() and len(a_box) == len(a_lab)
    assert any(not np.array_equal(r[0], image) for r in runs[0])
