"""The ``train``, ``eval`` and ``fleet`` subcommands of ``tagfleet`` (or ``python -m models.cli``).

``register(subparsers)`` adds them to the ``tagfleet`` parser; each handler takes the parsed
namespace and the command's resolved :class:`~models.options.Options` and returns an exit code.
Every option is a field of a settings model (:mod:`models.options`): ``train``'s are
:class:`~models.training.spec.TrainSpec`'s fields plus where the artifact goes, read from
``TAGFLEET_TRAIN_<NAME>``; ``eval``'s from ``TAGFLEET_EVAL_<NAME>``; the device and the cache
from the shared :class:`~models.settings.Runtime` (``TAGFLEET_DEVICE``, ``TAGFLEET_CACHE_DIR``).
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
from collections.abc import Sequence
from typing import Any

from pydantic import Field, create_model
from pydantic_settings import BaseSettings, SettingsConfigDict

from models import create_cli, embeddings_cli, lifecycle_cli
from models.library_settings import EmbeddingStoreSettings
from models.lifecycle_cli import RegistrySettings
from models.manifest import FunctionType
from models.options import Options, add_options, run
from models.settings import FleetFile, Runtime
from models.training.spec import TrainSpec

# Help for TrainSpec fields that do not carry a description of their own.
_SPEC_HELP = {
    "backbone": "open_clip model name or model-config JSON path",
    "weights": "pretrained tag, weights file or s3:// object (unset: seeded random init)",
    "mode": "probe (frozen backbone) or finetune",
    "epochs": "probe: full-batch steps, finetune: epochs (unset: 300 / 30)",
    "lr": "head learning rate (unset: 1e-2 probe, 1e-3 finetune)",
    "backbone_lr": "backbone learning rate in finetune mode",
    "weight_decay": "AdamW weight decay of the head",
    "batch_size": "finetune batch size",
    "unfreeze_blocks": "finetune only the last N blocks (unset: all)",
    "val_fraction": "held-out fraction, stratified",
    "seed": "random seed (split, init, order)",
    "zero_shot_init": "start from the zero-shot head of the label names",
    "target_precision": "tags: thresholds for this precision instead of best F1",
    "augment": "augment training images (flips, shifts)",
    "progress": "progress bars on stderr",
}
# TrainSpec fields that the shared Runtime settings give, not train's own options.
_FROM_RUNTIME = ("device", "cache_dir", "offline")


class _TrainSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="TAGFLEET_TRAIN_", frozen=True, extra="ignore")


def _train_options() -> type[BaseSettings]:
    """``train``'s options: where the artifact goes, then every field of TrainSpec."""
    fields: dict[str, Any] = {
        "type": (FunctionType, Field(description="function type")),
        "name": (str, Field(description="function name")),
        "out": (
            str | None,
            Field(None, description="artifact directory or s3:// prefix (or give --registry)"),
        ),
        "previous": (
            str | None,
            Field(
                None,
                description="earlier version to compare against (unset: the one at --out; with"
                " --registry the serving version, else the newest)",
            ),
        ),
        "from_embeddings": (
            str | None,
            Field(
                None,
                description="train on the stored embeddings of the labelled asset ids of this"
                " JSONL or CSV manifest (asset_id or image = an asset id or s3:// URI, plus"
                " label/labels) instead of a DATASET: no image is fetched (needs --embeddings)",
            ),
        ),
    }
    for name, spec_field in TrainSpec.model_fields.items():
        if name in fields or name in _FROM_RUNTIME:
            continue
        field = copy.copy(spec_field)
        field.description = field.description or _SPEC_HELP.get(name)
        fields[name] = (field.annotation, field)
    options: type[BaseSettings] = create_model(  # type: ignore[call-overload]
        "TrainOptions", __base__=_TrainSettings, **fields
    )
    return options


TrainOptions = _train_options()


class EvalOptions(BaseSettings):
    """``eval``'s options."""

    model_config = SettingsConfigDict(env_prefix="TAGFLEET_EVAL_", frozen=True, extra="ignore")

    out: str | None = Field(None, description="write report.json, report.md and plots here")
    previous: str | None = Field(
        None, description="another version of the function to compare on the same data"
    )


class FleetAddOptions(BaseSettings):
    """``fleet add``'s options."""

    model_config = SettingsConfigDict(env_prefix="TAGFLEET_FLEET_ADD_", frozen=True, extra="ignore")

    name: str | None = Field(None, description="served name (unset: the artifact's name)")


def _add_train(sub: Any) -> None:
    p = sub.add_parser(
        "train",
        help="train, evaluate on a held-out split, write the artifact",
        description="Train a function of any type, evaluate it on a held-out split and write"
        " the artifact (manifest, weights, report with plots).",
    )
    p.add_argument(
        "dataset",
        nargs="?",
        help="folder per label, JSONL or CSV manifest (local or s3://); none with"
        " --from-embeddings",
    )
    add_options(p, [TrainOptions, Runtime, RegistrySettings, FleetFile, EmbeddingStoreSettings])
    p.set_defaults(handler=cmd_train)


def _add_eval(sub: Any) -> None:
    p = sub.add_parser("eval", help="evaluate a function artifact on a labelled dataset")
    p.add_argument("artifact", help="artifact directory or s3:// prefix")
    p.add_argument("dataset", help="folder per label, JSONL or CSV manifest (local or s3://)")
    add_options(p, [EvalOptions, Runtime])
    p.set_defaults(handler=cmd_eval)


def _add_fleet(sub: Any) -> Any:
    p = sub.add_parser("fleet", help="list, add or remove functions of fleet.yaml")
    fsub = p.add_subparsers(dest="fleet_command", required=True)
    add = fsub.add_parser("add", help="add or replace a function")
    add.add_argument("artifact", help="artifact directory or s3:// prefix")
    add_options(add, [FleetAddOptions, FleetFile])
    add.set_defaults(handler=cmd_fleet_add)
    listing = fsub.add_parser("list", help="list the functions")
    add_options(listing, [FleetFile])
    listing.set_defaults(handler=cmd_fleet_list)
    return fsub


def register(subparsers: Any) -> None:
    """Add ``train``, ``eval``, ``fleet {add,list}`` and the lifecycle's ``versions`` and
    ``fleet {promote,rollback,shadow,remove}``, ``create``, ``weights fetch`` and ``embeddings
    {maintain,stats}`` to an argparse subparsers object."""
    _add_train(subparsers)
    _add_eval(subparsers)
    lifecycle_cli.register(subparsers, _add_fleet(subparsers))
    create_cli.register(subparsers)
    embeddings_cli.register(subparsers)


def cmd_train(args: argparse.Namespace, options: Options) -> int:
    """Train a function of any type on ``args.dataset``, save it at ``--out``, print a JSON
    summary (name, version, headline metrics, out).

    The previous version (``--previous``, else the artifact already at ``--out``) is compared
    in the report. Options left unset keep :class:`~models.training.spec.TrainSpec`'s defaults.
    """
    from models import storage
    from models.artifacts import load_artifact, save_artifact
    from models.train import train

    given = options[TrainOptions].model_dump()
    out, previous_uri = given.pop("out"), given.pop("previous")
    manifest = given.pop("from_embeddings")
    runtime = options[Runtime]
    spec = TrainSpec(
        **given, device=runtime.device, cache_dir=str(runtime.cache_dir), offline=runtime.offline
    )
    if (manifest is None) == (args.dataset is None):
        print(
            "tagfleet train: error: give a DATASET or --from-embeddings MANIFEST (one of them)",
            file=sys.stderr,
        )
        return 2
    if manifest is not None:
        return _train_from_embeddings(manifest, options, spec, out)
    if options[RegistrySettings].registry is not None or out is None:
        return lifecycle_cli.cmd_train_version(args, options, spec, out, previous_uri)
    if previous_uri is None and storage.exists(storage.join(out, "manifest.json")):
        previous_uri = out
    previous = load_artifact(previous_uri) if previous_uri else None
    artifact = save_artifact(train(args.dataset, spec, previous=previous), out)
    print(
        json.dumps(
            {
                "name": artifact.manifest.name,
                "version": artifact.manifest.version,
                "metrics": artifact.manifest.metrics,
                "out": out,
            }
        )
    )
    return 0


def _train_from_embeddings(
    manifest: str, options: Options, spec: TrainSpec, out: str | None
) -> int:
    """``train --from-embeddings``: a probe on the stored embeddings of labelled asset ids,
    saved at ``--out`` or added to the registry as a new version (its parent: the newest)."""
    from models import registry as reg
    from models.artifacts import save_artifact
    from models.embedding_store import open_embedding_store
    from models.fleet import read_fleet_config
    from models.from_embeddings import train_from_embeddings
    from models.lifecycle import registry_of

    store = open_embedding_store(options[EmbeddingStoreSettings].location("train"))
    given = options[RegistrySettings].registry
    try:
        artifact = train_from_embeddings(manifest, spec, store)
        if out is not None and given is not None:
            raise ValueError("give --out or --registry, not both")
        if out is None:
            fleet = options[FleetFile].fleet
            given = registry_of(read_fleet_config(fleet), fleet, given)
        summary: dict[str, Any] = {"name": spec.name}
        if out is not None:
            artifact = save_artifact(artifact, out)
            summary["out"] = out
        else:
            assert given is not None
            parent = reg.latest(given, spec.name)
            artifact, created = reg.publish(artifact, given, parent)
            summary.update({"registry": given, "created": created, "previous": parent})
    except lifecycle_cli._user_errors() as exc:
        print(f"tagfleet train: error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 2
    m = artifact.manifest
    summary.update(
        {"version": m.version, "metrics": m.metrics, "trained_from": m.training.get("source")}
    )
    print(json.dumps(summary))
    return 0


def cmd_eval(args: argparse.Namespace, options: Options) -> int:
    from models import storage
    from models.evaluate import evaluate

    opts, runtime = options[EvalOptions], options[Runtime]
    report, files = evaluate(
        args.artifact,
        args.dataset,
        previous=opts.previous,
        device=runtime.device,
        cache_dir=runtime.cache_dir,
        offline=runtime.offline,
    )
    if opts.out:
        for name, data in files.items():
            storage.write_bytes(storage.join(opts.out, name), data)
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


def cmd_fleet_add(args: argparse.Namespace, options: Options) -> int:
    from models.artifacts import load_manifest
    from models.fleet import FleetEntry
    from models.lifecycle import add

    manifest = load_manifest(args.artifact)  # validates before the fleet changes
    name = options[FleetAddOptions].name or manifest.name
    fleet = options[FleetFile].fleet
    add(fleet, FleetEntry(name=name, artifact=args.artifact), manifest.version)
    print(f"{name}: {manifest.type.value} {manifest.version} -> {fleet}")
    return 0


def cmd_fleet_list(args: argparse.Namespace, options: Options) -> int:
    from models.fleet import read_fleet_config

    for e in read_fleet_config(options[FleetFile].fleet).functions:
        where = e.artifact or f"{e.registry_function}@{e.version}"
        state = "enabled" if e.enabled else "disabled"
        print(f"{e.name}\t{where}\t{state}\t{e.role.value}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Standalone entry point: ``python -m models.cli train|eval|fleet ...``."""
    parser = argparse.ArgumentParser(prog="python -m models.cli", description=__doc__)
    register(parser.add_subparsers(dest="command", required=True))
    return run(parser, sys.argv[1:] if argv is None else argv)


if __name__ == "__main__":
    raise SystemExit(main())
