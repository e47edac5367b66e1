"""The live reload's decisions (issue 16 item 3): a fleet that fails to load, fails the
canary or changes the input size is refused and counted; a good one makes the store follow
it and is handed to the inference stage once. The fleet and store are small fakes (pure
decision logic); the service end to end is tests/consumers/test_lifecycle_e2e.py."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from consumers.fleet_reload import FleetReloader
from consumers.metrics import Metrics
from consumers.store.versions import FollowStats
from models.tile_grid import Tiling


class _Fleet:
    def __init__(
        self, input_size: int = 64, broken: bool = False, tiled: dict[str, Any] | None = None
    ) -> None:
        self.input_size, self.broken, self.tiled_functions = input_size, broken, tiled or {}
        self.functions: dict[str, Any] = {}
        self.shadows: dict[str, Any] = {}

    def predict(self, images: Any, sizes: Any, functions: Any) -> list[dict[str, Any]]:
        if self.broken:
            raise RuntimeError("NaN in the head")
        return [{} for _ in images]


class _Store:
    def __init__(self) -> None:
        self.followed: list[tuple[Any, Any]] = []

    def follow_fleet(self, serving: Any, removed: Any) -> FollowStats:
        self.followed.append((serving, removed))
        return FollowStats()


def _reloader(tmp_path: Path, load: Any, store: _Store, metrics: Metrics) -> FleetReloader:
    path = tmp_path / "fleet.yaml"
    path.write_text("functions: []\n")
    return FleetReloader(
        path=str(path), load=load, input_size=64, store=store, metrics=metrics, interval_s=60
    )


def _count(metrics: Metrics, outcome: str) -> float:
    value = metrics.registry.get_sample_value("tagfleet_fleet_reloads_total", {"outcome": outcome})
    return float(value or 0)


@pytest.mark.parametrize(
    ("fleet", "outcome"),
    [
        (None, "load_failed"),
        (_Fleet(broken=True), "canary_failed"),
        (_Fleet(input_size=224), "input_size_changed"),
        # a function read in tiles: the decoder started without them cuts none
        (_Fleet(tiled={"surface": (Tiling(250),)}), "input_size_changed"),
    ],
)
def test_a_bad_fleet_is_refused_and_the_old_one_keeps_serving(
    tmp_path: Path, fleet: _Fleet | None, outcome: str
) -> None:
    def load(config: Any) -> _Fleet:
        if fleet is None:
            raise ValueError("functions.0.version: string does not match the pattern")
        return fleet

    metrics, store = Metrics(), _Store()
    reloader = _reloader(tmp_path, load, store, metrics)

    assert reloader.check(str(tmp_path / "fleet.yaml")) is False

    assert reloader.take() is None  # nothing to swap: the old fleet serves on
    assert _count(metrics, outcome) == 1 and _count(metrics, "applied") == 0
    assert store.followed == []  # the store does not follow a refused fleet


def test_a_good_fleet_is_followed_by_the_store_then_taken_once(tmp_path: Path) -> None:
    metrics, store, fleet = Metrics(), _Store(), _Fleet()
    reloader = _reloader(tmp_path, lambda config: fleet, store, metrics)

    assert reloader.check(str(tmp_path / "fleet.yaml")) is True

    assert store.followed == [({}, {})]
    assert reloader.take() is fleet and reloader.take() is None
    assert _count(metrics, "applied") == 1
