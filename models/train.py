"""``train(dataset, spec) -> Artifact`` for every function type: the task of ``spec.type`` does it.

See :mod:`models.tasks.linear` (classify, tags) and :mod:`models.tasks.detect` (detect).
"""

from __future__ import annotations

import logging
import sys

from models.artifacts import Artifact
from models.backbones import Backbone
from models.data.samples import Dataset
from models.tasks import task_for
from models.training.spec import TrainSpec

__all__ = ["TrainSpec", "train"]

log = logging.getLogger(__name__)


def random_backbone_warning(spec: TrainSpec) -> str | None:
    """The warning for a spec that names no weights: its backbone starts random."""
    if spec.weights is not None:
        return None
    return (
        f"WARNING: no weights given: the backbone {spec.backbone} starts from random weights "
        "(random:0), so the function knows only what its samples teach it; name pretrained "
        "weights (an open_clip tag, a local file or an s3:// object) to start from a trained one"
    )


def train(
    dataset: Dataset | str,
    spec: TrainSpec,
    backbone: Backbone | None = None,
    previous: Artifact | None = None,
) -> Artifact:
    """Train, calibrate and evaluate a function on ``dataset``; return the (unsaved) artifact.

    ``dataset``: a source for :func:`models.data.load.load_dataset` or a loaded dataset.
    ``backbone``: an already loaded backbone matching ``spec`` (reused, e.g. by tests that
    count its passes; in finetune mode its weights change). ``previous``: an earlier version,
    compared on the same held-out split in the report.
    """
    warning = random_backbone_warning(spec)
    if warning is not None:
        log.warning(warning)
        if spec.progress:
            print(warning, file=sys.stderr)
    return task_for(spec.type).train(dataset, spec, backbone, previous)
