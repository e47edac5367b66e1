"""The life of a function: train a version into the registry, gate its promotion, roll back.

Every change to the fleet is one atomic write of the whole ``fleet.yaml`` (local file or
``s3://`` object) with a :class:`~models.fleet.HistoryEntry` appended. What is wrong with the
request (an unknown function or version, no registry) is a :class:`LifecycleError`; a
candidate the gate refuses is a :class:`GateRefused` carrying both figures.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from models import registry as reg
from models import storage
from models.artifacts import Artifact, load_artifact
from models.compare import compare_across_labels
from models.data.load import load_dataset
from models.fleet import (
    Action,
    FleetConfig,
    FleetEntry,
    HistoryEntry,
    Role,
    read_fleet_config,
    write_fleet_config,
)
from models.manifest import FunctionType
from models.settings import Runtime, defaults
from models.train import train
from models.training.spec import TrainSpec

log = logging.getLogger(__name__)

# The headline metric the gate compares, per type: macro-F1 weighs every label alike (a
# candidate that drops a rare label cannot hide behind the common ones); mAP@0.5 for boxes.
GATE_METRIC = {
    FunctionType.CLASSIFY: "macro_f1",
    FunctionType.TAGS: "macro_f1",
    FunctionType.DETECT: "map50",
}
DEFAULT_TOLERANCE = 0.01


class LifecycleError(ValueError):
    """The request cannot be carried out as given (exit 2, the message says why)."""


class GateRefused(Exception):
    """The candidate is worse than the serving version by more than the tolerance."""

    def __init__(self, gate: Gate) -> None:
        super().__init__(gate.describe())
        self.gate = gate


@dataclass(frozen=True)
class Gate:
    """The promotion gate's figures: both versions' ``metric`` on the same data."""

    function: str
    candidate: str
    serving: str | None
    metric: str
    candidate_value: float | None
    serving_value: float | None
    tolerance: float
    data: str

    @property
    def passed(self) -> bool:
        if self.serving_value is None or self.candidate_value is None:
            return True
        return self.candidate_value >= self.serving_value - self.tolerance

    def describe(self) -> str:
        if self.serving_value is None or self.candidate_value is None:
            return f"{self.function}: no serving version to compare with; {self.candidate} passes"
        verdict = "passes" if self.passed else "is refused"
        return (
            f"{self.function}: candidate {self.candidate} {verdict}: {self.metric}"
            f" {self.candidate_value:.4f} against {self.serving_value:.4f} for the serving"
            f" version {self.serving} on {self.data} (tolerance {self.tolerance:g})"
        )


def registry_of(config: FleetConfig, fleet: str, given: str | None) -> str:
    """The registry location (absolute, or ``s3://``): ``given``, else the fleet's own."""
    location = given or config.registry
    if location is None:
        raise LifecycleError("no registry: pass --registry or set TAGFLEET_REGISTRY")
    if storage.is_s3(location) or Path(location).is_absolute():
        return location
    if given is not None:
        return str(Path(location).resolve())
    base = str(fleet).rsplit("/", 1)[0] if storage.is_s3(fleet) else str(Path(fleet).parent)
    return storage.join(base, location)


def serving_version(config: FleetConfig, function: str) -> str | None:
    entry = config.entry(function)
    return None if entry is None else entry.version


def train_version(
    dataset: str, spec: TrainSpec, registry: str, fleet: str, previous: str | None
) -> tuple[Artifact, bool, str | None]:
    """Train ``spec`` on ``dataset`` into ``registry``; return (artifact, new?, compared with).

    The report compares with ``previous`` (a version of the registry or an artifact
    location), else with the version serving in ``fleet``, else with the newest version in
    the registry, also when the label set changed (:mod:`models.compare`).
    """
    config = read_fleet_config(fleet)
    before = _previous(registry, spec.name, config, previous)
    data = load_dataset(dataset, spec.type)
    if before is None or before.manifest.labels == data.labels:
        artifact = train(data, spec, previous=before)
    else:
        from models.backbones import load_backbone, resolve_ref

        backbone = load_backbone(
            resolve_ref(spec.backbone, spec.weights), **spec.backbone_options()
        )
        artifact = train(data, spec, backbone=backbone)
        artifact = compare_across_labels(artifact, data, spec, before, backbone.input_size)
    parent = None if before is None else before.manifest.version
    artifact, created = reg.publish(artifact, registry, parent)
    return artifact, created, parent


def _previous(registry: str, name: str, config: FleetConfig, given: str | None) -> Artifact | None:
    if given is not None:
        if reg.has_version(registry, name, given):
            return load_artifact(reg.version_uri(registry, name, given))
        if storage.exists(storage.join(given, "manifest.json")):
            return load_artifact(given)
        raise LifecycleError(f"--previous {given!r}: neither a version of {name} nor an artifact")
    version = serving_version(config, name) or reg.latest(registry, name)
    if version is None or not reg.has_version(registry, name, version):
        return None
    return load_artifact(reg.version_uri(registry, name, version))


def gate(
    config: FleetConfig,
    registry: str,
    function: str,
    candidate: Artifact,
    tolerance: float,
    data: str | None,
    runtime: Runtime | None = None,
) -> Gate:
    """Both versions' headline metric on the same data: ``data`` when given (both
    evaluated now, their backbones loaded as ``runtime`` says: device, weights cache, offline),
    else the candidate's report when it compared with the serving version."""
    m = candidate.manifest
    metric = GATE_METRIC[m.type]
    serving = serving_version(config, function)
    assert m.version is not None
    if serving is None or serving == m.version:
        return Gate(function, m.version, serving, metric, None, None, tolerance, "nothing")
    if data is not None:
        from models.evaluate import evaluate

        current = load_artifact(reg.version_uri(registry, function, serving))
        if current.manifest.labels != m.labels:
            raise LifecycleError(
                f"{function}: the label sets of {m.version} and {serving} differ; promote on"
                " the candidate's report (leave out --data) or --force"
            )
        runtime = runtime or defaults(Runtime)
        report, _ = evaluate(
            candidate,
            data,
            previous=current,
            device=runtime.device,
            cache_dir=runtime.cache_dir,
            offline=runtime.offline,
        )
        return Gate(
            function,
            m.version,
            serving,
            metric,
            float(report["metrics"][metric]),
            float(report["previous"]["metrics"][metric]),
            tolerance,
            data,
        )
    report = json.loads(candidate.files.get("report.json", b"{}"))
    block = report.get("previous") or {}
    if block.get("version") != serving or "metrics" not in block:
        raise LifecycleError(
            f"{function}: the report of {m.version} does not compare it with the serving"
            f" version {serving}; pass --data DATASET to evaluate both on the same data"
        )
    mine = block.get("this_version_on_same_samples") or report["metrics"]
    where = f"the same held-out split ({report.get('split', 'held-out split')})"
    return Gate(
        function,
        m.version,
        serving,
        metric,
        float(mine[metric]),
        float(block["metrics"][metric]),
        tolerance,
        where,
    )


def _history(
    config: FleetConfig, action: Action, function: str, version: str | None, **extra: object
) -> list[HistoryEntry]:
    entry = HistoryEntry(
        at=datetime.now(UTC),
        action=action,
        function=function,
        version=version,
        previous=serving_version(config, function),
        **extra,  # type: ignore[arg-type]
    )
    return [*config.history, entry]


def _with_entry(config: FleetConfig, entry: FleetEntry) -> list[FleetEntry]:
    others = [e for e in config.functions if (e.name, e.role) != (entry.name, entry.role)]
    return [*others, entry]


def _load_version(registry: str, function: str, version: str) -> Artifact:
    if not reg.has_version(registry, function, version):
        known = [r.version for r in reg.read_index(registry, function).versions]
        raise LifecycleError(
            f"{function} has no version {version!r} in {registry} (versions: {known or 'none'})"
        )
    return load_artifact(reg.version_uri(registry, function, version), with_files=True)


def promote(
    fleet: str,
    function: str,
    version: str,
    *,
    registry: str | None = None,
    tolerance: float = DEFAULT_TOLERANCE,
    data: str | None = None,
    force: bool = False,
    runtime: Runtime | None = None,
) -> tuple[FleetConfig, Gate]:
    """Make ``version`` the serving version of ``function`` if the gate passes it (or
    ``force``, which is logged and kept in the history with the gate's figures); ``runtime``:
    where the models run when ``data`` is evaluated (unset: the defaults)."""
    config = read_fleet_config(fleet)
    where = registry_of(config, fleet, registry)
    candidate = _load_version(where, function, version)
    try:
        verdict = gate(config, where, function, candidate, tolerance, data, runtime)
    except LifecycleError:
        if not force:
            raise
        verdict = Gate(function, version, serving_version(config, function), "", None, None, 0, "")
    if not verdict.passed and not force:
        raise GateRefused(verdict)
    forced = force and not verdict.passed
    if forced:
        log.warning("promotion forced past the gate: %s", verdict.describe())
    entries = _with_entry(config, FleetEntry(name=function, version=version))
    shadow = config.entry(function, Role.SHADOW)
    if shadow is not None and shadow.version == version:  # promoting the shadow
        entries = [e for e in entries if e is not shadow]
    history = _history(
        config, Action.PROMOTE, function, version, forced=forced, note=verdict.describe()
    )
    config = config.model_copy(
        update={"registry": config.registry or where, "functions": entries, "history": history}
    )
    write_fleet_config(fleet, config)
    return config, verdict


def rollback(fleet: str, function: str) -> tuple[FleetConfig, str]:
    """Serve again the version that served ``function`` before the current one."""
    config = read_fleet_config(fleet)
    current = serving_version(config, function)
    if current is None:
        raise LifecycleError(f"{function} has no serving version in {fleet}")
    # the last version that served before the change that made the current one serve
    made_current = config.promotion(function) or len(config.history) + 1
    earlier = [
        h.version
        for h in config.history[: made_current - 1]
        if h.function == function
        and h.action in (Action.ADD, Action.PROMOTE, Action.ROLLBACK)
        and h.version not in (None, current)
    ]
    if not earlier:
        raise LifecycleError(f"{function}: no earlier serving version than {current} to go back to")
    target = earlier[-1]
    entries = _with_entry(config, FleetEntry(name=function, version=target))
    history = _history(config, Action.ROLLBACK, function, target)
    config = config.model_copy(update={"functions": entries, "history": history})
    write_fleet_config(fleet, config)
    return config, target


def shadow(
    fleet: str, function: str, version: str | None, *, registry: str | None = None
) -> FleetConfig:
    """Run ``version`` as the shadow of ``function`` (``None``: stop the shadow)."""
    config = read_fleet_config(fleet)
    if config.entry(function) is None:
        raise LifecycleError(f"{function} has no serving entry in {fleet} to shadow")
    entries = [e for e in config.functions if (e.name, e.role) != (function, Role.SHADOW)]
    where = registry_of(config, fleet, registry)
    if version is not None:
        _load_version(where, function, version)
        entries.append(FleetEntry(name=function, version=version, role=Role.SHADOW))
    history = _history(config, Action.SHADOW, function, version)
    config = config.model_copy(
        update={"registry": config.registry or where, "functions": entries, "history": history}
    )
    write_fleet_config(fleet, config)
    return config


def remove(fleet: str, function: str, *, purge: bool = False) -> FleetConfig:
    """Take ``function`` (and its shadow) out of the fleet; ``purge``: the store deletes its
    results too when it follows the fleet (otherwise they stay, marked no longer served)."""
    config = read_fleet_config(fleet)
    entries = [e for e in config.functions if e.name != function]
    if len(entries) == len(config.functions):
        raise LifecycleError(f"no function named {function!r} in {fleet}")
    history = _history(config, Action.REMOVE, function, None, purge=purge)
    config = config.model_copy(update={"functions": entries, "history": history})
    write_fleet_config(fleet, config)
    return config


def add(fleet: str, entry: FleetEntry, version: str | None) -> FleetConfig:
    """Add or replace a serving entry that names an artifact location."""
    config = read_fleet_config(fleet)
    history = _history(config, Action.ADD, entry.name, version)
    config = config.model_copy(update={"functions": _with_entry(config, entry), "history": history})
    write_fleet_config(fleet, config)
    return config
