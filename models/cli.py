"""The ``train``, ``eval`` and ``fleet`` subcommands of ``tagfleet`` (or ``python -m models.cli``).

``register(subparsers)`` adds them to the ``tagfleet`` parser; each handler takes the parsed
namespace and returns an exit code. Every flag also reads ``TAGFLEET_<FLAG>`` (e.g.
``TAGFLEET_BACKBONE``); the command line wins.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from typing import Any

ENV_PREFIX = "TAGFLEET_"


def _env(flag: str, default: Any) -> Any:
    return os.environ.get(ENV_PREFIX + flag.lstrip("-").replace("-", "_").upper(), default)


def _add(parser: argparse.ArgumentParser, flag: str, default: Any, help: str, **kw: Any) -> None:
    """A flag whose default comes from its environment variable, stated in its help."""
    env = ENV_PREFIX + flag.lstrip("-").replace("-", "_").upper()
    parser.add_argument(
        flag, default=_env(flag, default), help=f"{help} (default: {default}; env {env})", **kw
    )


def _add_train(sub: Any) -> None:
    p = sub.add_parser("train", help="train, evaluate on a held-out split, write the artifact")
    p.add_argument("dataset", help="folder per label, JSONL or CSV manifest (local or s3://)")
    _add(p, "--type", None, "function type", choices=["classify", "tags", "detect"])
    _add(p, "--name", None, "function name")
    _add(p, "--out", None, "artifact directory or s3:// prefix")
    _add(p, "--backbone", "ViT-B-32", "open_clip model name or model-config JSON path")
    _add(
        p,
        "--weights",
        None,
        "pretrained tag, weights file or s3:// object (none: seeded random init)",
    )
    _add(p, "--mode", "probe", "probe (frozen backbone) or finetune", choices=["probe", "finetune"])
    _add(
        p, "--epochs", None, "probe: full-batch steps, finetune: epochs (None: 300 / 30)", type=int
    )
    _add(p, "--lr", None, "head learning rate (None: 1e-2 probe, 1e-3 finetune)", type=float)
    _add(p, "--backbone-lr", 1e-5, "backbone learning rate in finetune mode", type=float)
    _add(p, "--unfreeze-blocks", None, "finetune only the last N blocks (None: all)", type=int)
    _add(p, "--batch-size", 32, "finetune batch size", type=int)
    _add(p, "--val-fraction", 0.2, "held-out fraction, stratified", type=float)
    _add(p, "--seed", 0, "random seed (split, init, order)", type=int)
    _add(
        p,
        "--target-precision",
        None,
        "tags: thresholds for this precision instead of best F1",
        type=float,
    )
    p.add_argument(
        "--zero-shot-init",
        action="store_true",
        default=_env("--zero-shot-init", "") == "1",
        help="start from the zero-shot head of the label names (default: off; env "
        "TAGFLEET_ZERO_SHOT_INIT=1)",
    )
    _add(p, "--previous", None, "earlier version to compare against (default: the one at --out)")
    p.set_defaults(handler=cmd_train)


def _add_eval(sub: Any) -> None:
    p = sub.add_parser("eval", help="evaluate a function artifact on a labelled dataset")
    p.add_argument("artifact", help="artifact directory or s3:// prefix")
    p.add_argument("dataset", help="folder per label, JSONL or CSV manifest (local or s3://)")
    _add(p, "--out", None, "write report.json, report.md and plots here")
    _add(p, "--previous", None, "another version of the function to compare on the same data")
    p.set_defaults(handler=cmd_eval)


def _add_fleet(sub: Any) -> None:
    p = sub.add_parser("fleet", help="list, add or remove functions of fleet.yaml")
    fsub = p.add_subparsers(dest="fleet_command", required=True)
    for name, helptext in (
        ("add", "add or replace a function"),
        ("list", "list the functions"),
        ("remove", "remove a function"),
    ):
        q = fsub.add_parser(name, help=helptext)
        if name == "add":
            q.add_argument("artifact", help="artifact directory or s3:// prefix")
            _add(q, "--name", None, "served name (None: the artifact's name)")
        if name == "remove":
            q.add_argument("name", help="function name")
        _add(q, "--fleet", "fleet.yaml", "fleet file")
        q.set_defaults(
            handler={"add": cmd_fleet_add, "list": cmd_fleet_list, "remove": cmd_fleet_remove}[name]
        )


def register(subparsers: Any) -> None:
    """Add ``train``, ``eval`` and ``fleet {add,list,remove}`` to an argparse subparsers object."""
    _add_train(subparsers)
    _add_eval(subparsers)
    _add_fleet(subparsers)


def cmd_train(args: argparse.Namespace) -> int:
    """Train a function of any type on ``args.dataset``, save it at ``args.out``, print a JSON
    summary (name, version, headline metrics, out).

    The previous version (``--previous``, else the artifact already at ``--out``) is compared
    in the report. Flags left unset keep :class:`~models.training.spec.TrainSpec`'s defaults.
    """
    from models import storage
    from models.artifacts import load_artifact, save_artifact
    from models.train import train
    from models.training.spec import TrainSpec

    missing = [f for f in ("type", "name", "out") if not getattr(args, f)]
    if missing:
        print(f"train: missing --{', --'.join(missing)}", file=sys.stderr)
        return 2
    given = {
        k: getattr(args, k) for k in TrainSpec.model_fields if getattr(args, k, None) is not None
    }
    spec = TrainSpec(**given)
    previous_uri = args.previous or (
        args.out if storage.exists(storage.join(args.out, "manifest.json")) else None
    )
    previous = load_artifact(previous_uri) if previous_uri else None
    artifact = save_artifact(train(args.dataset, spec, previous=previous), args.out)
    print(
        json.dumps(
            {
                "name": artifact.manifest.name,
                "version": artifact.manifest.version,
                "metrics": artifact.manifest.metrics,
                "out": args.out,
            }
        )
    )
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from models import storage
    from models.evaluate import evaluate

    report, files = evaluate(args.artifact, args.dataset, previous=args.previous)
    if args.out:
        for name, data in files.items():
            storage.write_bytes(storage.join(args.out, name), data)
    print(
        json.dumps(
            {
                "version": report["version"],
                "metrics": {
                    k: v for k, v in report["metrics"].items() if not isinstance(v, dict | list)
                },
            }
        )
    )
    return 0


def cmd_fleet_add(args: argparse.Namespace) -> int:
    from models.artifacts import load_manifest
    from models.fleet import FleetEntry, read_fleet_config, write_fleet_config

    manifest = load_manifest(args.artifact)  # validates before the fleet changes
    name = args.name or manifest.name
    config = read_fleet_config(args.fleet)
    entries = [e for e in config.functions if e.name != name]
    entries.append(FleetEntry(name=name, artifact=args.artifact))
    write_fleet_config(args.fleet, config.model_copy(update={"functions": entries}))
    print(f"{name}: {manifest.type.value} {manifest.version} -> {args.fleet}")
    return 0


def cmd_fleet_list(args: argparse.Namespace) -> int:
    from models.fleet import read_fleet_config

    for e in read_fleet_config(args.fleet).functions:
        print(f"{e.name}\t{e.artifact}\t{'enabled' if e.enabled else 'disabled'}")
    return 0


def cmd_fleet_remove(args: argparse.Namespace) -> int:
    from models.fleet import read_fleet_config, write_fleet_config

    config = read_fleet_config(args.fleet)
    entries = [e for e in config.functions if e.name != args.name]
    if len(entries) == len(config.functions):
        print(f"fleet remove: no function named {args.name!r} in {args.fleet}", file=sys.stderr)
        return 1
    write_fleet_config(args.fleet, config.model_copy(update={"functions": entries}))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Standalone entry point: ``python -m models.cli train|eval|fleet ...``."""
    parser = argparse.ArgumentParser(prog="python -m models.cli", description=__doc__)
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return int(args.handler(args))


if __name__ == "__main__":
    raise SystemExit(main())
