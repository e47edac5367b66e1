"""The fleet shares backbones: one forward pass per batch per backbone that is needed."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from models import Fleet, load_fleet, save_artifact, zero_shot
from models.fleet import FleetConfig, FleetEntry, Role, read_fleet_config, write_fleet_config


@pytest.fixture
def three_on_one(tiny_config: str, tmp_path: Path) -> Path:
    specs = [
        ("shape", "classify", ["circle", "square", "triangle"]),
        ("colours", "tags", ["red", "green", "blue"]),
        ("mood", "classify", ["happy", "sad"]),
    ]
    entries = []
    for name, kind, labels in specs:
        save_artifact(zero_shot(name, kind, labels, tiny_config), str(tmp_path / name))
        entries.append(FleetEntry(name=name, artifact=name))
    write_fleet_config(tmp_path / "fleet.yaml", FleetConfig(functions=entries))
    return tmp_path / "fleet.yaml"


def test_three_functions_on_one_backbone_run_it_once_per_batch(
    three_on_one: Path, images: list[np.ndarray]
) -> None:
    fleet = load_fleet(three_on_one)
    assert len(fleet.backbones) == 1
    backbone = next(iter(fleet.backbones.values()))
    for _ in range(3):
        results = fleet.predict(images, [(64, 64)] * len(images))
        assert all(set(r) == {"shape", "colours", "mood"} for r in results)
    assert backbone.forward_calls == 3


def test_per_image_function_selection(three_on_one: Path, images: list[np.ndarray]) -> None:
    fleet = load_fleet(three_on_one)
    wanted = [{"shape"}, None, {"mood", "not-in-fleet"}, set(), {"colours"}, {"shape"}]
    results = fleet.predict(images, [(64, 64)] * 6, functions=wanted)
    assert [set(r) for r in results] == [
        {"shape"},
        {"shape", "colours", "mood"},
        {"mood"},
        set(),
        {"colours"},
        {"shape"},
    ]
    full = fleet.predict(images, [(64, 64)] * 6)
    assert results[0]["shape"] == full[0]["shape"]


def test_only_backbones_of_requested_functions_run(
    tiny_config: str, images: list[np.ndarray]
) -> None:
    a = zero_shot("a", "classify", ["x", "y"], tiny_config)
    b = zero_shot("b", "classify", ["x", "y"], tiny_config, weights="random:1")
    fleet = Fleet.from_artifacts([a, b])
    assert len(fleet.backbones) == 2
    fleet.predict(images, [(64, 64)] * 6, functions=[{"a"}] * 6)
    calls = {key: bb.forward_calls for key, bb in fleet.backbones.items()}
    assert sorted(calls.values()) == [0, 1]


def test_disabled_functions_are_not_loaded(three_on_one: Path) -> None:
    config = FleetConfig.model_validate(
        {
            "functions": [
                {"name": "shape", "artifact": "shape", "enabled": False},
                {"name": "mood", "artifact": "mood"},
            ]
        }
    )
    write_fleet_config(three_on_one, config)
    assert set(load_fleet(three_on_one).functions) == {"mood"}


def test_duplicate_names_are_rejected() -> None:
    with pytest.raises(ValueError, match="duplicate function names"):
        FleetConfig.model_validate(
            {"functions": [{"name": "a", "artifact": "x"}, {"name": "a", "artifact": "y"}]}
        )


def test_a_head_only_shadow_runs_in_the_same_backbone_pass(
    three_on_one: Path, tiny_config: str, images: list[np.ndarray]
) -> None:
    """Issue 16: a shadow candidate on the serving function's backbone costs no extra pass;
    its results come apart from the serving ones, and ``predict`` alone never returns them."""
    candidate = zero_shot("shape", "classify", ["circle", "square"], tiny_config)
    save_artifact(candidate, str(three_on_one.parent / "shape-candidate"))
    config = read_fleet_config(three_on_one)
    config.functions.append(FleetEntry(name="shape", artifact="shape-candidate", role=Role.SHADOW))
    write_fleet_config(three_on_one, config)
    fleet = load_fleet(three_on_one)
    assert len(fleet.backbones) == 1 and set(fleet.shadows) == {"shape"}
    backbone = next(iter(fleet.backbones.values()))

    serving, shadows = fleet.predict_with_shadows(images, [(64, 64)] * len(images))

    assert backbone.forward_calls == 1  # one pass served the three functions and the shadow
    assert all(set(r) == {"shape", "colours", "mood"} for r in serving)
    assert all(
        set(s) == {"shape"} and set(s["shape"]["scores"]) == {"circle", "square"} for s in shadows
    )
    assert fleet.predict(images, [(64, 64)] * len(images)) == serving
    assert backbone.forward_calls == 2


def test_promoting_the_shadow_version_makes_it_serve(tiny_config: str, tmp_path: Path) -> None:
    from models.lifecycle import promote, shadow
    from models.registry import publish

    registry, fleet = str(tmp_path / "registry"), str(tmp_path / "fleet.yaml")
    versions: list[str] = []
    for labels in (["circle", "square"], ["circle", "square", "triangle"]):
        saved, _ = publish(zero_shot("shape", "classify", labels, tiny_config), registry, None)
        assert saved.manifest.version is not None
        versions.append(saved.manifest.version)
    promote(fleet, "shape", versions[0], registry=registry)
    shadow(fleet, "shape", versions[1])
    assert set(load_fleet(fleet).shadows) == {"shape"}

    config, _ = promote(fleet, "shape", versions[1], force=True)

    assert [(e.name, e.version, e.role) for e in config.functions] == [
        ("shape", versions[1], Role.SERVING)
    ]
    assert load_fleet(fleet).shadows == {}
    assert config.promotion("shape") == 3  # promote, shadow, promote
