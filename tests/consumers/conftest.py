"""Fixtures of the service tests (the stack fixtures are in the root conftest)."""

from __future__ import annotations

from pathlib import Path

import pytest
from harness import build_test_fleet


@pytest.fixture(scope="session")
def fleet_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fleet.yaml of two zero-shot functions (classify ``shape``, tags ``colours``)."""
    return build_test_fleet(tmp_path_factory.mktemp("fleet"))
