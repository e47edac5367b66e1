"""The embedding store: each asset's pooled image embedding per backbone, kept for later use.

What the service computed once (the backbone's pooled ``features`` of every image it tagged) is
kept so that training a new label, scoring the library and searching by image or text never
fetch or decode an image again (issue 19). One LanceDB table per backbone (the vectors of two
backbones have different widths and meanings), in a local folder or under an ``s3://`` prefix:
embedded (no server), columnar on disk so it scales past memory, with an approximate vector
index once a table is large (:meth:`LanceEmbeddingStore.maintain`). ``docs/architecture.md``
says why LanceDB and not usearch or a table in the metadata store
(measured by ``benchmarks/embedding_store.py``).

Rows are keyed by ``(backbone, asset_id)``: :meth:`~EmbeddingStore.put` compares with what is
stored and writes only new or changed rows, so a replay of the same events writes nothing.
Vectors are stored as float16 and read back as float32 copies.
"""

from __future__ import annotations

import hashlib
import os
import threading
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any, Protocol, cast

import numpy as np

from models.s3uri import is_s3, split

STORED_DTYPE = np.float16
TABLE_PREFIX = "emb_"
PROBE_PREFIX = "probe_"  # LanceEmbeddingStore.probe's scratch tables
BACKBONE_METADATA = b"tagfleet.backbone"
# asset_id as the table's (unenforced) primary key: concurrent merge_inserts of the same new
# asset (two consumers during a rebalance) then conflict and retry instead of both inserting
PRIMARY_KEY = b"lance-schema:unenforced-primary-key:position"
# Below this many rows a table is searched by an exact scan; from it on, maintain() builds an
# approximate vector index (rows added since are still scanned exactly until the next one).
INDEX_MIN_ROWS = 100_000
# put() compacts the small files that many small batches leave after this many writes.
MAINTAIN_EVERY_WRITES = 200
_ID_CHUNK = 500


@dataclass(frozen=True, slots=True)
class EmbeddingRow:
    """One asset's pooled embedding by one backbone."""

    asset_id: str
    backbone: str  # the fleet's backbone key (models.backbones.backbone_key)
    content_hash: str  # sha256 hex of the image bytes
    vector: np.ndarray  # 1-D, stored float16
    tenant: str | None = None


class EmbeddingStore(Protocol):
    """What the service writes and the commands read (``put`` is idempotent)."""

    def put(self, rows: Sequence[EmbeddingRow]) -> int:
        """Store ``rows``; a row equal to the stored one is not written. Returns rows written."""
        ...

    def get(self, backbone: str, asset_ids: Sequence[str]) -> dict[str, np.ndarray]:
        """The stored vectors (float32 copies) of the ids that have one."""
        ...

    def count(self, backbone: str) -> int:
        """How many assets have an embedding by ``backbone``."""
        ...

    def backbones(self) -> list[str]:
        """The backbone keys that have a table, sorted."""
        ...

    def scan(
        self,
        backbone: str,
        *,
        prefix: str | None = None,
        tenant: str | None = None,
        batch_size: int = 4096,
    ) -> Iterator[tuple[list[str], np.ndarray]]:
        """Every (filtered) embedding, as (asset ids, float32 (n, d) matrix) batches."""
        ...

    def nearest(
        self, backbone: str, vector: np.ndarray, k: int, *, tenant: str | None = None
    ) -> list[tuple[str, float]]:
        """The ``k`` assets most similar to ``vector`` (cosine similarity), best first."""
        ...

    def delete(self, asset_ids: Sequence[str]) -> int:
        """Drop the embeddings of ``asset_ids`` under every backbone; returns rows removed."""
        ...


class EmbeddingStoreError(ValueError):
    """A row or a query the store cannot take (wrong shape, width or value): a caller's error."""


def table_name(backbone: str) -> str:
    """The table of one backbone: backbone keys hold ``|`` and ``:``, table names may not."""
    return TABLE_PREFIX + hashlib.sha256(backbone.encode()).hexdigest()[:24]


def quote(text: str) -> str:
    """``text`` as an SQL string literal of a LanceDB filter."""
    return "'" + text.replace("'", "''") + "'"


def s3_storage_options() -> dict[str, str]:
    """Object-store options for an ``s3://`` location: the endpoint boto3 would use.

    Credentials and the region come from the usual ``AWS_*`` variables, read by the object
    store itself; the endpoint follows :mod:`models.storage` (``AWS_ENDPOINT_URL_S3`` first).
    """
    options: dict[str, str] = {}
    endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    if endpoint:
        options["endpoint"] = endpoint
        if endpoint.startswith("http://"):
            options["allow_http"] = "true"
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
    if region:
        options["region"] = region
    return options


def _as_vector(row: EmbeddingRow) -> np.ndarray:
    vector = np.asarray(row.vector)
    if vector.ndim != 1 or vector.size == 0:
        raise EmbeddingStoreError(
            f"embedding of {row.asset_id!r} must be a non-empty 1-D vector,"
            f" got shape {vector.shape}"
        )
    if not np.isfinite(vector).all():
        raise EmbeddingStoreError(f"embedding of {row.asset_id!r} holds NaN or infinite values")
    with np.errstate(over="ignore"):
        stored = vector.astype(STORED_DTYPE)
    if not np.isfinite(stored).all():
        raise EmbeddingStoreError(f"embedding of {row.asset_id!r} overflows float16")
    return stored


def _check_row(row: EmbeddingRow) -> None:
    for name in ("asset_id", "backbone", "content_hash"):
        value = getattr(row, name)
        if not isinstance(value, str) or not value:
            raise EmbeddingStoreError(f"EmbeddingRow.{name} must be a non-empty string: {row!r}")


def _matrix(column: Any, width: int) -> np.ndarray:
    """A pyarrow fixed-size-list column as a float32 (n, width) matrix (a copy)."""
    if hasattr(column, "combine_chunks"):  # a table's column is chunked, a batch's is not
        column = column.combine_chunks()
    values = column.flatten().to_numpy(zero_copy_only=False)
    return np.asarray(values, dtype=np.float32).reshape(-1, width)


class LanceEmbeddingStore:
    """:class:`EmbeddingStore` on LanceDB: a local folder or an ``s3://`` prefix."""

    def __init__(
        self,
        location: str,
        *,
        index_min_rows: int = INDEX_MIN_ROWS,
        maintain_every: int = MAINTAIN_EVERY_WRITES,
    ) -> None:
        import lancedb

        self.location = location
        self.index_min_rows = index_min_rows
        self.maintain_every = maintain_every
        options = s3_storage_options() if is_s3(location) else None
        if not is_s3(location):
            Path(location).mkdir(parents=True, exist_ok=True)
        # read_consistency_interval=0: every read sees what other processes committed
        self._db = lancedb.connect(
            location, read_consistency_interval=timedelta(0), storage_options=options
        )
        self._tables: dict[str, Any] = {}
        self._lock = threading.Lock()
        self._writes = 0

    # -- tables --------------------------------------------------------------------------------

    def _table_names(self) -> list[str]:
        names: list[str] = []
        token = None
        while True:
            page = self._db.list_tables(page_token=token)
            names.extend(page.tables)
            token = page.page_token
            if not token:
                return [n for n in names if n.startswith(TABLE_PREFIX)]

    def _open(self, backbone: str) -> Any | None:
        name = table_name(backbone)
        table = self._tables.get(name)
        if table is None:
            try:
                table = cast(Any, self._db.open_table(name))
            except (ValueError, FileNotFoundError):
                return None
            if PRIMARY_KEY not in (table.schema.field("asset_id").metadata or {}):
                table.set_unenforced_primary_key("asset_id")  # a table from before the key
            self._tables[name] = table
        return table

    def _create(self, backbone: str, width: int) -> Any:
        import pyarrow as pa

        schema = pa.schema(
            [
                pa.field("asset_id", pa.string(), nullable=False, metadata={PRIMARY_KEY: b"1"}),
                pa.field("content_hash", pa.string(), nullable=False),
                pa.field("tenant", pa.string()),
                pa.field("vector", pa.list_(pa.float16(), width)),
            ],
            metadata={BACKBONE_METADATA: backbone.encode()},
        )
        table = self._db.create_table(table_name(backbone), schema=schema, exist_ok=True)
        self._tables[table_name(backbone)] = table
        return table

    @staticmethod
    def _width(table: Any) -> int:
        return int(table.schema.field("vector").type.list_size)

    # -- writes --------------------------------------------------------------------------------

    def put(self, rows: Sequence[EmbeddingRow]) -> int:
        by_backbone: dict[str, dict[str, tuple[EmbeddingRow, np.ndarray]]] = {}
        for row in rows:
            _check_row(row)
            by_backbone.setdefault(row.backbone, {})[row.asset_id] = (row, _as_vector(row))
        written = 0
        with self._lock:
            for backbone, latest in by_backbone.items():
                written += self._put_one(backbone, latest)
            if written:
                self._writes += 1
                if self.maintain_every and self._writes % self.maintain_every == 0:
                    self._compact()
        return written

    def _put_one(self, backbone: str, latest: dict[str, tuple[EmbeddingRow, np.ndarray]]) -> int:
        import pyarrow as pa

        widths = {vector.size for _, vector in latest.values()}
        table = self._open(backbone)
        if table is None:
            if len(widths) != 1:
                raise EmbeddingStoreError(f"embeddings of {backbone!r} differ in width: {widths}")
            table = self._create(backbone, next(iter(widths)))
        width = self._width(table)
        if widths != {width}:
            raise EmbeddingStoreError(
                f"embeddings of backbone {backbone!r} are {width}-D; got width(s) {sorted(widths)}"
            )
        stored = self._rows(table, list(latest), ["asset_id", "content_hash", "tenant", "vector"])
        changed = []
        for asset_id, (row, vector) in latest.items():
            old = stored.get(asset_id)
            if old is not None and (
                old["content_hash"] == row.content_hash
                and old["tenant"] == row.tenant
                and np.array_equal(old["vector"], vector)
            ):
                continue
            changed.append((row, vector))
        if not changed:
            return 0
        batch = pa.table(
            {
                "asset_id": [row.asset_id for row, _ in changed],
                "content_hash": [row.content_hash for row, _ in changed],
                "tenant": [row.tenant for row, _ in changed],
                "vector": pa.FixedSizeListArray.from_arrays(
                    pa.array(np.concatenate([v for _, v in changed]), type=pa.float16()), width
                ),
            },
            schema=table.schema,
        )
        (
            table.merge_insert("asset_id")
            .when_matched_update_all()
            .when_not_matched_insert_all()
            .execute(batch)
        )
        return len(changed)

    def delete(self, asset_ids: Sequence[str]) -> int:
        ids = list(dict.fromkeys(asset_ids))
        removed = 0
        with self._lock:
            for name in self._table_names():
                table = self._tables.get(name) or self._db.open_table(name)
                self._tables[name] = table
                for start in range(0, len(ids), _ID_CHUNK):
                    chunk = ids[start : start + _ID_CHUNK]
                    result = table.delete(f"asset_id IN ({', '.join(map(quote, chunk))})")
                    removed += int(getattr(result, "num_deleted_rows", 0) or 0)
        return removed

    # -- reads ---------------------------------------------------------------------------------

    def _rows(self, table: Any, asset_ids: list[str], columns: list[str]) -> dict[str, dict]:
        found: dict[str, dict] = {}
        width = self._width(table)
        for start in range(0, len(asset_ids), _ID_CHUNK):
            chunk = asset_ids[start : start + _ID_CHUNK]
            data = (
                table.search()
                .where(f"asset_id IN ({', '.join(map(quote, chunk))})")
                .select(columns)
                .limit(None)
                .to_arrow()
            )
            vectors = _matrix(data.column("vector"), width).astype(STORED_DTYPE)
            plain = {c: data.column(c).to_pylist() for c in columns if c != "vector"}
            for i, asset_id in enumerate(plain["asset_id"]):
                found[asset_id] = {c: plain[c][i] for c in plain} | {"vector": vectors[i]}
        return found

    def get(self, backbone: str, asset_ids: Sequence[str]) -> dict[str, np.ndarray]:
        table = self._open(backbone)
        if table is None or not asset_ids:
            return {}
        width = self._width(table)
        out: dict[str, np.ndarray] = {}
        ids = list(dict.fromkeys(asset_ids))
        for start in range(0, len(ids), _ID_CHUNK):
            chunk = ids[start : start + _ID_CHUNK]
            data = (
                table.search()
                .where(f"asset_id IN ({', '.join(map(quote, chunk))})")
                .select(["asset_id", "vector"])
                .limit(None)
                .to_arrow()
            )
            matrix = _matrix(data.column("vector"), width)
            for i, asset_id in enumerate(data.column("asset_id").to_pylist()):
                out[asset_id] = matrix[i].copy()
        return out

    def count(self, backbone: str) -> int:
        table = self._open(backbone)
        return 0 if table is None else int(table.count_rows())

    def backbones(self) -> list[str]:
        keys = []
        for name in self._table_names():
            table = self._tables.get(name) or self._db.open_table(name)
            self._tables[name] = table
            metadata = table.schema.metadata or {}
            if BACKBONE_METADATA in metadata:
                keys.append(metadata[BACKBONE_METADATA].decode())
        return sorted(keys)

    @staticmethod
    def _filter(prefix: str | None, tenant: str | None) -> str | None:
        clauses = []
        if prefix:
            clauses.append(f"starts_with(asset_id, {quote(prefix)})")
        if tenant is not None:
            clauses.append(f"tenant = {quote(tenant)}")
        return " AND ".join(clauses) or None

    def scan(
        self,
        backbone: str,
        *,
        prefix: str | None = None,
        tenant: str | None = None,
        batch_size: int = 4096,
    ) -> Iterator[tuple[list[str], np.ndarray]]:
        if batch_size < 1:
            raise EmbeddingStoreError(f"batch_size must be >= 1, got {batch_size}")
        table = self._open(backbone)
        if table is None:
            return
        width = self._width(table)
        query = table.search().select(["asset_id", "vector"]).limit(None)
        where = self._filter(prefix, tenant)
        if where:
            query = query.where(where)
        for batch in query.to_batches(batch_size):
            ids = batch.column("asset_id").to_pylist()
            matrix = _matrix(batch.column("vector"), width)
            for start in range(0, len(ids), batch_size):
                if ids[start : start + batch_size]:
                    yield ids[start : start + batch_size], matrix[start : start + batch_size]

    def nearest(
        self, backbone: str, vector: np.ndarray, k: int, *, tenant: str | None = None
    ) -> list[tuple[str, float]]:
        if k < 1:
            raise EmbeddingStoreError(f"k must be >= 1, got {k}")
        query_vector = np.asarray(vector, dtype=np.float32)
        if query_vector.ndim != 1 or not np.isfinite(query_vector).all():
            raise EmbeddingStoreError("the query must be a finite 1-D vector")
        if not np.any(query_vector):
            raise EmbeddingStoreError("the query vector is zero: cosine similarity is undefined")
        table = self._open(backbone)
        if table is None:
            return []
        width = self._width(table)
        if query_vector.size != width:
            raise EmbeddingStoreError(
                f"backbone {backbone!r} stores {width}-D embeddings;"
                f" the query is {query_vector.size}-D"
            )
        query = (
            table.search(query_vector, vector_column_name="vector")
            .distance_type("cosine")
            .select(["asset_id", "_distance"])
            .limit(k)
        )
        if self._has_vector_index(table):
            # re-rank the approximate candidates by their exact distance
            query = query.nprobes(32).refine_factor(10)
        if tenant is not None:
            query = query.where(f"tenant = {quote(tenant)}", prefilter=True)
        data = query.to_arrow()
        ids = data.column("asset_id").to_pylist()
        distances = data.column("_distance").to_pylist()
        return [(asset_id, 1.0 - float(d)) for asset_id, d in zip(ids, distances, strict=True)]

    # -- upkeep --------------------------------------------------------------------------------

    def probe(self) -> None:
        """Write and drop a one-row scratch table: raises what a write here would (a read-only
        folder, a bucket that does not exist or refuses the credentials), so that the service
        stops at start-up instead of retrying every batch. Scratch tables are not listed."""
        import pyarrow as pa

        name = f"{PROBE_PREFIX}{uuid.uuid4().hex}"
        self._db.create_table(name, data=pa.table({"probe": [1]}))
        self._db.drop_table(name)

    def stats(self) -> dict[str, dict[str, Any]]:
        """Per backbone key: its table, its rows and whether it has a vector index."""
        out: dict[str, dict[str, Any]] = {}
        for backbone in self.backbones():
            table = self._open(backbone)
            assert table is not None  # listed just now
            out[backbone] = {
                "table": table_name(backbone),
                "rows": int(table.count_rows()),
                "indexed": self._has_vector_index(table),
            }
        return out

    @staticmethod
    def _has_vector_index(table: Any) -> bool:
        return any("vector" in index.columns for index in table.list_indices())

    @staticmethod
    def _key_index(table: Any) -> None:
        """A B-tree on ``asset_id``, so that ``put`` and ``get`` find their rows without
        reading the whole column (rows added since it was built are read until it is
        refreshed by ``optimize``)."""
        from lancedb.index import BTree

        if not any(list(index.columns) == ["asset_id"] for index in table.list_indices()):
            table.create_index("asset_id", config=BTree())

    def _compact(self) -> None:
        """Every ``maintain_every`` writes: the key index, then compaction and index refresh."""
        for table in list(self._tables.values()):
            self._key_index(table)
            table.optimize(cleanup_older_than=timedelta(hours=1))

    def maintain(
        self,
        *,
        build_index: bool = True,
        keep_versions: timedelta = timedelta(hours=1),
        index_type: str = "IVF_PQ",
    ) -> dict[str, int]:
        """Compact small files, refresh indexes, and index large tables; returns rows per table.

        A table of at least ``index_min_rows`` rows without a vector index gets one, cosine:
        ``IVF_PQ`` (the default: product-quantized codes of 1/32 of the float16 vector;
        :meth:`nearest` re-ranks its candidates by their exact vectors) or ``IVF_HNSW_SQ``
        (an index 25 times larger, p95 165 ms against 9 at 100,000 rows: docs/benchmarks.md).
        Every table's ``asset_id`` gets a B-tree (``put`` does that too, every
        ``maintain_every`` writes). Minutes on a million
        rows: run it from a command or a job, not inside a request. Files only older versions
        use are deleted once older than ``keep_versions`` (a reader may still be on one).
        """
        counts = {}
        with self._lock:
            for name in self._table_names():
                table = self._tables.get(name) or self._db.open_table(name)
                self._tables[name] = table
                rows = int(table.count_rows())
                counts[name] = rows
                if build_index and rows:
                    self._key_index(table)
                wanted = build_index and rows >= self.index_min_rows
                if wanted and not self._has_vector_index(table):
                    table.create_index("vector", config=_vector_index(index_type, table, rows))
                table.optimize(cleanup_older_than=keep_versions)
        return counts


def _vector_index(index_type: str, table: Any, rows: int) -> Any:
    """The configuration of a cosine vector index of ``index_type`` for ``table``."""
    from lancedb.index import IvfHnswSq, IvfPq

    partitions = max(1, int(np.sqrt(rows) / 4))
    if index_type == "IVF_HNSW_SQ":
        return IvfHnswSq(distance_type="cosine", num_partitions=partitions)
    if index_type == "IVF_PQ":
        width = int(table.schema.field("vector").type.list_size)
        return IvfPq(
            distance_type="cosine",
            num_partitions=partitions,
            num_sub_vectors=_sub_vectors(width),
        )
    raise EmbeddingStoreError(f"unknown index type {index_type!r}: IVF_PQ or IVF_HNSW_SQ")


def _sub_vectors(width: int) -> int:
    """PQ sub-vectors: one per 16 dimensions (32 for 512), a divisor of the width."""
    for count in range(max(1, width // 16), 0, -1):
        if width % count == 0:
            return count
    return 1


def open_embedding_store(location: str) -> EmbeddingStore:
    """The embedding store at ``location``: a local folder (created when missing) or ``s3://bucket/prefix``."""
    if not isinstance(location, str) or not location.strip():
        raise EmbeddingStoreError("the embedding store's location is empty")
    if is_s3(location):
        split(location, key_required=False)  # a bucket name S3 accepts, or a clear error
    return LanceEmbeddingStore(location)
