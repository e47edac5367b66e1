"""classify and tags data in the formats users already have, local or under ``s3://``.

- a folder per label (classify): ``ROOT/<label>/<image>``;
- a JSONL or CSV manifest with ``image`` plus ``label`` (classify) or ``labels`` (tags; a JSON
  list in JSONL, ``;``-separated in CSV); image paths are relative to the manifest's folder
  unless absolute or ``s3://``.

Every problem is a :class:`~models.data.samples.DatasetError` whose message names the file,
line or label.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
from collections import Counter
from collections.abc import Sequence

import numpy as np
from PIL import Image, UnidentifiedImageError

from models import storage
from models.data.samples import MIN_PER_LABEL, Dataset, DatasetError, Sample, parent, relative
from models.manifest import FunctionType
from models.preprocess import preprocess_image

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff")


def _is_image(name: str) -> bool:
    return name.lower().endswith(IMAGE_SUFFIXES)


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
    samples: list[Sample] = []
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
    base = parent(uri)
    samples = []
    for where, row in _rows(uri):
        image = row.get("image")
        if not image or not isinstance(image, str):
            raise DatasetError(f"{where}: missing 'image'")
        samples.append(Sample(relative(base, image), _row_labels(where, row, kind)))
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


def load_labelled(
    source: str,
    kind: FunctionType | str,
    labels: Sequence[str] | None = None,
    min_per_label: int = MIN_PER_LABEL,
) -> Dataset:
    """Read the sample list (not the images) of a classify or tags ``source``.

    ``labels``: the allowed labels (e.g. an existing function's); a sample with another label
    is an error naming it. Without it, the labels are those found, sorted.
    """
    kind = FunctionType(kind)
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
