"""Fixtures for the store tests: a migrated store on each backend, result factories and a
probe that proves a write changed nothing.

`pg_url` and `sqlite_url` come from tests/conftest.py (a fresh database per test).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from store_factories import WriteProbe

from consumers.store import TagStore

# The PostgreSQL case needs the local stack; mark it like tests/conftest.py marks `pg_url`.
BACKENDS = ["sqlite", pytest.param("postgresql", marks=pytest.mark.integration)]


@pytest.fixture(params=BACKENDS)
def store_url(request: pytest.FixtureRequest) -> str:
    """A fresh, empty database URL on each backend in turn."""
    return str(request.getfixturevalue("pg_url" if request.param == "postgresql" else "sqlite_url"))


@pytest.fixture
def store(store_url: str) -> Iterator[TagStore]:
    """A migrated store on a fresh database."""
    tag_store = TagStore(store_url)
    tag_store.upgrade()
    yield tag_store
    tag_store.close()


@pytest.fixture
def write_probe(store_url: str) -> Iterator[Callable[[], WriteProbe]]:
    probes: list[WriteProbe] = []

    def make() -> WriteProbe:
        probes.append(WriteProbe(store_url))
        return probes[-1]

    yield make
    for probe in probes:
        probe.close()
