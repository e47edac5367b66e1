"""``apply --from-embeddings`` and similar search on a large embedding store (issue 19).

Random float16 vectors (default 1,000,000 x 512, what a ViT-B backbone stores) are written
straight into a LanceDB embedding store (``models.embedding_store``'s table layout, in bulk
Arrow batches: the service's own ``put`` compares every row with the stored one, which a
synthetic bulk load does not need). Then, on the CPU:

- **apply, scoring**: what ``tagfleet apply`` does for every asset but the tag-store write:
  the store's scan, the function's pooled head (``results_from_embeddings``: the matrix
  product and the result objects), over the whole store -- assets/s;
- **apply, end to end**: ``consumers.apply_embeddings.score_library`` with the writes to a
  real tag store (SQLite file by default, ``--store URL`` for PostgreSQL) on the first
  ``--write-rows`` assets (``--prefix``) -- assets/s; at 1,000,000 the write is the bound;
- **similar search**: ``Searcher.similar`` (the store's ``nearest`` + the tenant check in the
  tag store) for ``--queries`` random assets: p50/p95 before the index (exact scan) and after
  ``maintain()`` built the IVF-HNSW-SQ index, with recall@20 against the exact top 20.

    python -m benchmarks.embeddings_apply [--rows 1000000] [--dim 512] [--write-rows 20000]

Figures go to ``var/bench/results/embeddings_apply.json`` and, by hand, ``docs/benchmarks.md``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from benchmarks.common import RESULTS
from consumers.apply_embeddings import ApplyOptions, score_library
from consumers.domain import AssetResult
from consumers.library_search import Searcher
from consumers.store import TagStore
from models.artifacts import Artifact
from models.backbones import backbone_key
from models.embedding_store import LanceEmbeddingStore
from models.from_embeddings import exact_nearest, pooled_weights, results_from_embeddings
from models.manifest import BackboneRef, Manifest, Mode

LABELS = [f"label-{i}" for i in range(20)]
PREFIX = "s3://bench/photos/"


def asset_id(i: int) -> str:
    return f"{PREFIX}{i:08d}.jpg"


def function(dim: int) -> Artifact:
    """A tags function of 20 labels on a pooled head, random weights (the arithmetic is the
    same whatever the weights)."""
    gen = torch.Generator().manual_seed(0)
    state = {
        "linear.weight": torch.randn(len(LABELS), dim, generator=gen),
        "linear.bias": torch.zeros(len(LABELS)),
    }
    manifest = Manifest(
        name="bench-tags",
        type="tags",
        labels=LABELS,
        backbone=BackboneRef(model="ViT-B-32", weights="bench"),
        mode=Mode.PROBE,
        head={"pooling": "pooled"},
        thresholds=dict.fromkeys(LABELS, 0.9),
    )
    return Artifact(manifest, state).with_version()


def fill(store: LanceEmbeddingStore, key: str, rows: int, dim: int, batch: int = 50_000) -> float:
    """Write ``rows`` random float16 vectors in bulk; seconds taken."""
    import pyarrow as pa

    table = store._create(key, dim)
    rng = np.random.default_rng(0)
    started = time.perf_counter()
    for start in tqdm(range(0, rows, batch), desc="fill", unit="batch"):
        n = min(batch, rows - start)
        vectors = rng.standard_normal((n, dim), dtype=np.float32).astype(np.float16)
        ids = [asset_id(i) for i in range(start, start + n)]
        flat = pa.array(vectors.reshape(-1), type=pa.float16())
        data = pa.table(
            {
                "asset_id": pa.array(ids, pa.string()),
                "content_hash": pa.array(ids, pa.string()),
                "tenant": pa.array([None] * n, pa.string()),
                "vector": pa.FixedSizeListArray.from_arrays(flat, dim),
            },
            schema=table.schema,
        )
        table.add(data)
    table.optimize()
    return time.perf_counter() - started


def scoring(store: LanceEmbeddingStore, key: str, artifact: Artifact, batch: int) -> dict[str, Any]:
    weights = pooled_weights(artifact)
    started = time.perf_counter()
    n = 0
    for ids, vectors in tqdm(store.scan(key, batch_size=batch), desc="score", unit="batch"):
        results_from_embeddings(artifact, vectors, weights)
        n += len(ids)
    seconds = time.perf_counter() - started
    return {"assets": n, "seconds": round(seconds, 2), "assets_per_s": round(n / seconds)}


def seed_assets(tags: TagStore, n: int) -> float:
    """``n`` asset rows in the tag store in bulk (the tenant check of search reads them)."""
    from datetime import UTC, datetime

    import sqlalchemy as sa

    from consumers.store.models import assets
    from consumers.store.rows import asset_row

    now = datetime(2026, 12, 6, tzinfo=UTC)
    started = time.perf_counter()
    with tags.engine.begin() as conn:
        for start in tqdm(range(0, n, 20_000), desc="assets", unit="batch"):
            rows = [
                asset_row(AssetResult(asset_id(i), asset_id(i), "e", 640, 480, {}, None, now), now)
                for i in range(start, min(n, start + 20_000))
            ]
            conn.execute(sa.insert(assets), rows)
    return time.perf_counter() - started


def end_to_end(
    work: Path, tags: TagStore, artifact: Artifact, rows: int, dim: int, batch: int
) -> dict[str, Any]:
    """``score_library`` with its tag-store writes, on a store of the first ``rows`` assets."""
    small = LanceEmbeddingStore(str(work / "embeddings-e2e"))
    fill(small, backbone_key(artifact.manifest.backbone), rows, dim)
    options = ApplyOptions(from_embeddings=True, batch_size=batch, progress=True)
    summary = score_library(artifact, small, tags, options)
    record = summary.record()
    return {k: record[k] for k in ("scored", "written", "seconds", "assets_per_s")}


def timings(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    return {
        "p50_ms": round(statistics.median(ordered) * 1000, 1),
        "p95_ms": round(ordered[int(0.95 * (len(ordered) - 1))] * 1000, 1),
    }


def similar(
    store: LanceEmbeddingStore, tags: TagStore, key: str, rows: int, queries: int, exact: int
) -> dict[str, Any]:
    """``Searcher.similar`` (k=20) for ``queries`` random assets: p50/p95, recall@20 on the
    first ``exact`` against an exact scan."""
    searcher = Searcher(store, tags.engine, key)
    rng = np.random.default_rng(1)
    picks = [asset_id(int(i)) for i in rng.integers(0, rows, size=queries)]
    took = []
    recalls = []
    for n, asset in enumerate(tqdm(picks, desc="similar", unit="query")):
        started = time.perf_counter()
        hits = searcher.similar(asset, 20, "default")
        took.append(time.perf_counter() - started)
        if n < exact:
            vector = store.get(key, [asset])[asset]
            truth = {a for a, _ in exact_nearest(store, key, vector, 21) if a != asset}
            recalls.append(len(truth & {h["asset_id"] for h in hits}) / 20)
    out: dict[str, Any] = timings(took)
    out["queries"] = queries
    if recalls:
        out["recall_at_20"] = round(float(np.mean(recalls)), 3)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.embeddings_apply",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--rows", type=int, default=1_000_000, help="embeddings in the store")
    parser.add_argument("--dim", type=int, default=512, help="embedding width")
    parser.add_argument("--batch", type=int, default=8192, help="apply's scan batch")
    parser.add_argument(
        "--write-rows", type=int, default=20_000, help="assets apply also writes to the tag store"
    )
    parser.add_argument("--queries", type=int, default=200, help="similar searches timed")
    parser.add_argument("--exact", type=int, default=10, help="of which checked for recall@20")
    parser.add_argument("--store", default=None, help="tag store URL (default: an SQLite file)")
    parser.add_argument("--dir", default=None, help="work folder (default: a temporary one)")
    args = parser.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    work = Path(args.dir or tempfile.mkdtemp(prefix="tagfleet-bench-emb-"))
    store = LanceEmbeddingStore(str(work / "embeddings"))
    artifact = function(args.dim)
    key = backbone_key(artifact.manifest.backbone)
    results: dict[str, Any] = {
        "rows": args.rows,
        "dim": args.dim,
        "threads": torch.get_num_threads(),
    }
    results["fill_s"] = round(fill(store, key, args.rows, args.dim), 1)
    results["apply_scoring"] = scoring(store, key, artifact, args.batch)
    tags = TagStore(args.store or f"sqlite:///{work / 'tags.db'}")
    tags.upgrade()
    results["seed_assets_s"] = round(seed_assets(tags, args.rows), 1)
    results["apply_end_to_end"] = end_to_end(
        work, tags, artifact, args.write_rows, args.dim, args.batch
    )
    results["similar_exact_scan"] = similar(store, tags, key, args.rows, 10, 0)
    started = time.perf_counter()
    store.maintain()
    results["index_build_s"] = round(time.perf_counter() - started, 1)
    results["similar_indexed"] = similar(store, tags, key, args.rows, args.queries, args.exact)
    tags.close()
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "embeddings_apply.json").write_text(json.dumps(results, indent=2))
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
