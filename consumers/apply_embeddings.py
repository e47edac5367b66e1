"""``tagfleet apply FUNCTION --from-embeddings``: score the whole library from stored embeddings.

No image is fetched and no backbone runs: the function's pooled head is a matrix product over
the embeddings the consumer stored (:mod:`models.from_embeddings`), batch by batch from the
embedding store's scan, with a progress bar. Each batch's results are written to the tag store
exactly as the consumer writes them (:meth:`~consumers.store.TagStore.save`: the same result
objects, the same idempotent upserts, every version kept), under the function's version: a
new version (registered in the registry with ``--registry``) becomes the current result of
every scored asset, and the API shows it. Removed assets are skipped; an asset the tag store
does not know yet is stored under its id. Assets of the tag store without a stored embedding
are listed (``--missing-out``) and, with ``--publish-missing``, published as asset events on
the backfill lane so that the consumer tags (and embeds) them.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict
from tqdm import tqdm

from consumers.domain import AssetRequest, AssetResult
from consumers.settings import KafkaSettings
from consumers.store import TagStore
from consumers.store.errors import translate_errors
from consumers.store.models import assets
from models.artifacts import Artifact

_ID_CHUNK = 500
DEFAULT_TENANT = "default"


class ApplyOptions(BaseSettings):
    """``tagfleet apply``'s own options (``TAGFLEET_APPLY_<NAME>``)."""

    model_config = SettingsConfigDict(env_prefix="TAGFLEET_APPLY_", frozen=True, extra="ignore")

    from_embeddings: bool = Field(
        False,
        description="score the stored embeddings (the one way apply runs today: no image is"
        " fetched, no backbone loaded)",
    )
    name: str | None = Field(
        None, description="function name the results are stored under (unset: the artifact's)"
    )
    prefix: str | None = Field(
        None, description="only assets whose id starts with this (e.g. s3://bucket/prefix/)"
    )
    tenant: str | None = Field(None, description="only this tenant's assets (unset: every one)")
    batch_size: int = Field(8192, ge=1, le=1_000_000, description="embeddings per matrix product")
    missing_out: str | None = Field(
        None, description="write the ids of assets without a stored embedding here, one a line"
    )
    publish_missing: bool = Field(
        False,
        description="publish an asset event for each asset without a stored embedding (backfill"
        " lane) so that the consumer tags and embeds it",
    )
    progress: bool = Field(True, description="progress bar on stderr")


@dataclass
class ApplySummary:
    """What one apply did."""

    function: str
    version: str
    scored: int = 0
    written: int = 0
    unchanged: int = 0
    skipped_removed: int = 0
    missing: list[str] = field(default_factory=list)
    published: int = 0
    seconds: float = 0.0

    def record(self) -> dict[str, Any]:
        rate = self.scored / self.seconds if self.seconds > 0 else None
        return {
            "function": self.function,
            "version": self.version,
            "scored": self.scored,
            "written": self.written,
            "unchanged": self.unchanged,
            "skipped_removed": self.skipped_removed,
            "missing": len(self.missing),
            "published": self.published,
            "seconds": round(self.seconds, 3),
            "assets_per_s": None if rate is None else round(rate, 1),
        }


@dataclass(frozen=True, slots=True)
class StoredAsset:
    """An asset row of the tag store, as apply needs it."""

    uri: str
    etag: str | None
    width: int
    height: int
    tenant: str
    removed: bool


def stored_assets(store: TagStore, asset_ids: Sequence[str]) -> dict[str, StoredAsset]:
    """The tag store's rows of ``asset_ids`` (absent ids are not in the result)."""
    a = assets.c
    found: dict[str, StoredAsset] = {}
    columns = (a.asset_id, a.uri, a.etag, a.width, a.height, a.tenant, a.removed)
    with translate_errors("stored_assets"), store.engine.connect() as conn:
        for start in range(0, len(asset_ids), _ID_CHUNK):
            chunk = list(asset_ids[start : start + _ID_CHUNK])
            for row in conn.execute(sa.select(*columns).where(a.asset_id.in_(chunk))):
                found[row.asset_id] = StoredAsset(
                    row.uri, row.etag, row.width, row.height, row.tenant, bool(row.removed)
                )
    return found


def library_ids(
    store: TagStore, prefix: str | None, tenant: str | None, batch: int = 10_000
) -> Iterator[str]:
    """Ids of the tag store's live assets (under ``prefix``, of ``tenant``), in id order."""
    a = assets.c
    after: str | None = None
    while True:
        query = sa.select(a.asset_id).where(a.removed.is_(False))
        if prefix:
            query = query.where(a.asset_id.startswith(prefix, autoescape=True))
        if tenant is not None:
            query = query.where(a.tenant == tenant)
        if after is not None:
            query = query.where(a.asset_id > after)
        with translate_errors("library_ids"), store.engine.connect() as conn:
            ids = list(conn.execute(query.order_by(a.asset_id).limit(batch)).scalars())
        yield from ids
        if len(ids) < batch:
            return
        after = ids[-1]


def _embedding_tenant(tenant: str | None) -> str | None:
    """The embedding store's tenant filter: the consumer stores an event without a tenant
    with none, which is the tag store's default tenant."""
    return None if tenant in (None, DEFAULT_TENANT) else tenant


def score_library(
    artifact: Artifact,
    embeddings: Any,
    store: TagStore,
    options: ApplyOptions,
    *,
    clock: Any = None,
) -> ApplySummary:
    """Score every stored embedding of ``artifact``'s backbone (under the prefix, of the
    tenant) and save the results to ``store``; list the library's assets without one."""
    from models.backbones import backbone_key
    from models.from_embeddings import pooled_weights, results_from_embeddings

    weights = pooled_weights(artifact)  # refuses what stored embeddings cannot serve
    m = artifact.manifest
    assert m.version is not None
    name = options.name or m.name
    key = backbone_key(m.backbone)
    summary = ApplySummary(function=name, version=m.version)
    started = time.perf_counter()
    seen: set[str] = set()
    total = embeddings.count(key)
    bar = tqdm(
        total=total,
        unit="asset",
        desc=f"apply {name}",
        disable=not options.progress,
        file=sys.stderr,
    )
    scan = embeddings.scan(
        key,
        prefix=options.prefix,
        tenant=_embedding_tenant(options.tenant),
        batch_size=options.batch_size,
    )
    for ids, vectors in scan:
        seen.update(ids)
        rows = stored_assets(store, ids)
        keep = [
            i
            for i, asset_id in enumerate(ids)
            if not (asset_id in rows and rows[asset_id].removed)
            and (options.tenant is None or _tenant_of(rows.get(asset_id)) == options.tenant)
        ]
        summary.skipped_removed += sum(
            1 for asset_id in ids if asset_id in rows and rows[asset_id].removed
        )
        now = (clock or _now)()
        results = results_from_embeddings(artifact, vectors[keep], weights)
        batch = [
            _asset_result(ids[i], rows.get(ids[i]), name, obj, now, options.tenant)
            for i, obj in zip(keep, results, strict=True)
        ]
        stats = store.save(batch)
        summary.scored += len(batch)
        summary.written += stats.replaced_functions
        summary.unchanged += stats.unchanged_functions
        bar.update(len(ids))
    bar.close()
    summary.missing = [
        a for a in library_ids(store, options.prefix, options.tenant) if a not in seen
    ]
    summary.seconds = time.perf_counter() - started
    return summary


def _tenant_of(row: StoredAsset | None) -> str | None:
    return None if row is None else row.tenant


def _now() -> datetime:
    return datetime.now(UTC)


def _asset_result(
    asset_id: str,
    row: StoredAsset | None,
    function: str,
    obj: dict[str, Any],
    now: datetime,
    tenant: str | None,
) -> AssetResult:
    if row is None:  # embedded but not in the tag store yet: stored under its id
        return AssetResult(
            asset_id, asset_id, None, 0, 0, {function: obj}, None, now, tenant=tenant
        )
    return AssetResult(
        asset_id=asset_id,
        uri=row.uri,
        etag=row.etag,
        width=row.width,
        height=row.height,
        functions={function: obj},
        source=None,
        processed_at=now,
        tenant=row.tenant,
    )


def publish_missing(
    asset_ids: Sequence[str], stored: dict[str, StoredAsset], kafka: KafkaSettings
) -> int:
    """One native asset event per id onto the backfill lane (else the upload topic)."""
    from consumers.backfill import native_event
    from consumers.confluent_sinks import ConfluentProducer
    from consumers.ports import RecordProducer
    from consumers.results import encode_event
    from consumers.sinks import OutRecord, Producer

    topic = kafka.backfill_lane() or kafka.topic
    client = ConfluentProducer if kafka.kafka_client == "confluent" else Producer
    producer: RecordProducer = client(kafka.kafka_common())
    records = []
    for asset_id in asset_ids:
        row = stored.get(asset_id)
        uri = row.uri if row is not None else asset_id
        request = AssetRequest(asset_id=asset_id, uri=uri, bucket="", key="", etag=None)
        event = native_event(request)
        if row is not None and row.tenant != DEFAULT_TENANT:
            event["tenant"] = row.tenant
        records.append(OutRecord(topic, asset_id.encode(), encode_event(event)))
    for start in range(0, len(records), 500):
        producer.send_all(records[start : start + 500])
    producer.close()
    return len(records)


def load_function(function: str, registry: str | None) -> tuple[Artifact, bool]:
    """The artifact at ``function`` (a folder or ``s3://`` prefix), else ``NAME[@VERSION]``
    of the registry (newest without a version); and whether it came from the registry."""
    from models import registry as reg
    from models import storage
    from models.artifacts import load_artifact

    if storage.exists(storage.join(function, "manifest.json")):
        return load_artifact(function), False
    if registry is None:
        raise ValueError(f"no artifact at {function} (and no --registry to find it by name)")
    name, _, version = function.partition("@")
    version = version or reg.latest(registry, name) or ""
    if not version or not reg.has_version(registry, name, version):
        raise ValueError(f"{function}: no such function version in the registry {registry}")
    return load_artifact(reg.version_uri(registry, name, version)), True


def register(commands: Any) -> None:
    """Add ``apply`` to the ``tagfleet`` subcommands."""
    from consumers.settings import StoreSettings
    from models.library_settings import EmbeddingStoreSettings
    from models.lifecycle_cli import RegistrySettings
    from models.options import add_options

    p = commands.add_parser(
        "apply",
        help="score the whole library with a function from the stored embeddings (no image"
        " fetched) and store its tags as its version's results",
        description="Score every stored embedding of the function's backbone (--prefix,"
        " --tenant narrow it) with the function's pooled head, in batched matrix products with"
        " a progress bar, and write the results to the store as the consumer does (a new"
        " version becomes the current result; every version is kept). With --registry the"
        " artifact is registered as a version of the registry first (FUNCTION may then be"
        " NAME[@VERSION]). Assets of the store without a stored embedding are listed;"
        " --publish-missing publishes asset events for them so that the consumer tags them.",
    )
    p.add_argument(
        "function", metavar="FUNCTION", help="artifact folder or s3:// prefix, or NAME[@VERSION]"
    )
    add_options(
        p, [ApplyOptions, EmbeddingStoreSettings, StoreSettings, RegistrySettings, KafkaSettings]
    )
    p.set_defaults(handler=lambda args, options: run_apply(args.function, options))


def run_apply(function: str, options: Any) -> int:
    """``tagfleet apply``: see the module docstring. Prints a JSON summary."""
    from consumers.settings import StoreSettings
    from models import registry as reg
    from models.embedding_store import open_embedding_store
    from models.from_embeddings import NotServableFromEmbeddings
    from models.library_settings import EmbeddingStoreSettings
    from models.lifecycle_cli import RegistrySettings

    opts: ApplyOptions = options[ApplyOptions]
    if not opts.from_embeddings:
        print(
            "tagfleet apply: error: apply scores stored embeddings: pass --from-embeddings",
            file=sys.stderr,
        )
        return 2
    registry = options[RegistrySettings].registry
    try:
        artifact, registered = load_function(function, registry)
        if registry is not None and not registered:  # the lifecycle: a version of the registry
            artifact, _ = reg.publish(
                artifact, registry, reg.latest(registry, artifact.manifest.name)
            )
        embeddings = open_embedding_store(options[EmbeddingStoreSettings].location("apply"))
        store = TagStore(options[StoreSettings].store_url())
        try:
            summary = score_library(artifact, embeddings, store, opts)
            if summary.missing and opts.publish_missing:
                stored = stored_assets(store, summary.missing)
                summary.published = publish_missing(summary.missing, stored, options[KafkaSettings])
        finally:
            store.close()
    except (ValueError, FileNotFoundError, NotServableFromEmbeddings) as exc:
        print(f"tagfleet apply: error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 2
    if opts.missing_out:
        with open(opts.missing_out, "w", encoding="utf-8") as out:
            out.writelines(f"{a}\n" for a in summary.missing)
    for asset_id in summary.missing[:20]:
        print(f"  no stored embedding: {asset_id}", file=sys.stderr)
    if len(summary.missing) > 20:
        print(
            f"  ... and {len(summary.missing) - 20} more (--missing-out FILE lists all)",
            file=sys.stderr,
        )
    print(json.dumps(summary.record()))
    return 0
