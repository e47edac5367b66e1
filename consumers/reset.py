"""``tagfleet reset FUNCTION --yes``: drop every stored result of one function, so that the next
``--missing-only`` backfill (``tagfleet tag`` or ``publish``) computes them again."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from consumers.options import FUNCTION_NAME, ResetOptions
from consumers.settings import StoreSettings
from models.options import Options, add_options


def register(commands: Any) -> None:
    """Add ``reset`` to ``tagfleet``'s subparsers."""
    p = commands.add_parser(
        "reset",
        help="drop a function's stored results so the next --missing-only backfill redoes it",
        description="Delete every stored result of FUNCTION: its tags, its current results and"
        " every version's kept result (people's confirmations, rejections and added labels"
        " stay). Result events are not sent. Needs --yes.",
    )
    p.add_argument("function", metavar="FUNCTION", help="the function's name in the fleet")
    add_options(p, [ResetOptions, StoreSettings])
    p.set_defaults(handler=_run_reset)


def _run_reset(args: argparse.Namespace, options: Options) -> int:
    from consumers.store import TagStore
    from consumers.store.selection import reset_function

    if not FUNCTION_NAME.fullmatch(args.function):
        print(f"tagfleet reset: {args.function!r} is not a function name", file=sys.stderr)
        return 2
    if not options[ResetOptions].yes:
        print(
            f"tagfleet reset: this deletes every stored result of {args.function} (tags,"
            " current and kept results); run again with --yes",
            file=sys.stderr,
        )
        return 2
    store = TagStore(options[StoreSettings].store_url())
    try:
        deleted = reset_function(store.engine, args.function)
    finally:
        store.close()
    print(json.dumps({"function": args.function, "deleted": deleted}))
    return 0
