"""The import contracts of ``pyproject.toml`` for consumers/ (``lint-imports``).

consumers/ runs one way (cli > demo > service > readiness, backfill > pipeline > stages >
adapters > pieces > ports > domain); the pipeline and its stages reach the adapters and the
models only through ``consumers.ports`` and import no Kafka, S3, database or torch client.
The contracts hold (tests/models/test_import_contracts.py runs ``lint-imports`` over both
packages), every module is placed in a layer, and, on a copy of the tree, an edge the
contracts forbid put back breaks them and is named.
"""

from __future__ import annotations

import shutil
import tomllib
from pathlib import Path

import pytest
from lint_imports import lint

ROOT = Path(__file__).resolve().parents[2]


def _contract(contract_id: str) -> dict:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    contracts = config["tool"]["importlinter"]["contracts"]
    return next(c for c in contracts if c["id"] == contract_id)


def test_every_module_of_consumers_has_a_layer() -> None:
    """A new module must be placed; one left out would be under no contract."""
    layers = _contract("consumers-layers")["layers"]
    named = {m.strip() for layer in layers for m in layer.split("|")}
    package = ROOT / "consumers"
    modules = {f"consumers.{p.stem}" for p in package.glob("*.py") if p.stem != "__init__"}
    modules |= {f"consumers.{p.parent.name}" for p in package.glob("*/__init__.py")}
    assert modules - named == set()
    assert named - modules == set()  # no stale name either


# (file under consumers/, the import put back, the edge the report names)
FORBIDDEN_EDGES = [
    # the pipeline imported kafka's TopicPartition and the Kafka adapter directly
    ("pipeline.py", "from kafka import TopicPartition", "consumers.pipeline -> kafka"),
    (
        "pipeline.py",
        "from consumers.source import KafkaSource",
        "consumers.pipeline -> consumers.source",
    ),
    # a stage took the record and its error from the Kafka producer instead of the ports
    (
        "stages/dead_letters.py",
        "from consumers.sinks import RecordRejected",
        "consumers.stages.dead_letters -> consumers.sinks",
    ),
    # ... or the store's error from the SQLAlchemy adapter
    (
        "stages/write.py",
        "from consumers.store.errors import StoreUnusable",
        "consumers.stages.write -> consumers.store.errors",
    ),
    # a stage that reaches the models instead of the Fleet port
    ("stages/infer.py", "from models.fleet import load_fleet", "consumers.stages.infer -> models"),
    # a piece under the pipeline that imports a client: the pipeline would import it too
    ("work.py", "import boto3", "consumers.work -> boto3"),
    # an adapter that reaches up into the pipeline or a stage
    (
        "source.py",
        "from consumers.pipeline import Pipeline",
        "consumers.source -> consumers.pipeline",
    ),
    ("sinks.py", "from consumers.stages import Storer", "consumers.sinks -> consumers.stages"),
    # the pipeline that reaches up into the service
    (
        "pipeline.py",
        "from consumers.service import run_service",
        "consumers.pipeline -> consumers.service",
    ),
    # two pieces that know each other
    (
        "results.py",
        "from consumers.events import parse_event",
        "consumers.results -> consumers.events",
    ),
    # a stage that uses another
    (
        "stages/infer.py",
        "from consumers.stages.write import Storer",
        "consumers.stages.infer -> consumers.stages.write",
    ),
    # the domain that knows a port
    ("domain.py", "from consumers.ports import Source", "consumers.domain -> consumers.ports"),
]


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the tree that keeps the contracts, to copy again for each edge."""
    root = tmp_path_factory.mktemp("pristine")
    ignore = shutil.ignore_patterns("__pycache__")
    for package in ("models", "consumers"):
        shutil.copytree(ROOT / package, root / package, ignore=ignore)
    shutil.copy(ROOT / "pyproject.toml", root / "pyproject.toml")
    done = lint(root)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return root


@pytest.mark.parametrize(
    ("path", "statement", "edge"), FORBIDDEN_EDGES, ids=[e[2] for e in FORBIDDEN_EDGES]
)
def test_a_forbidden_edge_put_back_breaks_a_contract(
    pristine: Path, tmp_path: Path, path: str, statement: str, edge: str
) -> None:
    root = tmp_path / "tree"
    shutil.copytree(pristine, root)
    module = root / "consumers" / path
    module.write_text(module.read_text() + f"\n\ndef _put_back() -> None:\n    {statement}\n")

    done = lint(root)
    assert done.returncode != 0
    assert "BROKEN" in done.stdout
    assert edge in done.stdout, done.stdout[-3000:]
