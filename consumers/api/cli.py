"""``tagfleet api`` and ``tagfleet api-key create|revoke`` (registered by consumers.cli)."""

from __future__ import annotations

import argparse
import logging
from typing import Any

from consumers.api.settings import ApiKeyCreateOptions, ApiOptions
from consumers.settings import StoreSettings
from models.options import Options, add_options
from models.settings import FleetFile

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
    add_options(p, [ApiOptions, StoreSettings, FleetFile])
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


def _run_api(args: argparse.Namespace, options: Options) -> int:
    import uvicorn

    from consumers.api.app import ApiContext, create_app
    from consumers.logs import configure_logging
    from consumers.store import TagStore

    configure_logging()
    api = options[ApiOptions]
    store = TagStore(options[StoreSettings].store_url())
    app = create_app(
        ApiContext(
            store=store, fleet_path=options[FleetFile].fleet, max_page_size=api.max_page_size
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
