"""The embedding store's backends side by side (issue 19 item 1): why LanceDB.

Three candidates hold N float16 vectors (default 100,000 x 512, what a ViT-B backbone gives):

- ``lancedb``: models.embedding_store as the service runs it (a local folder), indexed by
  ``maintain()`` with IVF-PQ (``lancedb-hnsw``: with IVF-HNSW-SQ);
- ``usearch``: a usearch HNSW index file (f16, cosine) plus an SQLite sidecar for the asset id,
  content hash and tenant (usearch keys are integers) -- not a dependency of tagfleet: install it
  beside to measure it (``pip install usearch==2.26.6``; skipped when missing);
- ``sqlite`` and ``postgres``: a plain table in the metadata store (the vector as a float16
  BLOB/BYTEA, primary key (backbone, asset_id), ``ON CONFLICT DO UPDATE ... WHERE changed``);
  search reads every row back and ranks in numpy (no pgvector on this machine's Debian).

For each: bulk load (batches of 4,096), the consumer's write pattern (batches of 32 new rows),
a replay of already-stored rows (must write 0), an exact top-10 (a full scan), the top-10 the
backend serves after indexing (LanceDB's IVF-HNSW-SQ, usearch's HNSW) with its recall@10
against the exact answer, and the size on disk (per million rows: x 1,000,000 / N, linear).

    python -m benchmarks.embedding_store [--rows 100000] [--dim 512] [--backends lancedb ...]

Figures go to ``var/bench/results/embedding_store.json`` and, by hand, ``docs/benchmarks.md``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sqlite3
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from tqdm import tqdm

from benchmarks.common import RESULTS
from benchmarks.stack import stack_env

BACKBONE = "ViT-B-32|bench"
QUERIES = 20


class Backend(Protocol):
    name: str

    def put(self, ids: list[str], vectors: np.ndarray) -> int: ...
    def exact(self, query: np.ndarray, k: int) -> list[str]: ...
    def index(self) -> None: ...
    def served(self, query: np.ndarray, k: int) -> list[str]: ...
    def size_bytes(self) -> int: ...
    def close(self) -> None: ...


def _hash(asset_id: str) -> str:
    return f"{abs(hash(asset_id)):064x}"[:64]


def _top(ids: list[str], matrix: np.ndarray, query: np.ndarray, k: int) -> list[str]:
    sims = matrix @ query / np.maximum(np.linalg.norm(matrix, axis=1), 1e-12)
    best = np.argpartition(-sims, min(k, len(sims) - 1))[:k]
    return [ids[i] for i in best[np.argsort(-sims[best])]]


def _folder_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


class Lance:
    def __init__(self, folder: Path, index_type: str = "IVF_PQ") -> None:
        from models.embedding_store import LanceEmbeddingStore

        self.name = "lancedb" if index_type == "IVF_PQ" else "lancedb-hnsw"
        self.index_type = index_type
        self.folder = folder
        self.store = LanceEmbeddingStore(str(folder), index_min_rows=1, maintain_every=0)

    def put(self, ids: list[str], vectors: np.ndarray) -> int:
        from models.embedding_store import EmbeddingRow

        rows = [EmbeddingRow(a, BACKBONE, _hash(a), v) for a, v in zip(ids, vectors, strict=True)]
        return self.store.put(rows)

    def exact(self, query: np.ndarray, k: int) -> list[str]:
        return [a for a, _ in self.store.nearest(BACKBONE, query, k)]

    def index(self) -> None:
        # a benchmark has no other reader: the versions before the index are dropped at once
        self.store.maintain(keep_versions=timedelta(0), index_type=self.index_type)

    def served(self, query: np.ndarray, k: int) -> list[str]:
        return self.exact(query, k)

    def size_bytes(self) -> int:
        return _folder_bytes(self.folder)

    def close(self) -> None:
        pass


class USearch:
    name = "usearch"

    def __init__(self, folder: Path, dim: int) -> None:
        from usearch.index import Index

        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self.index_ = Index(ndim=dim, metric="cos", dtype="f16")
        self.db = sqlite3.connect(folder / "sidecar.db")
        self.db.execute(
            "CREATE TABLE IF NOT EXISTS rows (key INTEGER PRIMARY KEY, asset_id TEXT UNIQUE,"
            " content_hash TEXT, tenant TEXT)"
        )
        self.next_key = 0

    durable = True  # save the index file after each write (the consumer's pattern)

    def put(self, ids: list[str], vectors: np.ndarray) -> int:
        marks = ",".join("?" * len(ids))  # placeholders only: the ids are parameters
        stored = dict(
            self.db.execute(
                f"SELECT asset_id, key FROM rows WHERE asset_id IN ({marks})",  # noqa: S608
                ids,
            ).fetchall()
        )
        halves = vectors.astype(np.float16)
        new_keys, new_vectors, sidecar = [], [], []
        for asset_id, vector in zip(ids, halves, strict=True):
            key = stored.get(asset_id)
            if key is not None:
                if np.array_equal(self.index_.get(key).astype(np.float16), vector):
                    continue
                self.index_.remove(key)
            else:
                key = self.next_key
                self.next_key += 1
                sidecar.append((key, asset_id, _hash(asset_id), None))
            new_keys.append(key)
            new_vectors.append(vector)
        if new_keys:
            self.index_.add(np.array(new_keys, dtype=np.uint64), np.stack(new_vectors))
            self.db.executemany("INSERT OR REPLACE INTO rows VALUES (?, ?, ?, ?)", sidecar)
            self.db.commit()
            if self.durable:  # usearch has no incremental persistence: the whole file
                self.index_.save(str(self.folder / "index.usearch"))
        return len(new_keys)

    def _id(self, keys: Iterator[int]) -> list[str]:
        out = []
        for key in keys:
            row = self.db.execute("SELECT asset_id FROM rows WHERE key = ?", (int(key),)).fetchone()
            out.append(row[0])
        return out

    def exact(self, query: np.ndarray, k: int) -> list[str]:
        found = self.index_.search(query.astype(np.float16), k, exact=True)
        return self._id(iter(found.keys))

    def index(self) -> None:
        self.index_.save(str(self.folder / "index.usearch"))  # HNSW is built as rows come

    def served(self, query: np.ndarray, k: int) -> list[str]:
        found = self.index_.search(query.astype(np.float16), k)
        return self._id(iter(found.keys))

    def size_bytes(self) -> int:
        return _folder_bytes(self.folder)

    def close(self) -> None:
        self.db.close()


class SqlTable:
    """The vectors in the metadata store: SQLite (a file) or PostgreSQL (the stack's)."""

    def __init__(self, url: str, name: str, path: Path | None = None) -> None:
        import sqlalchemy as sa

        self.name = name
        self.path = path
        self.engine = sa.create_engine(url)
        self.sa = sa
        with self.engine.begin() as con:
            con.execute(sa.text("DROP TABLE IF EXISTS bench_embeddings"))
            blob = "BYTEA" if name == "postgres" else "BLOB"
            con.execute(
                sa.text(
                    "CREATE TABLE bench_embeddings (backbone TEXT NOT NULL, asset_id TEXT NOT NULL,"
                    f" content_hash TEXT NOT NULL, tenant TEXT, vector {blob} NOT NULL,"
                    " PRIMARY KEY (backbone, asset_id))"
                )
            )

    def put(self, ids: list[str], vectors: np.ndarray) -> int:
        halves = vectors.astype(np.float16)
        rows = [
            {"b": BACKBONE, "a": a, "h": _hash(a), "v": v.tobytes()}
            for a, v in zip(ids, halves, strict=True)
        ]
        statement = self.sa.text(
            "INSERT INTO bench_embeddings (backbone, asset_id, content_hash, tenant, vector)"
            " VALUES (:b, :a, :h, NULL, :v) ON CONFLICT (backbone, asset_id) DO UPDATE"
            " SET vector = excluded.vector, content_hash = excluded.content_hash"
            " WHERE bench_embeddings.vector <> excluded.vector"
            " OR bench_embeddings.content_hash <> excluded.content_hash"
        )
        with self.engine.begin() as con:
            if self.name == "sqlite":
                before = self._changes(con)
                con.execute(statement, rows)
                written = self._changes(con) - before
            else:
                written = int(con.execute(statement, rows).rowcount)
        return written

    def _changes(self, con: Any) -> int:
        return int(con.exec_driver_sql("SELECT total_changes()").scalar())

    def _all(self) -> tuple[list[str], np.ndarray]:
        with self.engine.connect() as con:
            rows = con.execute(
                self.sa.text("SELECT asset_id, vector FROM bench_embeddings WHERE backbone = :b"),
                {"b": BACKBONE},
            ).fetchall()
        ids = [r[0] for r in rows]
        matrix = np.frombuffer(b"".join(bytes(r[1]) for r in rows), dtype=np.float16)
        return ids, matrix.reshape(len(ids), -1).astype(np.float32)

    def exact(self, query: np.ndarray, k: int) -> list[str]:
        ids, matrix = self._all()
        return _top(ids, matrix, query, k)

    def index(self) -> None:
        pass  # nothing to index without pgvector

    def served(self, query: np.ndarray, k: int) -> list[str]:
        return self.exact(query, k)

    def size_bytes(self) -> int:
        if self.name == "sqlite":
            assert self.path is not None
            return self.path.stat().st_size
        with self.engine.connect() as con:
            return int(
                con.execute(
                    self.sa.text("SELECT pg_total_relation_size('bench_embeddings')")
                ).scalar()
            )

    def close(self) -> None:
        if self.name == "postgres":
            with self.engine.begin() as con:
                con.execute(self.sa.text("DROP TABLE IF EXISTS bench_embeddings"))
        self.engine.dispose()


def _timed(run: Callable[[], Any]) -> tuple[float, Any]:
    started = time.perf_counter()
    value = run()
    return time.perf_counter() - started, value


def _p(values: list[float], q: float) -> float:
    return float(np.percentile(values, q))


class Library:
    """Embeddings shaped like an image library's: clusters (near-duplicates, one subject in many
    shots) rather than uniform noise, on which no approximate index can do well."""

    def __init__(self, dim: int, seed: int = 0, clusters: int = 2000) -> None:
        self.rng = np.random.default_rng(seed)
        self.centres = self.rng.standard_normal((clusters, dim)).astype(np.float32)

    def draw(self, n: int) -> np.ndarray:
        picked = self.centres[self.rng.integers(0, len(self.centres), n)]
        return picked + 0.6 * self.rng.standard_normal(picked.shape).astype(np.float32)


def measure(
    backend: Backend, rows: int, dim: int, seed: int = 0, size_only: bool = False
) -> dict[str, Any]:
    library = Library(dim, seed)
    rng = library.rng
    ids = [f"s3://library/photos/{i:08d}.jpg" for i in range(rows)]
    figures: dict[str, Any] = {"backend": backend.name, "rows": rows, "dim": dim}

    bulk = 4096
    if isinstance(backend, USearch):
        backend.durable = False  # saved once at the end of the load (in index())
    started = time.perf_counter()
    kept = []
    for start in tqdm(range(0, rows, bulk), desc=f"{backend.name}: bulk load", unit="batch"):
        chunk = ids[start : start + bulk]
        vectors = library.draw(len(chunk))
        kept.append(vectors[:1])
        backend.put(chunk, vectors)
    if isinstance(backend, USearch):
        backend.index()
        backend.durable = True
    figures["bulk_rows_per_s"] = rows / (time.perf_counter() - started)
    if size_only:  # no search: the store's size per million as the service writes it
        figures["size_mb_before_index"] = backend.size_bytes() / 1e6
        figures["size_gb_per_million"] = backend.size_bytes() / rows * 1e6 / 1e9
        figures["raw_vectors_gb_per_million"] = dim * 2 * 1e6 / 1e9
        return figures

    small, batches = 32, 30
    extra = [f"s3://library/new/{i:06d}.jpg" for i in range(small * batches)]
    extra_vectors = library.draw(len(extra))
    seconds, written = 0.0, 0
    for start in range(0, len(extra), small):
        took, n = _timed(
            lambda s=start: backend.put(extra[s : s + small], extra_vectors[s : s + small])
        )
        seconds += took
        written += n
    figures["small_batch_rows_per_s"] = len(extra) / seconds
    figures["small_batch_ms"] = 1000 * seconds / batches
    assert written == len(extra), (backend.name, written)

    seconds, rewritten = 0.0, 0
    for start in range(0, len(extra), small):
        took, n = _timed(
            lambda s=start: backend.put(extra[s : s + small], extra_vectors[s : s + small])
        )
        seconds += took
        rewritten += n
    figures["replay_rows_per_s"] = len(extra) / seconds
    figures["replay_rows_written"] = rewritten

    # queries near stored images (a "more like this" of a library picture)
    base = np.concatenate(kept)[rng.integers(0, len(kept), QUERIES)]
    queries = base + 0.3 * rng.standard_normal(base.shape).astype(np.float32)
    exact_ms, truth = [], []
    for query in queries:
        took, top = _timed(lambda q=query: backend.exact(q, 10))
        exact_ms.append(1000 * took)
        truth.append(top)
    figures["exact_top10_ms_p50"] = statistics.median(exact_ms)
    figures["exact_top10_ms_p95"] = _p(exact_ms, 95)

    size_before = backend.size_bytes()
    took, _ = _timed(backend.index)
    figures["index_build_s"] = took
    served_ms, recall = [], []
    for query, want in zip(queries, truth, strict=True):
        took, top = _timed(lambda q=query: backend.served(q, 10))
        served_ms.append(1000 * took)
        recall.append(len(set(top) & set(want)) / 10)
    figures["served_top10_ms_p50"] = statistics.median(served_ms)
    figures["served_top10_ms_p95"] = _p(served_ms, 95)
    figures["served_recall_at_10"] = float(np.mean(recall))

    total = rows + len(extra)
    figures["size_mb_before_index"] = size_before / 1e6
    figures["size_mb"] = backend.size_bytes() / 1e6
    figures["size_gb_per_million"] = backend.size_bytes() / total * 1e6 / 1e9
    figures["raw_vectors_gb_per_million"] = dim * 2 * 1e6 / 1e9
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=100_000, help="vectors (default 100,000)")
    parser.add_argument("--dim", type=int, default=512, help="vector width (default 512)")
    parser.add_argument(
        "--backends",
        nargs="+",
        default=["lancedb", "lancedb-hnsw", "usearch", "sqlite", "postgres"],
        help="which to measure (default all five; lancedb-hnsw: LanceDB with IVF-HNSW-SQ"
        " instead of IVF-PQ, many minutes to index)",
    )
    parser.add_argument("--out", type=Path, default=RESULTS, help="folder of the JSON results")
    parser.add_argument(
        "--size-only",
        action="store_true",
        help="load the rows and report the size on disk, nothing else (e.g. --rows 1000000)",
    )
    args = parser.parse_args()
    env = stack_env()
    work = Path(tempfile.mkdtemp(prefix="tagfleet-embbench-"))
    results = []
    try:
        for name in args.backends:
            backend: Backend
            if name == "lancedb":
                backend = Lance(work / "lance")
            elif name == "lancedb-hnsw":
                backend = Lance(work / "lance-hnsw", "IVF_HNSW_SQ")
            elif name == "usearch":
                try:
                    backend = USearch(work / "usearch", args.dim)
                except ImportError:
                    print("usearch is not installed (pip install usearch==2.26.6): skipped")
                    continue
            elif name == "sqlite":
                path = work / "store.db"
                backend = SqlTable(f"sqlite:///{path}", "sqlite", path)
            elif name == "postgres":
                backend = SqlTable(env["TAGFLEET_TEST_PG_URL"], "postgres")
            else:
                parser.error(f"unknown backend {name!r}")
            try:
                figures = measure(backend, args.rows, args.dim, size_only=args.size_only)
            finally:
                backend.close()
            print(json.dumps(figures, indent=1), flush=True)
            results.append(figures)
            args.out.mkdir(parents=True, exist_ok=True)  # after each: a later one may fail
            (args.out / "embedding_store.json").write_text(json.dumps(results, indent=1) + "\n")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(
        f"{'backend':10} {'bulk/s':>9} {'32-batch ms':>11} {'replay written':>14} "
        f"{'exact p50 ms':>12} {'served p50 ms':>13} {'recall':>6} {'GB/M':>6}"
    )
    for f in results:
        if "small_batch_ms" not in f:  # --size-only
            print(
                f"{f['backend']:10} {f['bulk_rows_per_s']:9.0f}"
                f" size {f['size_gb_per_million']:.2f} GB/M"
            )
            continue
        print(
            f"{f['backend']:10} {f['bulk_rows_per_s']:9.0f} {f['small_batch_ms']:11.1f} "
            f"{f['replay_rows_written']:14d} {f['exact_top10_ms_p50']:12.1f} "
            f"{f['served_top10_ms_p50']:13.1f} {f['served_recall_at_10']:6.2f} "
            f"{f['size_gb_per_million']:6.2f}"
        )


if __name__ == "__main__":
    main()
