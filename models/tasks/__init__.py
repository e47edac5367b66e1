"""Tasks: each owns how its function types load data, train and evaluate.

- :mod:`models.tasks.linear`: classify and tags (a linear head on the pooled embedding);
- :mod:`models.tasks.detect`: detect (boxes from the patch tokens).

A task module defines ``TASK``; :func:`task_for` finds it by function type, importing the
module on first use (so detect's torchvision and pycocotools stay off the classify path). A
new function type is its head (:mod:`models.heads`), a task module and a line in ``_HOMES``.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from models.manifest import FunctionType

if TYPE_CHECKING:
    from models.artifacts import Artifact
    from models.backbones import Backbone
    from models.data.samples import Dataset
    from models.training.spec import TrainSpec

Report = tuple[dict[str, Any], dict[str, bytes]]  # (report dict, files: name -> bytes)


@dataclass(frozen=True)
class Task:
    """What the facades :func:`models.train.train` and :func:`models.evaluate.evaluate` call.

    - ``train(dataset, spec, backbone, previous) -> Artifact``: train, calibrate and evaluate
      on the held-out split; the artifact is not saved;
    - ``evaluate(artifact, dataset, previous) -> (report, files)``: the whole dataset.

    A ``dataset`` given as a path is read by :func:`models.data.load.load_dataset`.
    """

    train: Callable[[Dataset | str, TrainSpec, Backbone | None, Artifact | None], Artifact]
    evaluate: Callable[
        [Artifact, Dataset | str, Artifact | None, dict[str, Backbone] | None], Report
    ]


_HOMES = {
    FunctionType.CLASSIFY: "models.tasks.linear",
    FunctionType.TAGS: "models.tasks.linear",
    FunctionType.DETECT: "models.tasks.detect",
}


def task_for(kind: FunctionType | str) -> Task:
    """The task that trains and evaluates functions of type ``kind``."""
    task: Task = importlib.import_module(_HOMES[FunctionType(kind)]).TASK
    return task
