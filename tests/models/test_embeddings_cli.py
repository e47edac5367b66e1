"""``tagfleet embeddings maintain`` and ``stats`` over a real (LanceDB) store: the vector index
built from --index-min-rows on, stats saying so, search still exact for a duplicate."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from models.cli import main
from models.embedding_store import EmbeddingRow, LanceEmbeddingStore

BACKBONE = "config:0123456789abcdef|random:0"
SMALL = "ViT-B-32|laion2b_s34b_b79k"


def _rows(n: int, backbone: str, width: int, seed: int) -> list[EmbeddingRow]:
    rng = np.random.default_rng(seed)
    return [
        EmbeddingRow(f"s3://lib/{i:04d}.jpg", backbone, f"{i:064x}", rng.standard_normal(width))
        for i in range(n)
    ]


@pytest.fixture
def filled(tmp_path: Path) -> tuple[str, list[EmbeddingRow]]:
    location = str(tmp_path / "embeddings")
    rows = _rows(400, BACKBONE, 32, seed=1)
    store = LanceEmbeddingStore(location)
    for start in range(0, len(rows), 100):  # a few batches, as the service writes
        store.put(rows[start : start + 100])
    store.put(_rows(20, SMALL, 16, seed=2))
    return location, rows


def _json(capsys: pytest.CaptureFixture[str]) -> dict[str, Any]:
    return dict(json.loads(capsys.readouterr().out.strip().splitlines()[-1]))


def test_maintain_indexes_the_large_table_and_stats_says_so(
    filled: tuple[str, list[EmbeddingRow]], capsys: pytest.CaptureFixture[str]
) -> None:
    location, rows = filled
    assert main(["embeddings", "stats", "--embeddings", location]) == 0
    before = _json(capsys)["backbones"]
    assert before[BACKBONE]["rows"] == 400 and before[SMALL]["rows"] == 20
    assert not before[BACKBONE]["indexed"] and not before[SMALL]["indexed"]

    argv = ["embeddings", "maintain", "--embeddings", location, "--index-min-rows", "256"]
    assert main(argv) == 0
    after = _json(capsys)["backbones"]
    assert after[BACKBONE] == {"table": before[BACKBONE]["table"], "rows": 400, "indexed": True}
    assert after[SMALL]["rows"] == 20 and not after[SMALL]["indexed"]  # below 256 rows

    assert main(["embeddings", "stats", "--embeddings", location]) == 0
    assert _json(capsys)["backbones"] == after
    store = LanceEmbeddingStore(location)
    for row in rows[:20]:  # an exact duplicate comes first, from the index
        best, similarity = store.nearest(BACKBONE, np.asarray(row.vector), 3)[0]
        assert best == row.asset_id and similarity > 0.999


def test_no_index_compacts_only(
    filled: tuple[str, list[EmbeddingRow]], capsys: pytest.CaptureFixture[str]
) -> None:
    location, _ = filled
    argv = ["embeddings", "maintain", "--embeddings", location, "--index-min-rows", "256"]
    assert main([*argv, "--no-index"]) == 0
    assert not _json(capsys)["backbones"][BACKBONE]["indexed"]


def test_the_index_type_and_a_missing_store_are_checked(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit):
        main(["embeddings", "maintain", "--embeddings", str(tmp_path), "--index-type", "FLAT"])
    assert "invalid choice: 'FLAT'" in capsys.readouterr().err
    missing = str(tmp_path / "nowhere")
    with pytest.raises(SystemExit, match="no embedding store at"):
        main(["embeddings", "stats", "--embeddings", missing])
    assert not Path(missing).exists()  # not created empty


def test_help_explains_the_commands(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["embeddings", "maintain", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "vector index" in text and "CronJob" in text
    assert "TAGFLEET_EMBEDDINGS_MAINTAIN_INDEX_MIN_ROWS" in text
    with pytest.raises(SystemExit):
        main(["embeddings", "stats", "--help"])
    assert "whether it has a vector index" in " ".join(capsys.readouterr().out.split())
