"""``tagfleet webhook add|list|remove|rotate|serve|redrive`` (registered by consumers.api.cli)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from consumers.settings import KafkaSettings
from consumers.webhooks.settings import (
    WebhookAddOptions,
    WebhookDelivery,
    WebhookFile,
    WebhookServe,
)
from models.options import Options, add_options


def register(commands: Any) -> None:
    p = commands.add_parser(
        "webhook",
        help="POST result events to HTTP endpoints, signed (docs/webhooks.md)",
        description="Register endpoints and deliver result events to them with an"
        " HMAC-SHA256 signature, retries and per-endpoint dead letters.",
    )
    sub = p.add_subparsers(dest="webhook_command", metavar="WEBHOOK_COMMAND", required=True)
    add = sub.add_parser("add", help="register an endpoint; prints its id and secret once")
    add.add_argument("url", metavar="URL")
    add_options(add, [WebhookAddOptions, WebhookFile])
    add.set_defaults(handler=_add)
    listing = sub.add_parser("list", help="the endpoints (without their secrets)")
    add_options(listing, [WebhookFile])
    listing.set_defaults(handler=_list)
    remove = sub.add_parser("remove", help="unregister an endpoint")
    remove.add_argument("endpoint", metavar="ID")
    add_options(remove, [WebhookFile])
    remove.set_defaults(handler=_remove)
    rotate = sub.add_parser(
        "rotate", help="a new secret signing beside the old one; --finish drops the old one"
    )
    rotate.add_argument("endpoint", metavar="ID")
    rotate.add_argument("--finish", action="store_true", help="drop the previous secret")
    add_options(rotate, [WebhookFile])
    rotate.set_defaults(handler=_rotate)
    serve = sub.add_parser(
        "serve",
        help="deliver result events to every endpoint",
        description="Deliver the result topic to every registered endpoint, each from its own"
        " consumer group; Prometheus metrics (deliveries, retries, dead letters, delivery"
        " time, lag per endpoint) on --metrics-port.",
    )
    add_options(serve, [WebhookDelivery, WebhookServe, WebhookFile, KafkaSettings])
    serve.set_defaults(handler=_serve)
    redrive = sub.add_parser(
        "redrive",
        help="POST an endpoint's dead letters once more (each once: a ledger records them)",
        description="POST the endpoint's dead letters that no earlier redrive delivered; each"
        " delivery is recorded in the ledger topic <dlq-topic>.redrives, so running it again"
        " sends only what is still undelivered.",
    )
    redrive.add_argument("endpoint", metavar="ID")
    add_options(redrive, [WebhookDelivery, WebhookFile, KafkaSettings])
    redrive.set_defaults(handler=_redrive)


def _find(options: Options, endpoint_id: str) -> Any:
    from consumers.webhooks.registry import load

    for e in load(Path(options[WebhookFile].webhooks)):
        if e.id == endpoint_id:
            return e
    print(f"tagfleet webhook: error: no endpoint {endpoint_id!r}", file=sys.stderr)
    return None


def _add(args: argparse.Namespace, options: Options) -> int:
    from consumers.webhooks.registry import add

    opts = options[WebhookAddOptions]
    try:
        e = add(Path(options[WebhookFile].webhooks), args.url, list(opts.events), opts.tenant)
    except ValueError as exc:
        print(f"tagfleet webhook add: error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps({"id": e.id, "secret": e.secrets[0]}))
    return 0


def _list(args: argparse.Namespace, options: Options) -> int:
    from consumers.webhooks.registry import load

    for e in load(Path(options[WebhookFile].webhooks)):
        print(json.dumps(e.public()))
    return 0


def _remove(args: argparse.Namespace, options: Options) -> int:
    from consumers.webhooks.registry import remove

    return 0 if remove(Path(options[WebhookFile].webhooks), args.endpoint) else 1


def _rotate(args: argparse.Namespace, options: Options) -> int:
    from consumers.webhooks.registry import rotate

    e = rotate(Path(options[WebhookFile].webhooks), args.endpoint, args.finish)
    if e is None:
        return 1
    print(json.dumps({"id": e.id, "secret": e.secrets[0]}))
    return 0


def _policy(options: Options) -> Any:
    from consumers.webhooks.dispatch import Delivery

    d = options[WebhookDelivery]
    return Delivery(timeout_s=d.timeout_s, budget_s=d.budget_s, backoff_s=d.backoff_s)


def _serve(args: argparse.Namespace, options: Options) -> int:
    import signal
    import threading

    from consumers.logs import configure_logging
    from consumers.webhooks.dispatch import serve
    from consumers.webhooks.registry import load

    configure_logging()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    d = options[WebhookDelivery]
    serve(
        load(Path(options[WebhookFile].webhooks)),
        kafka=options[KafkaSettings].kafka_common(),
        topic=d.results_topic,
        group=d.group,
        dlq_topic=d.dlq_topic,
        policy=_policy(options),
        stop=stop,
        metrics_host=options[WebhookServe].metrics_host,
        metrics_port=options[WebhookServe].metrics_port,
    )
    return 0


def _redrive(args: argparse.Namespace, options: Options) -> int:
    from kafka.errors import KafkaError

    from consumers.webhooks.dispatch import redrive
    from consumers.webhooks.ledger import ledger_topic

    endpoint = _find(options, args.endpoint)
    if endpoint is None:
        return 1
    dlq_topic = options[WebhookDelivery].dlq_topic
    try:
        done = redrive(
            endpoint,
            kafka=options[KafkaSettings].kafka_common(),
            dlq_topic=dlq_topic,
            policy=_policy(options),
        )
    except (TimeoutError, KafkaError) as exc:
        print(f"tagfleet webhook redrive: error: {exc}", file=sys.stderr)
        return 1
    if done.unrecorded:
        print(
            f"tagfleet webhook redrive: delivered but not recorded in {ledger_topic(dlq_topic)}"
            f" (a later redrive would send them again): {', '.join(done.unrecorded)}",
            file=sys.stderr,
        )
    summary = {
        "delivered": done.delivered,
        "failed": done.failed,
        "already_delivered": done.already,
        "ledger": ledger_topic(dlq_topic),
    }
    print(json.dumps(summary))
    return 1 if done.failed or done.unrecorded else 0
