"""The one dispatcher: :func:`load_dataset` reads training data with the reader of its type.

detect reads a COCO JSON file (:mod:`models.data.coco`); classify and tags read a folder per
label or a JSONL/CSV manifest (:mod:`models.data.labelled`).
"""

from __future__ import annotations

from collections.abc import Sequence

from models.data.coco import load_coco
from models.data.labelled import load_labelled
from models.data.samples import MIN_PER_LABEL, Dataset
from models.manifest import FunctionType


def load_dataset(
    source: str,
    kind: FunctionType | str,
    labels: Sequence[str] | None = None,
    min_per_label: int = MIN_PER_LABEL,
) -> Dataset:
    """Read the sample list (not the images) of ``source`` for a function of type ``kind``.

    ``labels``: the allowed labels (e.g. an existing function's); a sample with another label
    is an error naming it. Without it, the labels are those found (classify, tags: sorted;
    detect: the categories in id order). ``min_per_label``: samples (detect: images) each
    label needs. Every problem is a :class:`~models.data.samples.DatasetError`.
    """
    kind = FunctionType(kind)
    if kind == FunctionType.DETECT:
        return load_coco(source, labels, min_per_label)
    return load_labelled(source, kind, labels, min_per_label)
