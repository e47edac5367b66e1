"""The import contracts of ``pyproject.toml`` (``lint-imports``): models/ runs one way.

The second test shows that they are not vacuous: on a copy of the tree with one of the edges
that made the old cycles put back, ``lint-imports`` fails and names that edge.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from lint_imports import lint

ROOT = Path(__file__).resolve().parents[2]


def test_the_contracts_hold() -> None:
    done = lint(ROOT)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert " 0 broken" in done.stdout


OLD_EDGES = [
    # the inference head reached up into the command line (HeadType.train_cli)
    ("heads/detect.py", "from models.cli import cmd_train", "models.heads.detect -> models.cli"),
    # the COCO reader imported the dispatcher that imported it
    (
        "data/coco.py",
        "from models.data.load import load_dataset",
        "models.data.coco -> models.data.load",
    ),
    # the report took the evaluation record from the evaluate facade
    (
        "training/report.py",
        "from models.evaluate import evaluate",
        "models.training.report -> models.evaluate",
    ),
    # detect reused the generic task's internals
    (
        "tasks/detect.py",
        "from models.tasks.linear import evaluate_arrays",
        "models.tasks.detect -> models.tasks.linear",
    ),
]


@pytest.mark.parametrize(("path", "statement", "edge"), OLD_EDGES, ids=[e[2] for e in OLD_EDGES])
def test_an_old_edge_put_back_breaks_a_contract(
    tmp_path: Path, path: str, statement: str, edge: str
) -> None:
    ignore = shutil.ignore_patterns("__pycache__")
    for package in ("models", "consumers"):
        shutil.copytree(ROOT / package, tmp_path / package, ignore=ignore)
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    assert lint(tmp_path).returncode == 0  # the copy as it is keeps the contracts
    module = tmp_path / "models" / path
    module.write_text(module.read_text() + f"\n\ndef _put_back() -> None:\n    {statement}\n")

    done = lint(tmp_path)
    assert done.returncode != 0
    assert "BROKEN" in done.stdout
    assert edge in done.stdout, done.stdout[-3000:]
