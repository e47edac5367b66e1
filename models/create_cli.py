"""``tagfleet create`` (a zero-shot function from label names) and ``tagfleet weights fetch``
(hub weights put into your own bucket once, so pods never reach the internet).

Options come from the settings models below (``TAGFLEET_CREATE_*``,
``TAGFLEET_WEIGHTS_FETCH_*``; :mod:`models.options`).
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any, Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from models.options import CommaList, Options, add_options
from models.settings import Runtime


class CreateOptions(BaseSettings):
    """``tagfleet create``."""

    model_config = SettingsConfigDict(env_prefix="TAGFLEET_CREATE_", frozen=True, extra="ignore")

    type: Literal["classify", "tags"] = Field(description="function type")
    labels: CommaList = Field(
        description="the label names, comma separated (each is read into the prompts)"
    )
    out: str = Field(description="artifact directory or s3:// prefix to write")
    prompts: str | None = Field(
        None,
        description="file of prompt templates, one per line with {} for the label (unset: the"
        " default ensemble)",
    )
    backbone: str = Field("ViT-B-32", description="open_clip model name or model-config JSON path")
    weights: str | None = Field(
        None, description="pretrained tag, weights file or s3:// object (unset: random init)"
    )
    calibrate: str | None = Field(
        None,
        description="a labelled dataset in these labels: tags thresholds and the classify"
        " temperature are fitted on it, and the report says how the function does there",
    )
    target_precision: float | None = Field(
        None, gt=0, le=1, description="tags: thresholds for this precision instead of best F1"
    )

    @field_validator("labels", mode="after")
    @classmethod
    def _distinct(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if len(value) < 2 or len(set(value)) != len(value):
            raise ValueError("give at least two distinct labels, e.g. cat,dog")
        return value


class WeightsFetchOptions(BaseSettings):
    """``tagfleet weights fetch``."""

    model_config = SettingsConfigDict(
        env_prefix="TAGFLEET_WEIGHTS_FETCH_", frozen=True, extra="ignore"
    )

    to: str = Field(description="folder or s3:// prefix that receives the weights file")


def register(subparsers: Any) -> None:
    create = subparsers.add_parser(
        "create",
        help="a zero-shot classify or tags function from label names alone",
        description="Write a zero-shot function (the backbone's text tower over a prompt"
        " ensemble) for the given labels: it can be evaluated (tagfleet eval), served (tagfleet"
        " fleet add) and used as the start of training (train --zero-shot-init). With"
        " --calibrate, a few labelled samples fit its thresholds or temperature.",
    )
    create.add_argument("name", help="function name")
    add_options(create, [CreateOptions, Runtime])
    create.set_defaults(handler=cmd_create)

    weights = subparsers.add_parser("weights", help="model weights in your own storage")
    sub = weights.add_subparsers(dest="weights_command", metavar="WEIGHTS_COMMAND", required=True)
    fetch = sub.add_parser(
        "fetch",
        help="download a hub tag's weights once into a folder or s3:// prefix",
        description="Download the weights of an open_clip pretrained tag once and put them in"
        " your folder or bucket; name the printed URI as --weights, and set TAGFLEET_OFFLINE"
        " on pods so that none ever downloads from the internet.",
    )
    fetch.add_argument("model", help="open_clip model name, e.g. ViT-B-32")
    fetch.add_argument("tag", help="its pretrained tag, e.g. laion2b_s34b_b79k")
    add_options(fetch, [WeightsFetchOptions])
    fetch.set_defaults(handler=cmd_weights_fetch)


def cmd_create(args: argparse.Namespace, options: Options) -> int:
    from models.artifacts import save_artifact
    from models.backbones import OfflineError
    from models.create import create

    opts, runtime = options[CreateOptions], options[Runtime]
    try:
        artifact = create(
            args.name,
            opts.type,
            list(opts.labels),
            backbone=opts.backbone,
            weights=opts.weights,
            prompts=opts.prompts,
            calibrate=opts.calibrate,
            target_precision=opts.target_precision,
            device=runtime.device,
            cache_dir=runtime.cache_dir,
            offline=runtime.offline,
        )
    except (ValueError, FileNotFoundError, OfflineError) as exc:
        print(f"tagfleet create: error: {exc}", file=sys.stderr)
        return 2
    saved = save_artifact(artifact, opts.out)
    m = saved.manifest
    print(json.dumps({"name": m.name, "version": m.version, "metrics": m.metrics, "out": opts.out}))
    return 0


def cmd_weights_fetch(args: argparse.Namespace, options: Options) -> int:
    from models.backbones import fetch_weights

    try:
        uri = fetch_weights(args.model, args.tag, options[WeightsFetchOptions].to)
    except ValueError as exc:
        print(f"tagfleet weights fetch: error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps({"weights": uri, "use": f"--weights {uri}"}))
    return 0
