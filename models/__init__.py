"""tagfleet models: the fleet of classify, tags and detect functions on open_clip backbones.

Public surface: :func:`load_fleet` / :class:`Fleet` (serving), :func:`preprocess_image` (the one
preprocessing), :func:`train`, :func:`evaluate`, :func:`zero_shot`, :func:`save_artifact` /
:func:`load_artifact`.

The names are imported on first use (PEP 562), so that ``models.preprocess`` can be imported
without torch: the service's decode processes need Pillow and numpy only.
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from models.artifacts import Artifact, load_artifact, save_artifact
    from models.evaluate import evaluate
    from models.fleet import Fleet, load_fleet
    from models.preprocess import preprocess_image
    from models.train import train
    from models.training.spec import TrainSpec
    from models.zeroshot import zero_shot

_HOMES = {
    "Artifact": "models.artifacts",
    "load_artifact": "models.artifacts",
    "save_artifact": "models.artifacts",
    "evaluate": "models.evaluate",
    "Fleet": "models.fleet",
    "load_fleet": "models.fleet",
    "preprocess_image": "models.preprocess",
    "TrainSpec": "models.training.spec",
    "train": "models.train",
    "zero_shot": "models.zeroshot",
}

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


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'models' has no attribute {name!r}")
    value = getattr(importlib.import_module(home), name)
    globals()[name] = value
    return value


class _Package(types.ModuleType):
    """``models`` keeps its public functions when their submodule loads.

    Importing ``models.evaluate`` (or ``models.train``) makes Python set the package's attribute
    of that name to the submodule, so a later ``from models import evaluate`` would get the
    module instead of the function (after ``tagfleet eval`` ran, say). The public name is the
    function: the submodule stays reachable in ``sys.modules`` and by ``from models.evaluate
    import ...``.
    """

    def __setattr__(self, name: str, value: Any) -> None:
        if isinstance(value, types.ModuleType) and _HOMES.get(name) == value.__name__:
            value = getattr(value, name)
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package
