"""The ``tagfleet`` command: parse, resolve the settings, call.

Every option is a field of a settings model (:mod:`models.options` generates the flags and
resolves flags > ``TAGFLEET_*`` variables > defaults); a handler gets the parsed arguments and
the resolved :class:`~models.options.Options`.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any
from urllib.parse import parse_qs, urlsplit

from consumers.options import (
    DbUpgradeOptions,
    DemoOptions,
    DlqListOptions,
    DlqRedriveOptions,
    PublishOptions,
    TagOptions,
)
from consumers.settings import (
    DlqSettings,
    EmbeddingSettings,
    KafkaSettings,
    Settings,
    StoreSettings,
    TaggingSettings,
)
from models.options import Options, add_options, run
from models.settings import FleetFile, Runtime, Serving

_DESCRIPTION = """\
tagfleet tags every image of an asset library with your own labels: it reads asset events
from Kafka, fetches the images from S3, runs a fleet of classify / tags / detect models and
writes the results to a metadata store and a result topic.

Every flag can also be set by an environment variable, named in its help: the service's
--batch-size is TAGFLEET_BATCH_SIZE, tag's is TAGFLEET_TAG_BATCH_SIZE (a flag wins over the
variable); `COMMAND --show-config` prints what a command would run with. docs/configuration.md
lists every variable and the commands that read it. The S3 endpoint and credentials come from
boto3's own chain (AWS_ENDPOINT_URL_S3, AWS_ACCESS_KEY_ID, ...).
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tagfleet",
        description=_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    _add_consume(commands)
    _add_tag(commands)
    _add_publish(commands)
    _add_db(commands)
    _add_dlq(commands)
    _add_demo(commands)
    _add_diff(commands)
    from consumers.retag.cli import register as register_retag

    register_retag(commands)
    from consumers.api.cli import register as register_api

    register_api(commands)
    from consumers.reset import register as register_reset

    register_reset(commands)
    from consumers.apply_embeddings import register as register_apply
    from consumers.library_search import register as register_search

    register_apply(commands)
    register_search(commands)
    from models.cli import register

    register(commands)
    return parser


def _add_consume(commands: Any) -> None:
    p = commands.add_parser(
        "consume",
        help="run the service: consume asset events and tag them",
        description="Run the tagging service: consume asset events from Kafka, tag each image "
        "with every function of the fleet, store the tags, publish result events, dead-letter "
        "bad input. Stops cleanly on SIGTERM (drain, commit, leave the group).",
    )
    add_options(p, [Settings])
    p.set_defaults(handler=_run_consume)


def _add_tag(commands: Any) -> None:
    p = commands.add_parser(
        "tag",
        help="tag local folders or s3:// prefixes without Kafka (bulk backfill)",
        description="Tag local files and folders or s3://bucket/prefix URIs with the service's "
        "own stages (its limits, decoder, retries, canary), with a progress bar. Results go to "
        "the store and, as result events, to --results-topic (--no-results: store only); "
        "images that fail are reported with their reasons. Modes: every image (default), "
        "--missing-only, --changed (the object's ETag differs from the stored one), "
        "--functions a,b; tagfleet reset FUNCTION drops a function's results first.",
    )
    p.add_argument(
        "sources",
        nargs="+",
        metavar="SOURCE",
        help="a file, a folder (recursive) or s3://bucket/prefix",
    )
    add_options(
        p,
        [
            TagOptions,
            StoreSettings,
            FleetFile,
            Runtime,
            Serving,
            TaggingSettings,
            EmbeddingSettings,
            KafkaSettings,
        ],
    )
    p.set_defaults(handler=_run_tag)


def _add_publish(commands: Any) -> None:
    p = commands.add_parser(
        "publish",
        help="publish one asset event per existing object so the consumers backfill it",
        description="List s3://bucket/prefix and publish one native asset event per object onto"
        " the backfill lane (served with the capacity uploads leave; --lane upload: the upload"
        " topic). Modes: every object (default), --missing-only, --changed, --functions a,b"
        " (docs/events.md, 'Priority lanes'; docs/store.md, 'Backfill modes').",
    )
    p.add_argument("prefix", metavar="s3://bucket/prefix")
    add_options(p, [PublishOptions, KafkaSettings, StoreSettings, FleetFile])
    p.set_defaults(handler=_run_publish)


def _add_db(commands: Any) -> None:
    p = commands.add_parser("db", help="metadata store administration")
    sub = p.add_subparsers(dest="db_command", metavar="DB_COMMAND", required=True)
    up = sub.add_parser(
        "upgrade", help="run the store's schema migrations up to the latest version"
    )
    add_options(up, [DbUpgradeOptions, StoreSettings])
    up.set_defaults(handler=_run_db_upgrade)
    follow = sub.add_parser(
        "follow",
        help="make the store follow the fleet now (a rollback's kept results current, removed"
        " functions unserved or purged; no model runs): what a service does at start and reload",
    )
    add_options(follow, [StoreSettings, FleetFile])
    follow.set_defaults(handler=_run_db_follow)


def _add_dlq(commands: Any) -> None:
    p = commands.add_parser(
        "dlq",
        help="read the dead-letter topic, and send fixed dead letters back",
        description="The dead-letter topic by reason (list), and dead letters whose cause was"
        " fixed sent back onto the topic they came from (redrive), once each.",
    )
    sub = p.add_subparsers(dest="dlq_command", metavar="DLQ_COMMAND", required=True)
    listing = sub.add_parser(
        "list", help="dead letters by reason, with counts and samples (JSON with --json-output)"
    )
    add_options(listing, [DlqListOptions, KafkaSettings, DlqSettings])
    listing.set_defaults(handler=_run_dlq_list)
    redrive = sub.add_parser(
        "redrive",
        help="send the dead letters of one reason back onto their topic, once each",
        description="Send the dead letters of one reason back onto the topic they came from,"
        " with a tagfleet-redrive-of header, and record each in the ledger topic <dlq>.redrives."
        " A dead letter already redriven, or an event that failed again after a redrive, is"
        " refused unless --force; exit 1 when any was refused.",
    )
    add_options(redrive, [DlqRedriveOptions, KafkaSettings, DlqSettings])
    redrive.set_defaults(handler=_run_dlq_redrive)


def _add_demo(commands: Any) -> None:
    p = commands.add_parser(
        "demo",
        help="the end-to-end demo on the local stack (Kafka, S3, SQLite, a demo fleet)",
        description="Start the local stack if needed, train a small demo fleet, upload demo "
        "images to the local S3, publish their events, run the consumer until every event is "
        "processed, and print the tags it stored. It reads none of a deployment's TAGFLEET_* "
        "settings, only its own TAGFLEET_DEMO_* and the runtime's.",
    )
    add_options(p, [DemoOptions, Runtime])
    p.set_defaults(handler=_run_demo)


def _add_diff(commands: Any) -> None:
    from consumers.shadow_diff import DiffOptions

    p = commands.add_parser(
        "diff",
        help="what a shadow version would change: agreement, labels added/removed, top-label"
        " changes, score shifts",
        description="Compare the results a shadow version of FUNCTION stored apart with the"
        " serving results, over the assets both saw (the same object bytes): agreement rate,"
        " per-label added/removed counts, the assets whose top label changed (with scores),"
        " score shifts per label and the assets that changed most, as Markdown or JSON.",
    )
    p.add_argument("function", help="function name")
    add_options(p, [DiffOptions, StoreSettings])
    p.set_defaults(handler=_run_diff)


def _run_diff(args: argparse.Namespace, options: Options) -> int:
    import json

    from consumers.shadow_diff import DiffOptions, diff, markdown
    from consumers.store import TagStore

    opts = options[DiffOptions]
    store = TagStore(options[StoreSettings].store_url())
    try:
        pairs = store.shadow_pairs(args.function, opts.version)
    finally:
        store.close()
    if not pairs:
        which = f"version {opts.version}" if opts.version else "any shadow version"
        print(
            f"tagfleet diff: error: no stored results of {which} of {args.function!r} on assets"
            " the serving version saw",
            file=sys.stderr,
        )
        return 2
    report = diff(args.function, pairs, top=opts.top, link_template=opts.link_template)
    print(json.dumps(report, indent=2) if opts.format == "json" else markdown(report))
    return 0


def store_flag_problem(args: argparse.Namespace) -> str | None:
    """A ``--store`` URL with a password is refused: the process list shows flags to every
    user of the host; it belongs in ``TAGFLEET_STORE`` or ``TAGFLEET_STORE_FILE``."""
    flag = getattr(args, "store", None)
    if flag is None:
        return None
    try:
        parts = urlsplit(flag)
        password = parts.password or "password" in parse_qs(parts.query)
    except ValueError:
        return None
    if not password:
        return None
    return (
        "--store holds a password, which the process list shows to every user of this host;"
        " set TAGFLEET_STORE or TAGFLEET_STORE_FILE instead"
    )


def _run_consume(args: argparse.Namespace, options: Options) -> int:
    from consumers.service import run_service

    return run_service(options[Settings])


def _run_tag(args: argparse.Namespace, options: Options) -> int:
    from consumers.backfill import run_tag

    return run_tag(args.sources, options)


def _run_publish(args: argparse.Namespace, options: Options) -> int:
    from consumers.backfill import run_publish

    publish = options[PublishOptions]
    store = options[StoreSettings] if publish.missing_only or publish.changed else None
    fleet = options[FleetFile].fleet if publish.missing_only else None
    return run_publish(args.prefix, publish, options[KafkaSettings], store, fleet)


def _run_db_upgrade(args: argparse.Namespace, options: Options) -> int:
    from consumers.store.migrate import upgrade

    url = options[StoreSettings].store_url()
    revision = options[DbUpgradeOptions].revision
    upgrade(url, revision)
    print(f"store {url.split('@')[-1]} is at revision {revision}")
    return 0


def _run_dlq_list(args: argparse.Namespace, options: Options) -> int:
    from consumers.dlq import run_list

    return run_list(options[DlqListOptions], options[KafkaSettings], options[DlqSettings])


def _run_dlq_redrive(args: argparse.Namespace, options: Options) -> int:
    from consumers.dlq import run_redrive

    return run_redrive(options[DlqRedriveOptions], options[KafkaSettings], options[DlqSettings])


def _run_db_follow(args: argparse.Namespace, options: Options) -> int:
    from pydantic import ValidationError

    from consumers.store import TagStore
    from models.fleet import read_fleet_config, store_state

    fleet = options[FleetFile].fleet
    try:
        config = read_fleet_config(fleet)
    except (ValidationError, ValueError) as exc:
        print(f"tagfleet db follow: error: {fleet} is not a fleet: {exc}", file=sys.stderr)
        return 2
    store = TagStore(options[StoreSettings].store_url())
    try:
        stats = store.follow_fleet(*store_state(config))
    finally:
        store.close()
    print(
        f"store follows {fleet}: {stats.restored} results current again,"
        f" {stats.unserved} marked no longer served, {stats.purged} purged"
    )
    return 0


def _run_demo(args: argparse.Namespace, options: Options) -> int:
    from consumers.demo import run_demo

    return run_demo(options[DemoOptions], options[Runtime])


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``tagfleet ARGV``. A value that does not validate exits 2 with one line per value
    naming the flag or the ``TAGFLEET_*`` variable it came from."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["consume"] and "--show-config" not in argv:
        from consumers.shutdown import install_signal_handlers

        install_signal_handlers()
    try:
        return run(build_parser(), argv, refuse=store_flag_problem)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
