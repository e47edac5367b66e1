"""models.embedding_store: idempotent writes, reads, filters, search, removal."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from models.embedding_store import (
    EmbeddingRow,
    EmbeddingStore,
    EmbeddingStoreError,
    LanceEmbeddingStore,
    open_embedding_store,
)

BACKBONE = "config:0123456789abcdef|random:0"
OTHER = "ViT-B-32|laion2b_s34b_b79k"
WIDTH = 32


def _rows(
    n: int,
    *,
    seed: int = 0,
    backbone: str = BACKBONE,
    width: int = WIDTH,
    prefix: str = "s3://lib/",
    tenant: str | None = None,
) -> list[EmbeddingRow]:
    rng = np.random.default_rng(seed)
    return [
        EmbeddingRow(
            asset_id=f"{prefix}{i:04d}.jpg",
            backbone=backbone,
            content_hash=f"{i:064x}",
            vector=rng.standard_normal(width).astype(np.float32),
            tenant=tenant,
        )
        for i in range(n)
    ]


@pytest.fixture
def store(tmp_path: Path) -> LanceEmbeddingStore:
    opened = open_embedding_store(str(tmp_path / "embeddings"))
    assert isinstance(opened, LanceEmbeddingStore)
    return opened


def test_put_is_idempotent_on_backbone_and_asset_id(store: LanceEmbeddingStore) -> None:
    rows = _rows(50)
    assert store.put(rows) == 50
    assert store.put(rows) == 0  # a replay writes nothing
    assert store.count(BACKBONE) == 50

    changed = [
        EmbeddingRow(rows[0].asset_id, BACKBONE, rows[0].content_hash, rows[0].vector + 1.0),
        EmbeddingRow(rows[1].asset_id, BACKBONE, "f" * 64, rows[1].vector),
        EmbeddingRow(rows[2].asset_id, BACKBONE, rows[2].content_hash, rows[2].vector, "acme"),
    ]
    assert store.put(changed + rows[3:10]) == 3
    assert store.count(BACKBONE) == 50
    got = store.get(BACKBONE, [rows[0].asset_id])[rows[0].asset_id]
    np.testing.assert_allclose(got, rows[0].vector + 1.0, rtol=1e-3, atol=1e-3)


def test_the_last_row_of_an_asset_in_one_batch_wins(store: LanceEmbeddingStore) -> None:
    first, second = _rows(1, seed=1)[0], _rows(1, seed=2)[0]
    assert store.put([first, second]) == 1
    assert store.count(BACKBONE) == 1
    np.testing.assert_array_equal(
        store.get(BACKBONE, [first.asset_id])[first.asset_id],
        second.vector.astype(np.float16).astype(np.float32),
    )


def test_get_returns_float32_copies_of_the_float16_vectors(store: LanceEmbeddingStore) -> None:
    rows = _rows(20)
    store.put(rows)
    wanted = [rows[3].asset_id, "s3://lib/missing.jpg", rows[7].asset_id, rows[3].asset_id]
    got = store.get(BACKBONE, wanted)
    assert set(got) == {rows[3].asset_id, rows[7].asset_id}
    for row in (rows[3], rows[7]):
        assert got[row.asset_id].dtype == np.float32
        assert got[row.asset_id].shape == (WIDTH,)
        np.testing.assert_array_equal(
            got[row.asset_id], row.vector.astype(np.float16).astype(np.float32)
        )
    got[rows[3].asset_id][:] = 0  # a copy: the store is untouched
    assert np.any(store.get(BACKBONE, [rows[3].asset_id])[rows[3].asset_id])
    assert store.get(OTHER, [rows[3].asset_id]) == {}
    assert store.get(BACKBONE, []) == {}


def test_backbones_keep_their_own_tables_and_widths(store: LanceEmbeddingStore) -> None:
    assert store.backbones() == []
    store.put(_rows(5) + _rows(3, backbone=OTHER, width=16))
    assert store.backbones() == sorted([BACKBONE, OTHER])
    assert (store.count(BACKBONE), store.count(OTHER), store.count("nope|x")) == (5, 3, 0)
    assert next(iter(store.get(OTHER, ["s3://lib/0001.jpg"]).values())).shape == (16,)


def test_scan_filters_by_prefix_and_tenant_in_batches(store: LanceEmbeddingStore) -> None:
    # asset ids with the characters a filter must not misread
    store.put(
        _rows(30, prefix="s3://lib/it's 50%_a/", tenant="acme")
        + _rows(20, seed=1, prefix="s3://lib/other/", tenant="globex")
        + _rows(10, seed=2, prefix="s3://lib/it's 50%_b/")
    )
    everything: dict[str, np.ndarray] = {}
    for batch, matrix in store.scan(BACKBONE, batch_size=7):
        assert 0 < len(batch) <= 7
        assert matrix.shape == (len(batch), WIDTH)
        assert matrix.dtype == np.float32
        everything.update(zip(batch, matrix, strict=True))
    assert len(everything) == 60
    stored = store.get(BACKBONE, list(everything))
    for asset_id, vector in everything.items():
        np.testing.assert_array_equal(vector, stored[asset_id])

    def ids(prefix: str | None = None, tenant: str | None = None) -> set[str]:
        return {i for batch, _ in store.scan(BACKBONE, prefix=prefix, tenant=tenant) for i in batch}

    assert ids(prefix="s3://lib/it's 50%_a/") == {
        f"s3://lib/it's 50%_a/{i:04d}.jpg" for i in range(30)
    }
    assert ids(prefix="s3://lib/it's 50%") == ids(prefix="s3://lib/it's 50%_a/") | ids(
        prefix="s3://lib/it's 50%_b/"
    )
    assert ids(prefix="s3://lib/it's 50%_") == ids(prefix="s3://lib/it's 50%")  # no wildcard
    assert ids(prefix="s3://lib/it's 5_%") == set()
    assert ids(tenant="globex") == {f"s3://lib/other/{i:04d}.jpg" for i in range(20)}
    assert ids(tenant="acme", prefix="s3://lib/other/") == set()
    assert list(store.scan(OTHER)) == []


def _brute_force(rows: list[EmbeddingRow], query: np.ndarray, k: int) -> list[tuple[str, float]]:
    matrix = np.stack([r.vector.astype(np.float16).astype(np.float64) for r in rows])
    sims = matrix @ query / (np.linalg.norm(matrix, axis=1) * np.linalg.norm(query))
    order = np.argsort(-sims)[:k]
    return [(rows[i].asset_id, float(sims[i])) for i in order]


def test_nearest_is_the_exact_cosine_top_k_when_small(store: LanceEmbeddingStore) -> None:
    acme = _rows(200, seed=3, prefix="s3://lib/acme/", tenant="acme")
    globex = _rows(100, seed=4, prefix="s3://lib/globex/", tenant="globex")
    store.put(acme + globex)
    rng = np.random.default_rng(5)
    for _ in range(5):
        query = rng.standard_normal(WIDTH)
        got = store.nearest(BACKBONE, query, 10)
        want = _brute_force(acme + globex, query, 10)
        assert [a for a, _ in got] == [a for a, _ in want]
        np.testing.assert_allclose([s for _, s in got], [s for _, s in want], atol=1e-3)
        got_acme = store.nearest(BACKBONE, query, 10, tenant="acme")
        assert [a for a, _ in got_acme] == [a for a, _ in _brute_force(acme, query, 10)]
    own = acme[17]
    assert store.nearest(BACKBONE, own.vector, 1)[0][0] == own.asset_id
    assert store.nearest(OTHER, own.vector, 3) == []
    assert len(store.nearest(BACKBONE, own.vector, 1000)) == 300


@pytest.mark.parametrize("index_type", ["IVF_PQ", "IVF_HNSW_SQ"])
def test_nearest_with_an_approximate_index_still_finds_each_vector(
    tmp_path: Path, index_type: str
) -> None:
    store = LanceEmbeddingStore(str(tmp_path / "e"), index_min_rows=256)
    rows = _rows(600, seed=6)
    store.put(rows)
    assert not store._has_vector_index(store._open(BACKBONE))
    store.maintain(index_type=index_type)
    assert store._has_vector_index(store._open(BACKBONE))
    hits = sum(store.nearest(BACKBONE, r.vector, 1)[0][0] == r.asset_id for r in rows[:50])
    assert hits >= 48  # approximate candidates, exactly re-ranked
    late = _rows(1, seed=7, prefix="s3://lib/late/")[0]
    store.put([late])  # not in the index yet: still found
    assert store.nearest(BACKBONE, late.vector, 1)[0][0] == late.asset_id


def test_delete_removes_the_assets_under_every_backbone(store: LanceEmbeddingStore) -> None:
    store.put(_rows(10) + _rows(10, backbone=OTHER, width=16))
    gone = ["s3://lib/0002.jpg", "s3://lib/0005.jpg", "s3://lib/never.jpg"]
    assert store.delete(gone) == 4
    assert (store.count(BACKBONE), store.count(OTHER)) == (8, 8)
    assert store.get(BACKBONE, gone) == {} == store.get(OTHER, gone)
    assert all(a not in gone for a, _ in store.nearest(BACKBONE, np.ones(WIDTH), 10))
    assert store.delete(gone) == 0
    assert store.put(_rows(10)) == 2  # put back what was deleted, nothing else


def test_another_handle_sees_the_writes(tmp_path: Path) -> None:
    location = str(tmp_path / "shared")
    writer, reader = open_embedding_store(location), open_embedding_store(location)
    assert reader.count(BACKBONE) == 0
    writer.put(_rows(5))
    assert reader.count(BACKBONE) == 5
    assert reader.backbones() == [BACKBONE]
    writer.put(_rows(8))
    assert reader.count(BACKBONE) == 8
    assert reader.put(_rows(8)) == 0


@pytest.mark.parametrize(
    ("row", "message"),
    [
        (EmbeddingRow("a", BACKBONE, "h", np.zeros((2, WIDTH))), "1-D"),
        (EmbeddingRow("a", BACKBONE, "h", np.array([])), "1-D"),
        (EmbeddingRow("a", BACKBONE, "h", np.full(WIDTH, np.nan)), "NaN"),
        (EmbeddingRow("a", BACKBONE, "h", np.full(WIDTH, 1e6)), "float16"),
        (EmbeddingRow("", BACKBONE, "h", np.ones(WIDTH)), "asset_id"),
        (EmbeddingRow("a", BACKBONE, "", np.ones(WIDTH)), "content_hash"),
        (EmbeddingRow("a", BACKBONE, "h", np.ones(WIDTH + 1)), "32-D"),
    ],
)
def test_a_bad_row_is_refused_with_a_reason(
    store: LanceEmbeddingStore, row: EmbeddingRow, message: str
) -> None:
    store.put(_rows(1))
    with pytest.raises(EmbeddingStoreError, match=message):
        store.put([row])
    assert store.count(BACKBONE) == 1


def test_a_bad_query_is_refused_with_a_reason(store: LanceEmbeddingStore) -> None:
    store.put(_rows(3))
    with pytest.raises(EmbeddingStoreError, match="k must be"):
        store.nearest(BACKBONE, np.ones(WIDTH), 0)
    with pytest.raises(EmbeddingStoreError, match="zero"):
        store.nearest(BACKBONE, np.zeros(WIDTH), 1)
    with pytest.raises(EmbeddingStoreError, match="32-D"):
        store.nearest(BACKBONE, np.ones(8), 1)
    with pytest.raises(EmbeddingStoreError, match="batch_size"):
        list(store.scan(BACKBONE, batch_size=0))
    with pytest.raises(EmbeddingStoreError, match="empty"):
        open_embedding_store(" ")
    with pytest.raises(ValueError, match="bucket"):
        open_embedding_store("s3://No_Such Bucket/x")


@pytest.mark.integration
def test_an_s3_prefix_holds_a_store(new_bucket: Callable[..., str], s3: object) -> None:
    bucket = new_bucket("emb")
    store = open_embedding_store(f"s3://{bucket}/tagfleet/embeddings")
    rows = _rows(40, tenant="acme")
    assert store.put(rows) == 40
    assert store.put(rows) == 0
    again = open_embedding_store(f"s3://{bucket}/tagfleet/embeddings")
    assert again.count(BACKBONE) == 40
    assert again.nearest(BACKBONE, rows[9].vector, 1, tenant="acme")[0][0] == rows[9].asset_id
    assert again.delete([rows[0].asset_id]) == 1
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"]]  # type: ignore[attr-defined]
    assert keys and all(k.startswith("tagfleet/embeddings/") for k in keys)


def test_writers_racing_on_the_same_new_assets_leave_one_row_each(tmp_path: Path) -> None:
    """Two consumers write the same new assets during a rebalance: asset_id is the table's
    primary key, so their merges conflict and retry instead of both inserting."""
    import threading

    location = str(tmp_path / "raced")
    rows = _rows(120, seed=8)
    writers = [open_embedding_store(location) for _ in range(4)]
    start = threading.Barrier(len(writers))
    errors: list[BaseException] = []

    def write(store: EmbeddingStore) -> None:
        start.wait()
        try:
            for at in range(0, len(rows), 20):
                store.put(rows[at : at + 20])
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(w,)) for w in writers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    reader = open_embedding_store(location)
    ids = [i for batch, _ in reader.scan(BACKBONE) for i in batch]
    assert len(ids) == len(set(ids)) == reader.count(BACKBONE) == len(rows)


def test_writes_compact_and_index_the_key_every_few_writes(tmp_path: Path) -> None:
    store = LanceEmbeddingStore(str(tmp_path / "e"), maintain_every=3)
    rows = _rows(30, seed=9)
    for at in range(0, 30, 10):
        store.put(rows[at : at + 10])
    table = store._open(BACKBONE)
    assert table is not None
    assert [list(index.columns) for index in table.list_indices()] == [["asset_id"]]
    assert store.put(rows) == 0 and store.count(BACKBONE) == 30
    assert set(store.get(BACKBONE, [r.asset_id for r in rows])) == {r.asset_id for r in rows}
    with pytest.raises(EmbeddingStoreError, match="IVF_PQ or IVF_HNSW_SQ"):
        LanceEmbeddingStore(str(tmp_path / "e"), index_min_rows=1).maintain(index_type="flat")
