"""The ``tagfleet`` command: parse, build settings, call.

Every flag also reads ``TAGFLEET_<FLAG>``.
"""

from __future__ import annotations

import argparse
import os
import sys
import typing
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit

from pydantic import SecretStr

from consumers.settings import SECRET_SETTINGS, Settings

_DESCRIPTION = """\
tagfleet tags every image of an asset library with your own labels: it reads asset events
from Kafka, fetches the images from S3, runs a fleet of classify / tags / detect models and
writes the results to a metadata store and a result topic.

Every flag can also be set by an environment variable: --bootstrap-servers is
TAGFLEET_BOOTSTRAP_SERVERS, and so on (a flag wins over the variable). The S3 endpoint and
credentials come from boto3's own chain (AWS_ENDPOINT_URL_S3, AWS_ACCESS_KEY_ID, ...).
"""


_STORE_HELP = (
    "SQLAlchemy URL of the store, without a password (default: TAGFLEET_STORE, or the file"
    " named by TAGFLEET_STORE_FILE, else sqlite:///tags.db; a URL with a password only there:"
    " flags show in the process list)"
)


def store_url(flag: str | None) -> str:
    """The store URL of a command: its ``--store`` flag (refused when it holds a password),
    else the service's setting (``TAGFLEET_STORE``, ``TAGFLEET_STORE_FILE``, the default)."""
    if flag is not None and flag != os.environ.get("TAGFLEET_STORE"):
        if _has_password(flag):
            raise SystemExit(
                "tagfleet: error: --store holds a password, which the process list shows to"
                " every user of this host; set TAGFLEET_STORE or TAGFLEET_STORE_FILE instead"
            )
        return flag
    return Settings().store_url()


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
    _add_demo(commands)
    from models.cli import register

    register(commands)
    apply_env_defaults(parser)
    return parser


def _add_consume(commands: Any) -> None:
    p = commands.add_parser(
        "consume",
        help="run the service: consume asset events and tag them",
        description="Run the tagging service: consume asset events from Kafka, tag each image "
        "with every function of the fleet, store the tags, publish result events, dead-letter "
        "bad input. Stops cleanly on SIGTERM (drain, commit, leave the group).",
    )
    for name, field in Settings.model_fields.items():
        if name in SECRET_SETTINGS and name != "store":
            continue  # a flag would show the secret in the process list
        flag = "--" + name.replace("_", "-")
        help_text = (
            f"{field.description} (default: {_show(field.default)}; env TAGFLEET_{name.upper()})"
        )
        kind = _base_type(field.annotation)
        if kind is bool:
            p.add_argument(
                flag, dest=name, action=argparse.BooleanOptionalAction, default=None, help=help_text
            )
        elif kind is tuple:
            p.add_argument(flag, dest=name, default=None, metavar="A,B", help=help_text)
        else:
            p.add_argument(
                flag,
                dest=name,
                default=None,
                type=kind if kind in (int, float) else str,
                help=help_text,
            )
    p.set_defaults(handler=_run_consume)


def _add_tag(commands: Any) -> None:
    p = commands.add_parser(
        "tag",
        help="tag local folders or s3:// prefixes without Kafka (bulk backfill)",
        description="Run the same pipeline as the service on local files and folders or "
        "s3://bucket/prefix URIs, with a progress bar. Results go to the store.",
    )
    p.add_argument(
        "sources",
        nargs="+",
        metavar="SOURCE",
        help="a file, a folder (recursive) or s3://bucket/prefix",
    )
    p.add_argument("--store", default=None, help=_STORE_HELP)
    p.add_argument(
        "--fleet", default="fleet.yaml", help="fleet.yaml path or s3:// URI (default: fleet.yaml)"
    )
    p.add_argument(
        "--missing-only",
        action="store_true",
        help="skip assets the current fleet version already tagged (default: off)",
    )
    p.add_argument("--batch-size", type=int, default=32, help="inference batch size (default: 32)")
    p.add_argument("--workers", type=int, default=8, help="parallel reads and decodes (default: 8)")
    p.add_argument(
        "--no-progress",
        action="store_true",
        help="hide the progress bar (default: shown on a terminal)",
    )
    p.add_argument(
        "--strict",
        action="store_true",
        help="exit 1 when any image failed (default: off: failures are reported on stderr and"
        " the exit code is 0; 3 when the fleet itself is broken)",
    )
    p.set_defaults(handler=_run_tag)


def _add_publish(commands: Any) -> None:
    p = commands.add_parser(
        "publish",
        help="publish one asset event per existing object so the consumers backfill it",
        description="List s3://bucket/prefix and publish one native asset event per object.",
    )
    p.add_argument("prefix", metavar="s3://bucket/prefix")
    p.add_argument(
        "--bootstrap-servers",
        default="127.0.0.1:19092",
        help="Kafka bootstrap servers (default: 127.0.0.1:19092)",
    )
    p.add_argument("--topic", default="assets", help="topic of asset events (default: assets)")
    p.add_argument(
        "--functions", default=None, help="comma-separated function names to request (default: all)"
    )
    p.set_defaults(handler=_run_publish)


def _add_db(commands: Any) -> None:
    p = commands.add_parser("db", help="metadata store administration")
    sub = p.add_subparsers(dest="db_command", metavar="DB_COMMAND", required=True)
    up = sub.add_parser(
        "upgrade", help="run the store's schema migrations up to the latest version"
    )
    up.add_argument("--store", default=None, help=_STORE_HELP)
    up.add_argument("--revision", default="head", help="target revision (default: head)")
    up.set_defaults(handler=_run_db_upgrade)


def _add_demo(commands: Any) -> None:
    p = commands.add_parser(
        "demo",
        help="the end-to-end demo on the local stack (Kafka, S3, SQLite, a demo fleet)",
        description="Start the local stack if needed, train a small demo fleet, upload demo "
        "images to the local S3, publish their events, run the consumer until every event is "
        "processed, and print the tags it stored.",
    )
    p.add_argument(
        "--workdir",
        default="var/demo",
        help="where the demo keeps its fleet, images and store (default: var/demo)",
    )
    p.add_argument("--images", type=int, default=12, help="number of demo images (default: 12)")
    p.add_argument(
        "--build-fleet-only",
        action="store_true",
        help="only build the demo fleet into --workdir and exit (default: off)",
    )
    p.add_argument(
        "--bootstrap-servers",
        default="127.0.0.1:19092",
        help="Kafka bootstrap servers (default: 127.0.0.1:19092)",
    )
    p.set_defaults(handler=_run_demo)


def apply_env_defaults(parser: argparse.ArgumentParser, prefix: str = "TAGFLEET_") -> None:
    """Let ``TAGFLEET_<DEST>`` set the default of every optional argument, recursively."""
    for action in parser._actions:  # noqa: SLF001 - argparse has no public walker
        if isinstance(action, argparse._SubParsersAction):  # noqa: SLF001
            for sub in action.choices.values():
                apply_env_defaults(sub, prefix)
            continue
        if not action.option_strings or action.dest in ("help",):
            continue
        raw = os.environ.get(prefix + action.dest.upper())
        if raw is None:
            continue
        if isinstance(action, argparse._StoreTrueAction):  # noqa: SLF001
            action.default = raw.lower() in ("1", "true", "yes", "on")
        elif action.type is not None and callable(action.type):
            action.default = action.type(raw)
        else:
            action.default = raw


def _show(value: Any) -> str:
    if isinstance(value, SecretStr):
        return value.get_secret_value()
    return ",".join(value) if isinstance(value, tuple) else str(value)


def _base_type(annotation: Any) -> type:
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _base_type(typing.get_args(annotation)[0])
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        return _base_type(args[0])
    if origin is typing.Literal:
        return str
    if origin is tuple:
        return tuple
    return annotation if isinstance(annotation, type) else str


def settings_from_args(args: argparse.Namespace) -> Settings:
    """Settings from defaults < environment < the flags given on the command line.

    A ``--store`` URL with a password is refused (the process list shows flags to every user
    of the host): it must come from ``TAGFLEET_STORE`` or ``TAGFLEET_STORE_FILE``.
    """
    given = {
        name: getattr(args, name)
        for name in Settings.model_fields
        if getattr(args, name, None) is not None
    }
    if "store" in given:
        given["store"] = store_url(given["store"])
    return Settings(**given)


def _has_password(url: str) -> bool:
    try:
        return bool(urlsplit(url).password)
    except ValueError:
        return False


def _run_consume(args: argparse.Namespace) -> int:
    from consumers.service import run_service

    return run_service(settings_from_args(args))


def _run_tag(args: argparse.Namespace) -> int:
    from consumers.backfill import run_tag

    args.store = store_url(args.store)
    return run_tag(args)


def _run_publish(args: argparse.Namespace) -> int:
    from consumers.backfill import run_publish

    return run_publish(args)


def _run_db_upgrade(args: argparse.Namespace) -> int:
    from consumers.store.migrate import upgrade

    url = store_url(args.store)
    upgrade(url, args.revision)
    print(f"store {url.split('@')[-1]} is at revision {args.revision}")
    return 0


def _run_demo(args: argparse.Namespace) -> int:
    from consumers.demo import run_demo

    return run_demo(args)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["consume"]:
        from consumers.shutdown import install_signal_handlers

        install_signal_handlers()
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.handler(args) or 0)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
