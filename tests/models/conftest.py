"""Fixtures for model tests: tiny backbones (random init, no downloads) and generated images."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from models.backbones import CONFIG_DIR

TINY_CONFIG = str(CONFIG_DIR / "tiny-vit.json")


@pytest.fixture(autouse=True, scope="session")
def _threads() -> None:
    torch.set_num_threads(2)


@pytest.fixture(autouse=True)
def _cache_dir(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TAGFLEET_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))


@pytest.fixture
def tiny_config() -> str:
    """Path of the tiny ViT open_clip config (64 px, patch 8, width 64, 2 layers)."""
    return TINY_CONFIG


@pytest.fixture
def images() -> list[np.ndarray]:
    """Six fixed random 64x64 uint8 RGB images."""
    rng = np.random.default_rng(0)
    return [rng.integers(0, 256, size=(64, 64, 3), dtype=np.uint8) for _ in range(6)]
