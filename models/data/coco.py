"""COCO JSON detection datasets, local or under ``s3://``.

The file holds ``images`` (``id``, ``file_name`` relative to the JSON file's folder unless
absolute or ``s3://``, optional ``width``/``height``), ``categories`` (``id``, ``name``) and
``annotations`` (``image_id``, ``category_id``, ``bbox`` = ``[x, y, w, h]`` in pixels;
``iscrowd: 1`` regions are skipped). Labels are the category names in id order. Images
without annotations are kept (negatives). Every problem is a
:class:`~models.data.samples.DatasetError` naming the file and the image, annotation or category.
"""

from __future__ import annotations

import hashlib
import io
import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError

from models import storage
from models.data.samples import MIN_PER_LABEL, Dataset, DatasetError, Sample, parent, relative
from models.manifest import FunctionType
from models.preprocess import preprocess_image

Box = tuple[float, float, float, float]  # x1, y1, x2, y2 in pixels of the original image
EDGE_TOLERANCE = 1.0  # pixels a box may overshoot the image (rounding in annotation tools)


@dataclass(frozen=True)
class DetectSample(Sample):
    """One image: ``labels[i]`` is the label of ``boxes[i]``; ``size`` = (width, height) or None."""

    boxes: tuple[Box, ...] = ()
    size: tuple[int, int] | None = None


@dataclass(frozen=True)
class DetectDataset(Dataset):
    """A COCO dataset; ``samples`` are :class:`DetectSample`."""

    def targets(self) -> np.ndarray:
        """(N, L) 0/1: which labels appear in each image (for the stratified split)."""
        index = {label: i for i, label in enumerate(self.labels)}
        y = np.zeros((len(self.samples), len(self.labels)), dtype=np.float32)
        for row, sample in enumerate(self.samples):
            for label in sample.labels:
                y[row, index[label]] = 1.0
        return y


def _load_json(uri: str) -> dict[str, Any]:
    try:
        data = json.loads(storage.read_bytes(uri))
    except FileNotFoundError as exc:
        raise DatasetError(f"{uri}: COCO file not found") from exc
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DatasetError(f"{uri}: not valid JSON ({exc})") from exc
    if not isinstance(data, dict) or not all(
        isinstance(data.get(k), list) for k in ("images", "annotations", "categories")
    ):
        raise DatasetError(
            f"{uri}: a COCO file needs 'images', 'annotations' and 'categories' lists"
        )
    return data


def _categories(uri: str, data: dict[str, Any]) -> dict[int, str]:
    cats: dict[int, str] = {}
    for cat in data["categories"]:
        if not isinstance(cat, dict) or "id" not in cat or not isinstance(cat.get("name"), str):
            raise DatasetError(f"{uri}: category {cat!r} needs an 'id' and a 'name'")
        if cat["name"] in cats.values():
            raise DatasetError(f"{uri}: category name '{cat['name']}' is used twice")
        cats[int(cat["id"])] = cat["name"]
    if not cats:
        raise DatasetError(f"{uri}: no categories")
    return dict(sorted(cats.items()))


def check_box(where: str, box: Box, size: tuple[int, int]) -> None:
    """DatasetError naming ``where`` unless ``box`` lies inside an image of ``size`` (w, h)."""
    x1, y1, x2, y2 = box
    width, height = size
    t = EDGE_TOLERANCE
    if x1 < -t or y1 < -t or x2 > width + t or y2 > height + t:
        raise DatasetError(f"{where}: box {list(box)} is outside the image ({width}x{height})")


def _xyxy(uri: str, ann: dict[str, Any]) -> Box:
    bbox = ann.get("bbox")
    where = f"{uri}: annotation {ann.get('id')}"
    if not isinstance(bbox, list) or len(bbox) != 4:
        raise DatasetError(f"{where}: 'bbox' must be [x, y, width, height]")
    x, y, w, h = (float(v) for v in bbox)
    if w <= 0 or h <= 0:
        raise DatasetError(f"{where}: box {bbox} has no area")
    return (x, y, x + w, y + h)


def _samples(uri: str, data: dict[str, Any], cats: dict[int, str]) -> list[DetectSample]:
    base = parent(uri)
    images = {}
    for img in data["images"]:
        if (
            not isinstance(img, dict)
            or "id" not in img
            or not isinstance(img.get("file_name"), str)
        ):
            raise DatasetError(f"{uri}: image {img!r} needs an 'id' and a 'file_name'")
        images[img["id"]] = img
    objects: dict[Any, list[tuple[str, Box]]] = {k: [] for k in images}
    for ann in data["annotations"]:
        where = f"{uri}: annotation {ann.get('id')}"
        if ann.get("iscrowd"):
            continue
        if ann.get("image_id") not in images:
            raise DatasetError(f"{where}: unknown image_id {ann.get('image_id')!r}")
        if ann.get("category_id") not in cats:
            raise DatasetError(
                f"{where}: unknown category_id {ann.get('category_id')!r} (known: {sorted(cats)})"
            )
        img = images[ann["image_id"]]
        box = _xyxy(uri, ann)
        if img.get("width") and img.get("height"):
            check_box(f"{where} ({img['file_name']})", box, (img["width"], img["height"]))
        objects[ann["image_id"]].append((cats[ann["category_id"]], box))
    return [
        DetectSample(
            relative(base, img["file_name"]),
            tuple(o[0] for o in objects[k]),
            tuple(o[1] for o in objects[k]),
            (int(img["width"]), int(img["height"])) if img.get("width") else None,
        )
        for k, img in images.items()
    ]


def _check_counts(
    uri: str, samples: list[DetectSample], labels: Sequence[str], min_per_label: int
) -> None:
    images_with = Counter(label for s in samples for label in set(s.labels))
    for label in labels:
        if images_with[label] == 0:
            raise DatasetError(f"{uri}: category '{label}' has no annotations")
        if images_with[label] < min_per_label:
            raise DatasetError(
                f"{uri}: category '{label}' appears in {images_with[label]} image(s); at least "
                f"{min_per_label} are needed (some are held out for evaluation)"
            )


def load_coco(
    source: str, labels: Sequence[str] | None = None, min_per_label: int = MIN_PER_LABEL
) -> DetectDataset:
    """Read a COCO JSON file (not the images) into a :class:`DetectDataset`.

    ``labels``: the allowed labels (an existing function's); a category outside them is an
    error naming it. ``min_per_label``: images each category must appear in.
    """
    data = _load_json(source)
    cats = _categories(source, data)
    samples = _samples(source, data, cats)
    if not samples:
        raise DatasetError(f"{source}: no images")
    found = list(cats.values())
    if labels is not None:
        unknown = [c for c in found if c not in labels]
        if unknown:
            raise DatasetError(
                f"{source}: unknown category '{unknown[0]}'; the function's "
                f"labels are {list(labels)}"
            )
        present = {label for s in samples for label in s.labels}
        found = list(labels)
        _check_counts(source, samples, sorted(present), min_per_label)
    else:
        _check_counts(source, samples, found, min_per_label)
    return DetectDataset(FunctionType.DETECT, found, list(samples), source)


def read_detect_image(sample: DetectSample, size: int) -> tuple[np.ndarray, str, tuple[int, int]]:
    """(uint8 (size, size, 3), sha256 of the bytes, (width, height) of the original).

    DatasetError naming the file when it cannot be read, its size differs from the JSON's or
    one of its boxes lies outside it.
    """
    uri = sample.image
    try:
        data = storage.read_bytes(uri)
    except OSError as exc:
        raise DatasetError(f"cannot read image {uri}: {exc}") from exc
    try:
        with Image.open(io.BytesIO(data)) as img:
            img.load()
            orig = img.size
            array = preprocess_image(img, size)
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise DatasetError(f"unreadable image {uri}: {exc}") from exc
    if sample.size is not None and tuple(sample.size) != orig:
        raise DatasetError(
            f"image {uri} is {orig[0]}x{orig[1]} but the COCO file says "
            f"{sample.size[0]}x{sample.size[1]}"
        )
    for box in sample.boxes:
        check_box(f"image {uri}", box, orig)
    return array, hashlib.sha256(data).hexdigest(), orig


def read_detect_images(
    dataset: DetectDataset, size: int
) -> tuple[np.ndarray, list[str], list[tuple[int, int]]]:
    """All images as (N, size, size, 3) uint8, their content hashes and original sizes."""
    rows = [read_detect_image(s, size) for s in dataset.samples]  # type: ignore[arg-type]
    return np.stack([r[0] for r in rows]), [r[1] for r in rows], [r[2] for r in rows]


def detect_data_hash(dataset: DetectDataset, image_hashes: Sequence[str]) -> str:
    """Content hash of the training data: image bytes, labels and boxes."""
    digest = hashlib.sha256()
    for sample, image in zip(dataset.samples, image_hashes, strict=True):
        assert isinstance(sample, DetectSample)
        objects = sorted(zip(sample.labels, sample.boxes, strict=True))
        digest.update(f"{image}:{objects}\n".encode())
    return digest.hexdigest()[:16]


def input_boxes(sample: DetectSample, orig: tuple[int, int], size: int) -> np.ndarray:
    """(K, 4) boxes of ``sample`` scaled from the original image to the ``size`` model input."""
    scale = np.array([size / orig[0], size / orig[1]] * 2, dtype=np.float32)
    return np.asarray(sample.boxes, dtype=np.float32).reshape(-1, 4) * scale
