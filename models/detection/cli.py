"""``tagfleet train --type detect``: the handler behind ``HeadType.train_cli`` for detect."""

from __future__ import annotations

import argparse
import json

from models import storage
from models.artifacts import load_artifact, save_artifact
from models.detection.train import train_detect
from models.train import TrainSpec


def train_command(args: argparse.Namespace) -> int:
    """Train on the COCO file ``args.dataset``, save at ``args.out``, print a JSON summary.

    The previous version (``--previous``, else the artifact already at ``--out``) is compared
    in the report. Flags left unset keep :class:`~models.train.TrainSpec`'s defaults.
    """
    given = {
        k: getattr(args, k) for k in TrainSpec.model_fields if getattr(args, k, None) is not None
    }
    spec = TrainSpec(**given)
    previous_uri = args.previous or (
        args.out if storage.exists(storage.join(args.out, "manifest.json")) else None
    )
    previous = load_artifact(previous_uri) if previous_uri else None
    artifact = save_artifact(train_detect(args.dataset, spec, previous=previous), args.out)
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
