"""Training data in the formats users already have, local or under ``s3://``.

- a folder per label (classify): ``ROOT/<label>/<image>``;
- a JSONL or CSV manifest with ``image`` plus ``label`` (classify) or ``labels`` (tags; a JSON
  list in JSONL, ``;``-separated in CSV); image paths are relative to the manifest's folder
  unless absolute or ``s3://``.

Every problem is a :class:`DatasetError` whose message names the file, line or label.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import PurePosixPath

import numpy as np
from PIL import Image, UnidentifiedImageError

from models import storage
from models.manifest import FunctionType
from models.preprocess import preprocess_image

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff")
MIN_PER_LABEL = 2  # at least one to train on and one held out


class DatasetError(ValueError):
    """A dataset problem a user can fix; the message names the file or label."""


@dataclass(frozen=True)
class Sample:
    image: str
    labels: tuple[str, ...]


@dataclass(frozen=True)
class Dataset:
    kind: FunctionType
    labels: list[str]
    samples: list[Sample]
    source: str

    def targets(self) -> np.ndarray:
        """classify: (N,) label indices; tags: (N, L) 0/1 matrix."""
        index = {label: i for i, label in enumerate(self.labels)}
        if self.kind == FunctionType.CLASSIFY:
            return np.array([index[s.labels[0]] for s in self.samples], dtype=np.int64)
        y = np.zeros((len(self.samples), len(self.labels)), dtype=np.float32)
        for row, sample in enumerate(self.samples):
            for label in sample.labels:
                y[row, index[label]] = 1.0
        return y


def _is_image(name: str) -> bool:
    return name.lower().endswith(IMAGE_SUFFIXES)


def _relative(base: str, image: str) -> str:
    if storage.is_s3(image) or image.startswith("/"):
        return image
    return storage.join(base, image)


def _parent(uri: str) -> str:
    return str(PurePosixPath(uri).parent) if not storage.is_s3(uri) else uri.rsplit("/", 1)[0]


def _folder_samples(root: str) -> list[Sample]:
    files = storage.list_files(root)
    prefix = root.rstrip("/") + "/"
    by_label: dict[str, list[str]] = {}
    for f in files:
        parts = f[len(prefix) :].split("/")
        if len(parts) >= 2:
            by_label.setdefault(parts[0], []).append(f)
    if not storage.is_s3(root):  # local empty label folders exist without files in them
        from pathlib import Path

        for d in Path(root).iterdir():
            if d.is_dir():
                by_label.setdefault(d.name, [])
    if not by_label:
        raise DatasetError(f"{root}: no label folders (expected {root}/<label>/<image>)")
    samples = []
    for label, names in sorted(by_label.items()):
        images = [n for n in names if _is_image(n)]
        if not images:
            raise DatasetError(f"label folder '{label}' ({prefix}{label}) has no images")
        samples.extend(Sample(n, (label,)) for n in sorted(images))
    return samples


def _rows(uri: str) -> list[tuple[str, dict]]:
    """(where, row) pairs of a JSONL or CSV manifest; where = 'file:line'."""
    text = storage.read_bytes(uri).decode("utf-8")
    if uri.lower().endswith(".csv"):
        reader = csv.DictReader(io.StringIO(text))
        return [(f"{uri}:{i + 2}", dict(row)) for i, row in enumerate(reader)]
    rows = []
    for i, line in enumerate(text.splitlines(), start=1):
        if line.strip():
            try:
                rows.append((f"{uri}:{i}", json.loads(line)))
            except json.JSONDecodeError as exc:
                raise DatasetError(f"{uri}:{i}: not valid JSON ({exc.msg})") from exc
    return rows


def _row_labels(where: str, row: dict, kind: FunctionType) -> tuple[str, ...]:
    if kind == FunctionType.CLASSIFY:
        label = row.get("label")
        if not label or not isinstance(label, str):
            raise DatasetError(f"{where}: classify needs a 'label' string")
        return (label,)
    labels = row.get("labels")
    if isinstance(labels, str):
        labels = [x.strip() for x in labels.split(";") if x.strip()]
    if not isinstance(labels, list) or not all(isinstance(x, str) for x in labels):
        raise DatasetError(f"{where}: tags needs 'labels' (a list, or ';'-separated in CSV)")
    return tuple(labels)


def _manifest_samples(uri: str, kind: FunctionType) -> list[Sample]:
    base = _parent(uri)
    samples = []
    for where, row in _rows(uri):
        image = row.get("image")
        if not image or not isinstance(image, str):
            raise DatasetError(f"{where}: missing 'image'")
        samples.append(Sample(_relative(base, image), _row_labels(where, row, kind)))
    if not samples:
        raise DatasetError(f"{uri}: no samples")
    return samples


def _check_counts(samples: list[Sample], labels: Sequence[str], min_per_label: int) -> None:
    counts = Counter(label for s in samples for label in s.labels)
    for label in labels:
        if counts[label] < min_per_label:
            raise DatasetError(
                f"label '{label}' has {counts[label]} sample(s); at least {min_per_label} "
                "are needed (some are held out for evaluation)"
            )


def load_dataset(
    source: str,
    kind: FunctionType | str,
    labels: Sequence[str] | None = None,
    min_per_label: int = MIN_PER_LABEL,
) -> Dataset:
    """Read the sample list (not the images) of ``source``.

    ``labels``: the allowed labels (e.g. an existing function's); a sample with another label
    is an error naming it. Without it, the labels are those found, sorted.
    """
    kind = FunctionType(kind)
    if kind == FunctionType.DETECT:  # COCO JSON, with boxes: see models.detection.coco
        from models.detection.coco import load_coco

        return load_coco(source, labels, min_per_label)
    if source.lower().endswith((".jsonl", ".json", ".csv")):
        samples = _manifest_samples(source, kind)
    elif kind == FunctionType.CLASSIFY:
        samples = _folder_samples(source)
    else:
        raise DatasetError(f"{source}: {kind.value} data must be a JSONL or CSV manifest")
    found = sorted({label for s in samples for label in s.labels})
    _check_counts(samples, found, min_per_label)
    if labels is not None:
        unknown = [label for label in found if label not in labels]
        if unknown:
            where = next(s.image for s in samples if unknown[0] in s.labels)
            raise DatasetError(
                f"unknown label '{unknown[0]}' (e.g. for {where}); the function's labels are "
                f"{list(labels)}"
            )
        found = list(labels)
    return Dataset(kind, found, samples, source)


def read_image(uri: str, size: int) -> tuple[np.ndarray, str]:
    """(preprocessed uint8 (size, size, 3), sha256 of the file bytes); DatasetError if bad."""
    try:
        data = storage.read_bytes(uri)
    except (FileNotFoundError, OSError) as exc:
        raise DatasetError(f"cannot read image {uri}: {exc}") from exc
    try:
        with Image.open(io.BytesIO(data)) as img:
            img.load()
            array = preprocess_image(img, size)
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise DatasetError(f"unreadable image {uri}: {exc}") from exc
    return array, hashlib.sha256(data).hexdigest()


def read_images(dataset: Dataset, size: int) -> tuple[np.ndarray, list[str]]:
    """All images of ``dataset`` as (N, size, size, 3) uint8 and their content hashes."""
    arrays, hashes = [], []
    for sample in dataset.samples:
        array, digest = read_image(sample.image, size)
        arrays.append(array)
        hashes.append(digest)
    return np.stack(arrays), hashes


def data_hash(dataset: Dataset, image_hashes: Sequence[str]) -> str:
    """Content hash of the training data: image bytes and their labels."""
    digest = hashlib.sha256()
    for sample, image in zip(dataset.samples, image_hashes, strict=True):
        digest.update(f"{image}:{','.join(sorted(sample.labels))}\n".encode())
    return digest.hexdigest()[:16]


def stratified_split(
    targets: np.ndarray, val_fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """(train, val) index arrays; each class (tags: each sample's rarest label) split alike.

    Every stratum with at least two samples keeps at least one in each side.
    """
    rng = np.random.default_rng(seed)
    if targets.ndim == 1:
        strata = targets
    else:
        freq = targets.sum(axis=0)
        rarest = np.where(targets > 0, freq[None, :], np.inf).argmin(axis=1)
        strata = np.where(targets.sum(axis=1) > 0, rarest, -1)
    train, val = [], []
    for stratum in np.unique(strata):
        idx = rng.permutation(np.flatnonzero(strata == stratum))
        n_val = int(round(len(idx) * val_fraction))
        if len(idx) >= 2:
            n_val = min(max(n_val, 1), len(idx) - 1)
        val.extend(idx[:n_val])
        train.extend(idx[n_val:])
    return np.sort(np.array(train, dtype=np.int64)), np.sort(np.array(val, dtype=np.int64))
