"""Fixtures of the fault suite; the stack fixtures are in the root conftest.

The service-test helpers (``tests/consumers/harness.py``) are shared, not copied.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "consumers"))

from harness import build_test_fleet  # noqa: E402
from ledger import FIGURES  # noqa: E402

REPORT = Path(__file__).resolve().parents[2] / "var" / "faults" / "figures.json"


@pytest.fixture(scope="session")
def fleet_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fleet.yaml of two zero-shot functions (classify ``shape``, tags ``colours``)."""
    return build_test_fleet(tmp_path_factory.mktemp("fleet"))


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Every scenario's figures, also when it passed (and in var/faults/figures.json)."""
    if not FIGURES:
        return
    terminalreporter.section("fault suite figures")
    for row in FIGURES:
        recover = "-" if row["recover_s"] is None else f"{row['recover_s']:.1f}s"
        terminalreporter.write_line(
            f"{row['scenario']}: produced={row['produced']} stored={row['stored']}"
            f" dead_lettered={row['dead_lettered']} lost={row['lost']}"
            f" duplicates={row['duplicates']} redeliveries={row['redeliveries']}"
            f" max_attempts={row['max_attempts']} time_to_recover={recover} {row['extra']}"
        )
    REPORT.parent.mkdir(parents=True, exist_ok=True)
    REPORT.write_text(json.dumps(FIGURES, indent=1, default=str) + "\n")


@pytest.fixture
def kafka_client() -> str:
    """The service's Kafka client in a scenario not parametrized by client (the default); the
    scenarios that involve the group run on each client:
    ``@pytest.mark.parametrize("kafka_client", scenario.CLIENTS)``."""
    return "kafka-python"


@pytest.fixture
def scenario(
    stack,
    kafka_bootstrap,
    kafka_admin,
    new_topic,
    new_bucket,
    s3,
    pg_url,
    fleet_path,
    tmp_path,
    kafka_client,
):
    """A :class:`scenario.Scenario` on a fresh topic, bucket and PostgreSQL database, its
    consumers on ``kafka_client``; they are killed and its ledger closed afterwards."""
    from scenario import Scenario

    world = Scenario(
        stack,
        kafka_bootstrap,
        kafka_admin,
        new_topic,
        new_bucket(),
        s3,
        pg_url,
        fleet_path,
        tmp_path,
        kafka_client=kafka_client,
    )
    yield world
    world.stop_all()
    world.ledger.close()
