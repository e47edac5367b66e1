"""The fleet: every function of ``fleet.yaml`` on shared backbones, one pass per backbone."""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator

from models import storage
from models.artifacts import Artifact, load_artifact
from models.backbones import Backbone, backbone_key, load_backbone
from models.function import Function, FunctionInfo


class FleetEntry(BaseModel):
    """One function of the fleet: the served ``name`` and its artifact (path or ``s3://``)."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
    artifact: str
    enabled: bool = True


class FleetConfig(BaseModel):
    """The content of ``fleet.yaml``: ``functions: [{name, artifact, enabled}]``."""

    model_config = ConfigDict(extra="forbid")

    functions: list[FleetEntry] = Field(default_factory=list)

    @model_validator(mode="after")
    def _unique_names(self) -> FleetConfig:
        names = [f.name for f in self.functions]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"duplicate function names in fleet: {dupes}")
        return self


def read_fleet_config(path: str | Path) -> FleetConfig:
    """Parse and validate a ``fleet.yaml``; a missing file is an empty fleet."""
    path = Path(path)
    if not path.exists():
        return FleetConfig()
    data = yaml.safe_load(path.read_text()) or {}
    return FleetConfig.model_validate(data)


def write_fleet_config(path: str | Path, config: FleetConfig) -> None:
    """Write ``config`` as YAML (atomically: a temp file then a rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False))
    tmp.replace(path)


def _resolve(location: str, base: Path) -> str:
    if storage.is_s3(location) or Path(location).is_absolute():
        return location
    return str(base / location)


class Fleet:
    """Functions grouped by backbone; see docs/architecture.md for the ``predict`` contract."""

    def __init__(self, functions: Sequence[Function]) -> None:
        self._functions = {f.name: f for f in functions}
        self.backbones: dict[str, Backbone] = {f.backbone.key: f.backbone for f in functions}

    @classmethod
    def from_artifacts(
        cls,
        artifacts: Iterable[tuple[str, Artifact]] | Iterable[Artifact],
        device: str | None = None,
        backbones: dict[str, Backbone] | None = None,
        compile: bool = False,
        cache_dir: Path | None = None,
    ) -> Fleet:
        """Build a fleet from artifacts (optionally ``(name, artifact)`` pairs).

        Functions whose backbone key is equal share one :class:`Backbone` (also with the
        given ``backbones`` cache, which is updated in place).
        """
        shared = backbones if backbones is not None else {}
        functions = []
        for item in artifacts:
            name, artifact = item if isinstance(item, tuple) else (None, item)
            ref, weights_id = artifact.manifest.backbone, artifact.backbone_weights_id()
            key = backbone_key(ref, weights_id)
            if key not in shared:
                shared[key] = load_backbone(
                    ref,
                    state=artifact.backbone_state,
                    weights_id=weights_id,
                    device=device,
                    compile=compile,
                    cache_dir=cache_dir,
                )
            functions.append(Function(artifact, shared[key], name=name))
        return cls(functions)

    @property
    def input_size(self) -> int:
        """Square side the decoder must produce: the largest backbone input size."""
        return max((b.input_size for b in self.backbones.values()), default=224)

    @property
    def functions(self) -> dict[str, FunctionInfo]:
        """Function name -> :class:`FunctionInfo` (type, version, labels, thresholds)."""
        return {name: f.info for name, f in self._functions.items()}

    def predict(
        self,
        images: Sequence[np.ndarray],
        orig_sizes: Sequence[tuple[int, int]],
        functions: Sequence[Collection[str] | None] | None = None,
    ) -> list[dict[str, dict[str, Any]]]:
        """Per image: function name -> result object (DESIGN.md result event).

        ``images``: uint8 (S, S, 3) arrays of one shape; ``orig_sizes``: (width, height) of
        each original; ``functions``: per image the names wanted (``None`` = all). Names not
        in the fleet are skipped (the consumer validates them). Each backbone that some
        requested function uses runs once, on the images that need it. Raises on a broken
        model instead of returning partial results.
        """
        if len(images) != len(orig_sizes):
            raise ValueError(f"{len(images)} images but {len(orig_sizes)} sizes")
        wanted = self._wanted(len(images), functions)
        out: list[dict[str, dict[str, Any]]] = [{} for _ in images]
        if not images:
            return out
        batch = np.stack(images)
        for key, backbone in self.backbones.items():
            names = [n for n, f in self._functions.items() if f.backbone.key == key]
            rows = [i for i in range(len(images)) if wanted[i] & set(names)]
            if not rows:
                continue
            features = backbone.encode(batch[rows])
            for name in names:
                sub = [j for j, i in enumerate(rows) if name in wanted[i]]
                if not sub:
                    continue
                sizes = [orig_sizes[rows[j]] for j in sub]
                results = self._functions[name].run(features.select(sub), sizes)
                for j, result in zip(sub, results, strict=True):
                    out[rows[j]][name] = result
        return out

    def _wanted(self, n: int, functions: Sequence[Collection[str] | None] | None) -> list[set[str]]:
        every = set(self._functions)
        if functions is None:
            return [every] * n
        if len(functions) != n:
            raise ValueError(f"{n} images but {len(functions)} function selections")
        return [every if f is None else set(f) & every for f in functions]


def load_fleet(
    path: str | Path,
    device: str | None = None,
    compile: bool = False,
    cache_dir: Path | None = None,
) -> Fleet:
    """Load every enabled function of ``fleet.yaml``, building each distinct backbone once
    (on ``device``, compiled when asked, fetched weights kept in ``cache_dir``).

    Relative artifact paths are resolved against the directory of ``path``.
    """
    path = Path(path)
    config = read_fleet_config(path)
    if not path.exists():
        raise FileNotFoundError(f"fleet file not found: {path}")
    entries = [e for e in config.functions if e.enabled]
    artifacts = [(e.name, load_artifact(_resolve(e.artifact, path.parent))) for e in entries]
    return Fleet.from_artifacts(artifacts, device=device, compile=compile, cache_dir=cache_dir)
