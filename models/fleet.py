"""The fleet: every function of ``fleet.yaml`` on shared backbones, one pass per backbone."""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator

from models import storage
from models.artifacts import Artifact, load_artifact
from models.backbones import Backbone, backbone_key, load_backbone
from models.function import Function, FunctionInfo
from models.manifest import NAME_PATTERN
from models.tiling import TileSet, Tiling, encode_tiles, run_tiled


@dataclass(frozen=True, slots=True)
class Prediction:
    """What one :meth:`Fleet.predict_full` call gives, per image of the batch.

    ``results`` and ``shadows``: function name -> result object, as :meth:`Fleet.predict` and
    :meth:`Fleet.predict_with_shadows` return them. ``embeddings``: backbone key
    (:func:`models.backbones.backbone_key`) -> the pooled image embedding (float32, 1-D, not
    normalised) of each backbone that read the image whole; an image only read through its
    tiles by a backbone has none of that backbone.
    """

    results: list[dict[str, dict[str, Any]]]
    shadows: list[dict[str, dict[str, Any]]]
    embeddings: list[dict[str, np.ndarray]]


class Role(StrEnum):
    """``serving``: its results are the function's tags. ``shadow``: runs on the same batches,
    its results are kept apart (never published, never tags) for ``tagfleet diff``."""

    SERVING = "serving"
    SHADOW = "shadow"


class FleetEntry(BaseModel):
    """One function of the fleet: the served ``name`` and which artifact it runs.

    Either ``artifact`` (a path or ``s3://`` prefix, relative to the fleet file) or a
    ``version`` of ``function`` (default: ``name``) in the fleet's ``registry``. ``role``:
    one ``serving`` entry and at most one ``shadow`` entry per name.
    """

    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=NAME_PATTERN)
    artifact: str | None = None
    function: str | None = Field(None, pattern=NAME_PATTERN)
    version: str | None = Field(None, pattern=r"^[0-9a-f]{16}$")
    role: Role = Role.SERVING
    enabled: bool = True

    @model_validator(mode="after")
    def _located(self) -> FleetEntry:
        if self.artifact is None and self.version is None:
            raise ValueError(f"function {self.name!r}: give an artifact or a version")
        return self

    @property
    def registry_function(self) -> str:
        return self.function or self.name


class Action(StrEnum):
    ADD = "add"
    PROMOTE = "promote"
    ROLLBACK = "rollback"
    SHADOW = "shadow"
    REMOVE = "remove"


class HistoryEntry(BaseModel):
    """One change of the fleet, appended by every command that changes it."""

    model_config = ConfigDict(extra="forbid")

    at: datetime
    action: Action
    function: str
    version: str | None = None
    previous: str | None = None
    forced: bool = False
    purge: bool = False
    note: str | None = None


_SERVES = (Action.ADD, Action.PROMOTE, Action.ROLLBACK)


class FleetConfig(BaseModel):
    """The content of ``fleet.yaml``: ``registry``, ``functions: [{name, artifact | version,
    role, enabled}]`` and the ``history`` of changes (oldest first)."""

    model_config = ConfigDict(extra="forbid")

    registry: str | None = None
    functions: list[FleetEntry] = Field(default_factory=list)
    history: list[HistoryEntry] = Field(default_factory=list)

    @model_validator(mode="after")
    def _unique_names(self) -> FleetConfig:
        keys = [(f.name, f.role) for f in self.functions]
        dupes = sorted({n for n, r in keys if keys.count((n, r)) > 1})
        if dupes:
            raise ValueError(f"duplicate function names in fleet: {dupes}")
        unplaced = sorted(f.name for f in self.functions if f.artifact is None)
        if unplaced and self.registry is None:
            raise ValueError(f"functions {unplaced} name a version but the fleet has no registry")
        return self

    def entry(self, name: str, role: Role = Role.SERVING) -> FleetEntry | None:
        """The entry of ``name`` in ``role``, if any."""
        return next((e for e in self.functions if e.name == name and e.role == role), None)

    def promotion(self, name: str) -> int | None:
        """The place in the history (1-based) of the change that made ``name``'s serving
        version serve; ``None`` when no history entry did (a fleet written by hand)."""
        entry = self.entry(name)
        if entry is None or entry.version is None:
            return None
        for index in range(len(self.history), 0, -1):
            change = self.history[index - 1]
            if change.function == name and change.action in _SERVES:
                return index if change.version == entry.version else None
        return None


def store_state(config: FleetConfig) -> tuple[dict[str, tuple[str, int]], dict[str, bool]]:
    """What the store follows (``TagStore.follow_fleet``): each serving function with a
    place in the history -> (version, place), and each function whose last change removed
    it from the fleet -> whether it was purged."""
    serving: dict[str, tuple[str, int]] = {}
    for entry in config.functions:
        place = config.promotion(entry.name) if entry.role == Role.SERVING else None
        if place is not None and entry.version is not None and entry.enabled:
            serving[entry.name] = (entry.version, place)
    last: dict[str, HistoryEntry] = {h.function: h for h in config.history}
    present = {e.name for e in config.functions}
    removed = {
        name: h.purge
        for name, h in last.items()
        if h.action == Action.REMOVE and name not in present
    }
    return serving, removed


def read_fleet_config(path: str | Path) -> FleetConfig:
    """Parse and validate a ``fleet.yaml`` (a path or ``s3://`` object); a missing one is an
    empty fleet."""
    try:
        text = storage.read_bytes(path)
    except FileNotFoundError:
        return FleetConfig()
    data = yaml.safe_load(text) or {}
    return FleetConfig.model_validate(data)


def write_fleet_config(path: str | Path, config: FleetConfig) -> None:
    """Write ``config`` as YAML, atomically (a local temp file then a rename, or one S3 PUT)."""
    body = yaml.safe_dump(config.model_dump(mode="json", exclude_none=True), sort_keys=False)
    storage.write_atomic(path, body.encode())


def _resolve(location: str, base: str) -> str:
    if storage.is_s3(location) or Path(location).is_absolute():
        return location
    return storage.join(base, location)


def _base(path: str | Path) -> str:
    if storage.is_s3(path):
        return str(path).rsplit("/", 1)[0]
    return str(Path(path).parent)


def entry_location(config: FleetConfig, entry: FleetEntry, path: str | Path) -> str:
    """Where ``entry``'s artifact is: its ``artifact``, else its version in the registry."""
    base = _base(path)
    if entry.artifact is not None:
        return _resolve(entry.artifact, base)
    assert config.registry is not None and entry.version is not None  # validated
    registry = _resolve(config.registry, base)
    return storage.join(storage.join(registry, entry.registry_function), entry.version)


class Fleet:
    """Functions grouped by backbone; see docs/architecture.md for the ``predict`` contract.

    ``shadows``: candidate functions run beside the serving function of the same name, on the
    same backbone pass when they share its backbone; their results come only from
    :meth:`predict_with_shadows`. ``promotions``: name -> the serving version's place in the
    fleet's history, added to each result as ``promotion`` (the store's order of versions).
    """

    def __init__(
        self,
        functions: Sequence[Function],
        shadows: Sequence[Function] = (),
        promotions: dict[str, int | None] | None = None,
    ) -> None:
        self._functions = {f.name: f for f in functions}
        self._shadows = {f.name: f for f in shadows if f.name in self._functions}
        self._promotions = {k: v for k, v in (promotions or {}).items() if v is not None}
        every = [*functions, *self._shadows.values()]
        self.backbones: dict[str, Backbone] = {f.backbone.key: f.backbone for f in every}
        self._tilings = {id(f): t for f in every if (t := Tiling.of(f.manifest)) is not None}

    @classmethod
    def from_artifacts(
        cls,
        artifacts: Iterable[tuple[str, Artifact]] | Iterable[Artifact],
        device: str | None = None,
        backbones: dict[str, Backbone] | None = None,
        compile: bool = False,
        cache_dir: Path | None = None,
        shadows: Iterable[tuple[str, Artifact]] = (),
        offline: bool = False,
        promotions: dict[str, int | None] | None = None,
    ) -> Fleet:
        """Build a fleet from artifacts (optionally ``(name, artifact)`` pairs).

        Functions whose backbone key is equal share one :class:`Backbone` (also with the
        given ``backbones`` cache, which is updated in place).
        """
        shared = backbones if backbones is not None else {}

        def bind(name: str | None, artifact: Artifact) -> Function:
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
                    offline=offline,
                )
            return Function(artifact, shared[key], name=name)

        functions = []
        for item in artifacts:
            name, artifact = item if isinstance(item, tuple) else (None, item)
            functions.append(bind(name, artifact))
        return cls(functions, [bind(n, a) for n, a in shadows], promotions)

    @property
    def input_size(self) -> int:
        """Square side the decoder must produce: the largest backbone input size."""
        return max((b.input_size for b in self.backbones.values()), default=224)

    @property
    def tilings(self) -> tuple[Tiling, ...]:
        """The distinct tilings of the functions (serving and shadow) that read their images
        in tiles: what the decoder must cut (:class:`models.tiling.TileSet`), in a fixed
        order; empty when every function reads the whole image."""
        return tuple(sorted(set(self._tilings.values()), key=lambda t: (t.tile, t.overlap)))

    @property
    def tiled_functions(self) -> dict[str, tuple[Tiling, ...]]:
        """Name -> the tilings (in :attr:`tilings`' order) its serving function and its shadow
        read: what the decoder cuts for an event that asks for it; names read whole only are
        left out."""
        every = [(n, f) for n, f in self._functions.items()] + list(self._shadows.items())
        out: dict[str, tuple[Tiling, ...]] = {}
        for tiling in self.tilings:
            for name, function in every:
                if self._tilings.get(id(function)) == tiling and tiling not in out.get(name, ()):
                    out[name] = (*out.get(name, ()), tiling)
        return out

    @property
    def functions(self) -> dict[str, FunctionInfo]:
        """Function name -> :class:`FunctionInfo` (type, version, labels, thresholds)."""
        return {name: f.info for name, f in self._functions.items()}

    @property
    def promotions(self) -> dict[str, int]:
        """Function name -> its serving version's place in the fleet's history, as each of
        its results carries it (``promotion``); functions without a place are absent."""
        return dict(self._promotions)

    @property
    def shadows(self) -> dict[str, FunctionInfo]:
        """Name -> :class:`FunctionInfo` of the shadow candidate run beside that function."""
        return {name: f.info for name, f in self._shadows.items()}

    def predict(
        self,
        images: Sequence[np.ndarray],
        orig_sizes: Sequence[tuple[int, int]],
        functions: Sequence[Collection[str] | None] | None = None,
        tiles: Sequence[Sequence[TileSet]] | None = None,
    ) -> list[dict[str, dict[str, Any]]]:
        """Per image: function name -> result object (DESIGN.md result event).

        ``images``: uint8 (S, S, 3) arrays of one shape; ``orig_sizes``: (width, height) of
        each original; ``functions``: per image the names wanted (``None`` = all). Names not
        in the fleet are skipped (the consumer validates them). Each backbone that some
        requested function uses runs once, on the images that need it. Raises on a broken
        model instead of returning partial results.

        ``tiles``: per image its :class:`~models.tiling.TileSet` for each of :attr:`tilings`
        (the decoder cuts them). A function with a tiling reads an image that has its tile
        set through its tiles (:func:`models.tiling.run_tiled`: scores from the tiles read as
        one image, detect boxes mapped back into the original's pixels), the tiles of one
        tiling encoded once per backbone for every function that reads them; an image without
        that tile set (none given, a canary) is read whole, as every untiled function reads it.
        """
        return self._predict(images, orig_sizes, functions, with_shadows=False, tiles=tiles).results

    def predict_with_shadows(
        self,
        images: Sequence[np.ndarray],
        orig_sizes: Sequence[tuple[int, int]],
        functions: Sequence[Collection[str] | None] | None = None,
        tiles: Sequence[Sequence[TileSet]] | None = None,
    ) -> tuple[list[dict[str, dict[str, Any]]], list[dict[str, dict[str, Any]]]]:
        """:meth:`predict`, and per image the shadow results of the functions it ran (a
        shadow runs wherever its serving function runs, in the same backbone pass)."""
        found = self._predict(images, orig_sizes, functions, with_shadows=True, tiles=tiles)
        return found.results, found.shadows

    def predict_full(
        self,
        images: Sequence[np.ndarray],
        orig_sizes: Sequence[tuple[int, int]],
        functions: Sequence[Collection[str] | None] | None = None,
        tiles: Sequence[Sequence[TileSet]] | None = None,
    ) -> Prediction:
        """:meth:`predict_with_shadows` plus each image's pooled embedding per backbone (the
        features its functions already read: no extra pass), for the embedding store."""
        return self._predict(images, orig_sizes, functions, with_shadows=True, tiles=tiles)

    def _predict(
        self,
        images: Sequence[np.ndarray],
        orig_sizes: Sequence[tuple[int, int]],
        functions: Sequence[Collection[str] | None] | None,
        with_shadows: bool,
        tiles: Sequence[Sequence[TileSet]] | None = None,
    ) -> Prediction:
        if len(images) != len(orig_sizes):
            raise ValueError(f"{len(images)} images but {len(orig_sizes)} sizes")
        if tiles is not None and len(tiles) != len(images):
            raise ValueError(f"{len(images)} images but {len(tiles)} tile lists")
        wanted = self._wanted(len(images), functions)
        tile_sets = [{t.tiling: t for t in sets} for sets in tiles or [()] * len(images)]
        out: list[dict[str, dict[str, Any]]] = [{} for _ in images]
        shadow_out: list[dict[str, dict[str, Any]]] = [{} for _ in images]
        embeddings: list[dict[str, np.ndarray]] = [{} for _ in images]
        if not images:
            return Prediction(out, shadow_out, embeddings)
        batch = _stack(images)
        runs = [(n, f, out) for n, f in self._functions.items()]
        if with_shadows:
            runs += [(n, f, shadow_out) for n, f in self._shadows.items()]
        for key, backbone in self.backbones.items():
            mine = [(n, f, sink) for n, f, sink in runs if f.backbone.key == key]
            # per function: the images it reads whole, and those it reads through their tiles
            whole: dict[int, list[int]] = {}
            tiled: dict[int, list[int]] = {}
            for name, function, _ in mine:
                tiling = self._tilings.get(id(function))
                for i in range(len(images)):
                    if name in wanted[i]:
                        through = tiling is not None and tiling in tile_sets[i]
                        (tiled if through else whole).setdefault(id(function), []).append(i)
            encoded: dict[tuple[int, Tiling], Any] = {}  # each image's tiles encoded once
            for name, function, sink in mine:
                for i in tiled.get(id(function), []):
                    tile_set = tile_sets[i][self._tilings[id(function)]]
                    if (i, tile_set.tiling) not in encoded:
                        encoded[i, tile_set.tiling] = encode_tiles(backbone, tile_set.array)
                    tile_features = encoded[i, tile_set.tiling]
                    result = run_tiled(function, tile_features, orig_sizes[i], tile_set.boxes)
                    self._put(sink is out, sink[i], name, result)
            rows = sorted({i for ids in whole.values() for i in ids})
            if not rows:
                continue
            features = backbone.encode(batch[rows])
            pooled = features.pooled.detach().float().cpu().numpy()
            for j, i in enumerate(rows):
                embeddings[i][key] = pooled[j].copy()
            for name, function, sink in mine:
                mine_whole = set(whole.get(id(function), []))
                sub = [j for j, i in enumerate(rows) if i in mine_whole]
                if not sub:
                    continue
                sizes = [orig_sizes[rows[j]] for j in sub]
                results = function.run(features.select(sub), sizes)
                for j, result in zip(sub, results, strict=True):
                    self._put(sink is out, sink[rows[j]], name, result)
        return Prediction(out, shadow_out, embeddings)

    def _put(
        self, serving: bool, image: dict[str, dict[str, Any]], name: str, result: dict[str, Any]
    ) -> None:
        if serving and name in self._promotions:
            result["promotion"] = self._promotions[name]
        image[name] = result

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
    config: FleetConfig | None = None,
    offline: bool = False,
) -> Fleet:
    """Load every enabled function of ``fleet.yaml`` (a path or ``s3://`` object), building
    each distinct backbone once (on ``device``, compiled when asked, fetched weights kept in
    ``cache_dir``; ``offline``: a weight that would come from the model hub is refused).
    ``config``: the fleet already read from ``path`` (a reload reads it once).

    Relative artifact and registry paths are resolved against the fleet file's folder.
    ``FileNotFoundError`` when the fleet file is absent; ``ValueError`` (pydantic's
    ``ValidationError``, a YAML error) when it is not a fleet.
    """
    if config is None:
        if not storage.exists(path):
            raise FileNotFoundError(f"fleet file not found: {path}")
        config = read_fleet_config(path)
    entries = [e for e in config.functions if e.enabled]
    serving = [
        (e.name, load_artifact(entry_location(config, e, path)))
        for e in entries
        if e.role == Role.SERVING
    ]
    shadows = [
        (e.name, load_artifact(entry_location(config, e, path)))
        for e in entries
        if e.role == Role.SHADOW
    ]
    promotions = {e.name: config.promotion(e.name) for e in entries if e.role == Role.SERVING}
    return Fleet.from_artifacts(
        serving,
        device=device,
        compile=compile,
        cache_dir=cache_dir,
        shadows=shadows,
        promotions=promotions,
        offline=offline,
    )


def _stack(images: Sequence[Any]) -> Any:
    """The images as one (B, H, W, 3) batch: numpy, or a torch tensor on the device when a
    GPU decoder left them there (no host round trip)."""
    import torch

    if isinstance(images[0], torch.Tensor):
        return torch.stack(list(images))
    return np.stack(images)
