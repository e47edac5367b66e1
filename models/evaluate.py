"""``evaluate(artifact, dataset)`` for every function type: the task of its type does it.

Evaluation runs the serving path (``Fleet.predict``), so the numbers describe exactly what the
service returns. See :mod:`models.tasks.linear` and :mod:`models.tasks.detect`.
"""

from __future__ import annotations

from pathlib import Path

from models.artifacts import Artifact, load_artifact
from models.backbones import Backbone
from models.data.samples import Dataset
from models.fleet import Fleet
from models.tasks import Report, task_for


def evaluate(
    artifact: Artifact | str,
    dataset: Dataset | str,
    previous: Artifact | str | None = None,
    device: str | None = None,
    cache_dir: Path | None = None,
    offline: bool = False,
) -> Report:
    """Evaluate a function on a whole dataset; return (report dict, report files).

    ``previous``: another version of the function, evaluated on the same images and compared
    in the report. Labels in the dataset that the function does not know are a DatasetError.
    The backbones load on ``device`` (unset: CUDA when available), weights fetched into
    ``cache_dir``, a hub download refused when ``offline``.
    """
    if isinstance(artifact, str):
        artifact = load_artifact(artifact)
    if isinstance(previous, str):
        previous = load_artifact(previous)
    backbones: dict[str, Backbone] = {}
    Fleet.from_artifacts(
        [artifact] + ([previous] if previous is not None else []),
        device=device,
        cache_dir=cache_dir,
        offline=offline,
        backbones=backbones,
    )
    return task_for(artifact.manifest.type).evaluate(artifact, dataset, previous, backbones)
