"""Fixtures of tests/deploy: helm and promtool, built or installed once by infra/ scripts."""

from __future__ import annotations

from pathlib import Path

import pytest
from deploy_helpers import CHART, VALUES_FILES, ensure_tool, render


@pytest.fixture(scope="session")
def helm() -> Path:
    """helm built from the Go module proxy by infra/helm.sh (cached in ~/.cache/tagfleet/bin)."""
    path, seconds = ensure_tool("helm.sh")
    print(f"helm: {path} ({seconds:.1f}s)")
    return path


@pytest.fixture(scope="session")
def promtool() -> Path:
    """promtool from Debian's prometheus package, installed by infra/promtool.sh when missing."""
    path, seconds = ensure_tool("promtool.sh")
    print(f"promtool: {path} ({seconds:.1f}s)")
    return path


@pytest.fixture(scope="session")
def rendered(helm: Path) -> dict[str, list[dict]]:
    """The chart rendered with each values file of helm/tagfleet/ci/."""
    return {name: render(helm, "-f", str(CHART / "ci" / f"{name}.yaml")) for name in VALUES_FILES}
