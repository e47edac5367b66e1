"""``tagfleet versions`` and ``tagfleet fleet promote|rollback|shadow|remove``.

A request that cannot be carried out as given (an unknown function or version, no registry, a
fleet file that does not validate) prints one line and exits 2; a candidate the promotion gate
refuses prints both figures and exits 1 (``--force`` promotes it anyway, logged and kept in
the fleet's history).
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from models.options import Options, add_options
from models.settings import FleetFile, Runtime

if TYPE_CHECKING:
    from models.training.spec import TrainSpec

Handler = Callable[[argparse.Namespace, Options], int]


class RegistrySettings(BaseSettings):
    """Where the versions of every function live (shared by train, versions and the fleet)."""

    model_config = SettingsConfigDict(env_prefix="TAGFLEET_", frozen=True, extra="ignore")

    registry: str | None = Field(
        None,
        description="Registry of immutable versions: a folder or s3:// prefix holding"
        " FUNCTION/VERSION/ (unset: the fleet's own registry).",
    )


class VersionsOptions(BaseSettings):
    """``versions``'s options."""

    model_config = SettingsConfigDict(env_prefix="TAGFLEET_VERSIONS_", frozen=True, extra="ignore")

    format: Literal["table", "json"] = Field("table", description="how to print the versions")


class PromoteOptions(BaseSettings):
    """``fleet promote``'s options: the gate compares the headline metric (macro-F1 for
    classify and tags, mAP@0.5 for detect) of the candidate and the serving version."""

    model_config = SettingsConfigDict(
        env_prefix="TAGFLEET_FLEET_PROMOTE_", frozen=True, extra="ignore"
    )

    tolerance: float = Field(
        0.01, ge=0, le=1, description="how much worse the headline metric may be"
    )
    data: str | None = Field(
        None,
        description="evaluate both versions on this dataset (unset: the candidate's report,"
        " when it compared with the serving version)",
    )
    force: bool = Field(False, description="promote even when the gate refuses (logged)")


class RemoveOptions(BaseSettings):
    """``fleet remove``'s options."""

    model_config = SettingsConfigDict(
        env_prefix="TAGFLEET_FLEET_REMOVE_", frozen=True, extra="ignore"
    )

    purge: bool = Field(
        False,
        description="the store deletes the function's results too (unset: they stay, marked"
        " no longer served)",
    )


def register(subparsers: Any, fleet_commands: Any) -> None:
    """``versions`` on the top-level ``subparsers``; ``promote``, ``rollback``, ``shadow`` and
    ``remove`` on the ``fleet`` command's."""
    p = subparsers.add_parser("versions", help="list the versions of a function in the registry")
    p.add_argument("function", help="function name")
    add_options(p, [VersionsOptions, RegistrySettings, FleetFile])
    p.set_defaults(handler=_guard(cmd_versions))
    p = fleet_commands.add_parser(
        "promote", help="make a version serve, if the gate passes it (or --force)"
    )
    p.add_argument("function", help="function name")
    p.add_argument("version", help="a version of the registry (tagfleet versions FUNCTION)")
    add_options(p, [PromoteOptions, RegistrySettings, FleetFile, Runtime])
    p.set_defaults(handler=_guard(cmd_promote))
    p = fleet_commands.add_parser("rollback", help="serve again the previous serving version")
    p.add_argument("function", help="function name")
    add_options(p, [FleetFile])
    p.set_defaults(handler=_guard(cmd_rollback))
    p = fleet_commands.add_parser(
        "shadow", help="run a version beside the serving one; results kept apart for diff"
    )
    p.add_argument("function", help="function name")
    p.add_argument("version", help="a version of the registry, or 'off' to stop the shadow")
    add_options(p, [RegistrySettings, FleetFile])
    p.set_defaults(handler=_guard(cmd_shadow))
    p = fleet_commands.add_parser("remove", help="remove a function")
    p.add_argument("name", help="function name")
    add_options(p, [RemoveOptions, FleetFile])
    p.set_defaults(handler=_guard(cmd_remove))


def _guard(handler: Handler) -> Handler:
    """What the user got wrong is one line on stderr and exit 2, never a traceback."""

    @functools.wraps(handler)
    def guarded(args: argparse.Namespace, options: Options) -> int:
        from models.lifecycle import GateRefused

        try:
            return handler(args, options)
        except GateRefused as exc:
            print(f"tagfleet: refused: {exc}", file=sys.stderr)
            return 1
        except _user_errors() as exc:
            print(f"tagfleet: error: {_one_line(exc)}", file=sys.stderr)
            return 2

    return guarded


def _user_errors() -> tuple[type[Exception], ...]:
    """What a wrong input raises: a request that cannot be carried out, a fleet file or
    dataset that does not validate (ValueError: pydantic, json, DatasetError), YAML that does
    not parse, a file or S3 object that is not there or may not be read, a hub download
    refused by the offline switch."""
    import yaml
    from botocore.exceptions import BotoCoreError, ClientError

    from models.backbones import OfflineError

    return (ValueError, FileNotFoundError, yaml.YAMLError, ClientError, BotoCoreError, OfflineError)


def _one_line(exc: Exception) -> str:
    if isinstance(exc, ValidationError) and exc.title == "FleetConfig":
        problems = "; ".join(
            f"{'.'.join(str(x) for x in e['loc'])}: {e['msg']}" for e in exc.errors()
        )
        return f"the fleet file does not validate: {problems}"
    return " ".join(str(exc).split())


def cmd_versions(args: argparse.Namespace, options: Options) -> int:
    from models import registry as reg
    from models.fleet import read_fleet_config
    from models.lifecycle import registry_of

    fleet = options[FleetFile].fleet
    config = read_fleet_config(fleet)
    where = registry_of(config, fleet, options[RegistrySettings].registry)
    records = reg.read_index(where, args.function).versions
    if not records:
        print(f"tagfleet: error: no versions of {args.function!r} in {where}", file=sys.stderr)
        return 2
    roles = {e.version: e.role.value for e in config.functions if e.name == args.function}
    rows = [{**r.model_dump(mode="json"), "role": roles.get(r.version)} for r in records]
    if options[VersionsOptions].format == "json":
        print(json.dumps(rows, indent=2))
        return 0
    print("version\tcreated\tparent\tdata\trole\tmetrics")
    for row in rows:
        metrics = ", ".join(f"{k} {v:.4f}" for k, v in row["metrics"].items())
        print(
            f"{row['version']}\t{row['created_at'] or '-'}\t{row['parent'] or '-'}"
            f"\t{row['training_data_hash'] or '-'}\t{row['role'] or '-'}\t{metrics}"
        )
    return 0


def cmd_promote(args: argparse.Namespace, options: Options) -> int:
    from models.lifecycle import promote

    opts = options[PromoteOptions]
    _, gate = promote(
        options[FleetFile].fleet,
        args.function,
        args.version,
        registry=options[RegistrySettings].registry,
        tolerance=opts.tolerance,
        data=opts.data,
        force=opts.force,
        runtime=options[Runtime],
    )
    forced = " (forced past the gate)" if opts.force and not gate.passed else ""
    print(f"{gate.describe()}\n{args.function}: {args.version} serves{forced}")
    return 0


def cmd_rollback(args: argparse.Namespace, options: Options) -> int:
    from models.lifecycle import rollback

    _, version = rollback(options[FleetFile].fleet, args.function)
    print(f"{args.function}: {version} serves again")
    return 0


def cmd_shadow(args: argparse.Namespace, options: Options) -> int:
    from models.lifecycle import shadow

    version = None if args.version == "off" else args.version
    shadow(
        options[FleetFile].fleet,
        args.function,
        version,
        registry=options[RegistrySettings].registry,
    )
    print(f"{args.function}: shadow {version or 'off'}")
    return 0


def cmd_remove(args: argparse.Namespace, options: Options) -> int:
    from models.lifecycle import remove

    purge = options[RemoveOptions].purge
    remove(options[FleetFile].fleet, args.name, purge=purge)
    then = "purged from" if purge else "kept, marked no longer served, in"
    print(f"{args.name}: removed; its results are {then} the store when it follows the fleet")
    return 0


def cmd_train_version(
    args: argparse.Namespace,
    options: Options,
    spec: TrainSpec,
    out: str | None,
    previous: str | None,
) -> int:
    """``tagfleet train --registry R``: a new version of the function in the registry (never
    written over), compared with ``--previous``, else the serving version, else the newest."""
    from models.fleet import read_fleet_config
    from models.lifecycle import registry_of, train_version

    if out is not None:
        print("tagfleet train: error: give --out or --registry, not both", file=sys.stderr)
        return 2
    fleet = options[FleetFile].fleet
    try:
        where = registry_of(read_fleet_config(fleet), fleet, options[RegistrySettings].registry)
        artifact, created, parent = train_version(args.dataset, spec, where, fleet, previous)
    except _user_errors() as exc:
        print(f"tagfleet train: error: {_one_line(exc)}", file=sys.stderr)
        return 2
    m = artifact.manifest
    summary = {
        "name": m.name,
        "version": m.version,
        "metrics": m.metrics,
        "registry": where,
        "created": created,
        "previous": parent,
    }
    print(json.dumps(summary))
    return 0
