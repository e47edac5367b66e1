"""``tagfleet api``, ``tagfleet api-key create|revoke`` and ``tagfleet dataset export``
(registered by consumers.cli)."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any

from consumers.api.settings import ApiKeyCreateOptions, ApiOptions, DatasetExportOptions
from consumers.library_search import SearchBackbone
from consumers.settings import StoreSettings
from models.library_settings import EmbeddingStoreSettings
from models.options import Options, add_options
from models.settings import FleetFile, Runtime

log = logging.getLogger(__name__)


def register(commands: Any) -> None:
    """Add the commands to ``tagfleet``'s subparsers."""
    p = commands.add_parser(
        "api",
        help="serve the tags API (/v1), its OpenAPI document and the review page",
        description="Serve the tags API over the store: assets with their effective tags"
        " (human labels over AI tags), search, labels, the review queue and its page at"
        " /review, the fleet's functions; OpenAPI at /openapi.json, docs at /docs. Every /v1"
        " request needs an API key (tagfleet api-key create).",
    )
    add_options(
        p, [ApiOptions, StoreSettings, FleetFile, EmbeddingStoreSettings, SearchBackbone, Runtime]
    )
    p.set_defaults(handler=_run_api)

    keys = commands.add_parser("api-key", help="create and revoke API keys")
    sub = keys.add_subparsers(dest="api_key_command", metavar="API_KEY_COMMAND", required=True)
    create = sub.add_parser(
        "create",
        help="create a key for a tenant with scopes; prints the key once",
        description="Create an API key: printed once on stdout, stored only as its SHA-256.",
    )
    add_options(create, [ApiKeyCreateOptions, StoreSettings])
    create.set_defaults(handler=_run_create)
    revoke = sub.add_parser("revoke", help="revoke a key by its id (tfk_<id>_...)")
    revoke.add_argument("key_id", metavar="KEY_ID", help="the key's id, or the whole key")
    add_options(revoke, [StoreSettings])
    revoke.set_defaults(handler=_run_revoke)

    dataset = commands.add_parser("dataset", help="training sets from people's labels")
    dsub = dataset.add_subparsers(dest="dataset_command", metavar="DATASET_COMMAND", required=True)
    export = dsub.add_parser(
        "export",
        help="write FUNCTION's human labels as a JSONL training manifest (s3:// images)",
        description="Write the human labels of FUNCTION (one tenant) as the JSONL manifest"
        " tagfleet train reads, with counts per label and a warning for labels with too few"
        " samples (docs/review.md).",
    )
    export.add_argument("function", metavar="FUNCTION", help="the function's name")
    add_options(export, [DatasetExportOptions, StoreSettings])
    export.set_defaults(handler=_run_export)

    from consumers.webhooks.cli import register as register_webhooks

    register_webhooks(commands)


def _run_api(args: argparse.Namespace, options: Options) -> int:
    import uvicorn

    from consumers.api.app import ApiContext, create_app
    from consumers.logs import configure_logging
    from consumers.store import TagStore

    configure_logging()
    api = options[ApiOptions]
    store = TagStore(options[StoreSettings].store_url())
    location = options[EmbeddingStoreSettings].embeddings
    search = None
    if location.startswith("s3://") or Path(location).is_dir():
        from consumers.library_search import searcher_for

        search = searcher_for(location, store.engine, options[SearchBackbone], options[Runtime])
    else:
        log.warning("search is off: no embedding store", extra={"embeddings": location})
    app = create_app(
        ApiContext(
            store=store,
            fleet_path=options[FleetFile].fleet,
            max_page_size=api.max_page_size,
            search=search,
        )
    )
    log.info("tags API listening", extra={"host": api.host, "port": api.port})
    try:
        uvicorn.run(app, host=api.host, port=api.port, log_config=None, access_log=False)
    finally:
        store.close()
    return 0


def _run_create(args: argparse.Namespace, options: Options) -> int:
    from consumers.api.keys import create_key
    from consumers.store import TagStore

    opts = options[ApiKeyCreateOptions]
    store = TagStore(options[StoreSettings].store_url())
    try:
        token = create_key(store.engine, opts.tenant, opts.scopes, opts.name)
    finally:
        store.close()
    print(token)
    return 0


def _run_revoke(args: argparse.Namespace, options: Options) -> int:
    from consumers.api.keys import revoke_key
    from consumers.store import TagStore

    store = TagStore(options[StoreSettings].store_url())
    try:
        done = revoke_key(store.engine, args.key_id)
    finally:
        store.close()
    if not done:
        print(f"tagfleet api-key revoke: error: no live key {args.key_id[:20]!r}")
        return 1
    print("revoked")
    return 0


def _run_export(args: argparse.Namespace, options: Options) -> int:
    from consumers.dataset_export import NothingToExport, export
    from consumers.store import TagStore

    opts = options[DatasetExportOptions]
    store = TagStore(options[StoreSettings].store_url())
    try:
        summary = export(
            store.engine,
            args.function,
            Path(opts.out),
            tenant=opts.tenant,
            include_ai=opts.include_ai,
            min_score=opts.min_score,
            min_samples=opts.min_samples,
        )
    except NothingToExport as exc:
        print(f"tagfleet dataset export: error: {exc}", file=sys.stderr)
        return 1
    finally:
        store.close()
    print(f"{summary.samples} samples of {summary.function} ({summary.type}) in {opts.out}")
    for label, count in summary.counts.items():
        print(f"  {label}: {count}")
    for reason, count in summary.left_out.items():
        print(f"  left out ({reason}): {count}")
    if summary.too_few:
        print(
            f"warning: fewer than {opts.min_samples} samples of: {', '.join(summary.too_few)}",
            file=sys.stderr,
        )
    return 0
