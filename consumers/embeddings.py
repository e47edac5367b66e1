"""The embedding sink of the service and ``tagfleet tag``: each tagged image's pooled embedding
per backbone into :mod:`models.embedding_store` (issue 19 item 1).

Written by the store stage right after the metadata store, before the result event, so that a
replay finds them stored (the embedding store writes nothing for a row equal to the stored
one) and a removal drops them. A result reused from another asset with the same bytes
(content-hash dedup) ran no model: its embeddings are copied from that asset's.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from consumers.domain import AssetResult, TransientError
from models.embedding_store import (
    EmbeddingRow,
    EmbeddingStore,
    EmbeddingStoreError,
    open_embedding_store,
)

log = logging.getLogger(__name__)


class EmbeddingWriter:
    """:class:`consumers.ports.EmbeddingSink` on an :class:`EmbeddingStore`.

    A row the store refuses for what it is (a NaN vector, a width the backbone's table does
    not have) is logged and left out: the image's tags are stored all the same, and the
    commands that read embeddings list the assets that have none. Any other failure (a disk
    full, an ``s3://`` location unreachable) is a :class:`TransientError`: retried, the
    partitions paused, nothing dropped.
    """

    def __init__(self, store: EmbeddingStore) -> None:
        self._store = store

    def write(self, results: Sequence[AssetResult]) -> int:
        try:
            rows = self._rows(results)
            return self._put(rows)
        except EmbeddingStoreError:
            raise
        except Exception as exc:  # noqa: BLE001 - the store's I/O: may pass
            raise TransientError(f"embedding store: {type(exc).__name__}: {exc}") from exc

    def embedded(self, asset_ids: Sequence[str]) -> set[str]:
        """The assets among ``asset_ids`` with a stored embedding (of any backbone): those
        whose results may be reused, their embeddings copied (content-hash dedup)."""
        found: set[str] = set()
        for backbone in self._store.backbones():
            found |= set(self._store.get(backbone, asset_ids))
        return found

    def remove(self, asset_ids: Sequence[str]) -> int:
        try:
            return self._store.delete(asset_ids)
        except Exception as exc:  # noqa: BLE001
            raise TransientError(f"embedding store: {type(exc).__name__}: {exc}") from exc

    def _rows(self, results: Sequence[AssetResult]) -> list[EmbeddingRow]:
        rows = []
        copied: list[AssetResult] = []
        for result in results:
            if not result.content_hash:
                continue  # not fetched by the pipeline (a test's fake): nothing to key it by
            for backbone, vector in result.embeddings.items():
                rows.append(
                    EmbeddingRow(
                        result.asset_id, backbone, result.content_hash, vector, result.tenant
                    )
                )
            if result.reused_from and not result.embeddings:
                copied.append(result)
        if copied:
            backbones = self._store.backbones()
            for backbone in backbones:
                sources = self._store.get(backbone, [r.reused_from or "" for r in copied])
                for result in copied:
                    vector = sources.get(result.reused_from or "")
                    if vector is not None and result.content_hash:
                        rows.append(
                            EmbeddingRow(
                                result.asset_id,
                                backbone,
                                result.content_hash,
                                vector,
                                result.tenant,
                            )
                        )
        return rows

    def _put(self, rows: list[EmbeddingRow]) -> int:
        try:
            return self._store.put(rows)
        except EmbeddingStoreError:
            pass  # one bad row: write the others one by one, leave it out
        written = 0
        for row in rows:
            try:
                written += self._store.put([row])
            except EmbeddingStoreError as exc:
                log.error(
                    "an embedding was refused; the asset's tags are stored without it",
                    extra={"asset_id": row.asset_id, "backbone": row.backbone, "error": str(exc)},
                )
        return written


def open_embedding_sink(location: str | None, *, probe: bool = False) -> EmbeddingWriter | None:
    """The sink at ``location`` (a folder, created when missing, or an ``s3://`` prefix);
    ``None`` when embeddings are not kept. ``probe``: write and drop a scratch table first, so
    that a location that cannot be written (a read-only folder, a missing bucket, refused
    credentials) raises here, at start-up, and not at every batch (retried: a stalled
    consumer)."""
    if location is None:
        return None
    store = open_embedding_store(location)
    if probe:
        check = getattr(store, "probe", None)
        if check is not None:
            check()
    return EmbeddingWriter(store)
