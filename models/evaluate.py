"""``evaluate(artifact, dataset)`` for every function type: the task of its type does it.

Evaluation runs the serving path (``Fleet.predict``), so the numbers describe exactly what the
service returns. See :mod:`models.tasks.linear` and :mod:`models.tasks.detect`.
"""

from __future__ import annotations

from models.artifacts import Artifact, load_artifact
from models.data.samples import Dataset
from models.tasks import Report, task_for


def evaluate(
    artifact: Artifact | str,
    dataset: Dataset | str,
    previous: Artifact | str | None = None,
) -> Report:
    """Evaluate a function on a whole dataset; return (report dict, report files).

    ``previous``: another version of the function, evaluated on the same images and compared
    in the report. Labels in the dataset that the function does not know are a DatasetError.
    """
    if isinstance(artifact, str):
        artifact = load_artifact(artifact)
    if isinstance(previous, str):
        previous = load_artifact(previous)
    return task_for(artifact.manifest.type).evaluate(artifact, dataset, previous)
