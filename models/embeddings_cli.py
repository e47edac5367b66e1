"""``tagfleet embeddings maintain`` and ``tagfleet embeddings stats``: the embedding store's
upkeep (compaction, the approximate vector index) and what it holds.

The service only writes the store (:mod:`models.embedding_store`); building the vector index
takes minutes on a million rows, so it runs here, from a command or the chart's CronJob
(``embeddings.maintain``), never inside a request or a batch. Options come from the settings
models below (``TAGFLEET_EMBEDDINGS``, ``TAGFLEET_EMBEDDINGS_MAINTAIN_*``; :mod:`models.options`).
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import timedelta
from typing import Any, Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from models.embedding_store import INDEX_MIN_ROWS, EmbeddingStoreError, LanceEmbeddingStore
from models.library_settings import EmbeddingStoreSettings
from models.options import Options, add_options


class MaintainOptions(BaseSettings):
    """``tagfleet embeddings maintain``."""

    model_config = SettingsConfigDict(
        env_prefix="TAGFLEET_EMBEDDINGS_MAINTAIN_", frozen=True, extra="ignore"
    )

    index: bool = Field(
        True,
        description="build a vector index on each backbone's table of at least --index-min-rows"
        " rows that has none (--no-index: compact and clean up only)",
    )
    index_min_rows: int = Field(
        INDEX_MIN_ROWS,
        ge=1,
        description="the rows from which a table is indexed (below, searches scan it exactly)",
    )
    index_type: Literal["IVF_PQ", "IVF_HNSW_SQ"] = Field(
        "IVF_PQ",
        description="IVF_PQ (small, re-ranked exactly) or IVF_HNSW_SQ (about 25 times larger,"
        " slower at 100,000 rows: docs/benchmarks.md)",
    )
    keep_versions_hours: float = Field(
        1.0,
        ge=0,
        description="files that only older table versions use are deleted once this old (a"
        " reader may still be on one)",
    )


def register(subparsers: Any) -> None:
    embeddings = subparsers.add_parser(
        "embeddings",
        help="the embedding store: build its vector index, show what it holds",
        description="Upkeep of the embedding store the service writes (TAGFLEET_EMBEDDINGS):"
        " maintain compacts it and indexes large tables; stats prints rows and index per"
        " backbone.",
    )
    sub = embeddings.add_subparsers(
        dest="embeddings_command", metavar="EMBEDDINGS_COMMAND", required=True
    )
    maintain = sub.add_parser(
        "maintain",
        help="compact the store and build the approximate vector index of large tables",
        description="Compact the small files that the service's batches leave, refresh the"
        " indexes with the rows added since, and build a cosine vector index on each"
        " backbone's table of at least --index-min-rows rows that has none (similar, search"
        " and the API then answer from it instead of a full scan). Minutes on a million rows:"
        " run it nightly (the chart's embeddings.maintain CronJob). Prints the stats as JSON.",
    )
    add_options(maintain, [EmbeddingStoreSettings, MaintainOptions])
    maintain.set_defaults(handler=cmd_maintain)
    stats = sub.add_parser(
        "stats",
        help="rows and whether each backbone's table is indexed, as JSON",
        description="Print, per backbone key, its table, its rows and whether it has a vector"
        " index (JSON), e.g. to check that the nightly maintain ran.",
    )
    add_options(stats, [EmbeddingStoreSettings])
    stats.set_defaults(handler=cmd_stats)


def cmd_maintain(args: argparse.Namespace, options: Options) -> int:
    from tqdm import tqdm

    opts = options[MaintainOptions]
    location = options[EmbeddingStoreSettings].location("embeddings maintain")
    try:
        store = LanceEmbeddingStore(location, index_min_rows=opts.index_min_rows)
        with tqdm(total=1, desc="maintain", unit="store", file=sys.stderr) as bar:
            store.maintain(
                build_index=opts.index,
                index_type=opts.index_type,
                keep_versions=timedelta(hours=opts.keep_versions_hours),
            )
            bar.update(1)
        stats = store.stats()
    except EmbeddingStoreError as exc:
        print(f"tagfleet embeddings maintain: error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps({"location": location, "backbones": stats}, sort_keys=True))
    return 0


def cmd_stats(args: argparse.Namespace, options: Options) -> int:
    location = options[EmbeddingStoreSettings].location("embeddings stats")
    stats = LanceEmbeddingStore(location).stats()
    print(json.dumps({"location": location, "backbones": stats}, sort_keys=True))
    return 0
