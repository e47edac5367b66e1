"""tagfleet models: the fleet of classify, tags and detect functions on open_clip backbones.

Public surface: :func:`load_fleet` / :class:`Fleet` (serving), :func:`preprocess_image` (the one
preprocessing), :func:`train`, :func:`evaluate`, :func:`zero_shot`, :func:`save_artifact` /
:func:`load_artifact`.
"""

from models.artifacts import Artifact, load_artifact, save_artifact
from models.evaluate import evaluate
from models.fleet import Fleet, load_fleet
from models.preprocess import preprocess_image
from models.train import TrainSpec, train
from models.zeroshot import zero_shot

__all__ = [
    "Artifact",
    "Fleet",
    "TrainSpec",
    "evaluate",
    "load_artifact",
    "load_fleet",
    "preprocess_image",
    "save_artifact",
    "train",
    "zero_shot",
]
