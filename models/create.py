"""Functions from label names alone: what ``tagfleet create`` runs (issue 17 item 5).

:func:`create` writes nothing: it returns a zero-shot artifact (text tower x a prompt
ensemble) that can be saved, evaluated, served, or used as the start of training
(``TrainSpec.zero_shot_init``). Given labelled samples (``calibrate``), it fits what a
zero-shot head cannot know: tags thresholds per label (best F1, or ``target_precision``) and
the classify temperature, and attaches the evaluation report on those samples.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from models import storage
from models.artifacts import Artifact
from models.backbones import load_backbone, resolve_ref
from models.data.labelled import read_images
from models.data.load import load_dataset
from models.data.samples import Dataset
from models.manifest import FunctionType
from models.metrics import choose_threshold, fit_temperature
from models.tasks.linear import evaluate_arrays, predict_scores
from models.training.report import HEADLINE, build_report
from models.zeroshot import DEFAULT_TEMPLATES, zero_shot


def read_prompts(source: str) -> list[str]:
    """Prompt templates, one per line with ``{}`` where the label goes (``#`` comments)."""
    lines = storage.read_bytes(source).decode("utf-8").splitlines()
    templates = [line.strip() for line in lines if line.strip() and not line.startswith("#")]
    bad = [t for t in templates if "{}" not in t]
    if bad or not templates:
        raise ValueError(f"{source}: every prompt needs a {{}} for the label (got {bad[:1]})")
    return templates


def create(
    name: str,
    kind: FunctionType | str,
    labels: Sequence[str],
    backbone: str = "ViT-B-32",
    weights: str | None = None,
    prompts: str | None = None,
    calibrate: Dataset | str | None = None,
    target_precision: float | None = None,
    device: str | None = None,
    cache_dir: Path | None = None,
    offline: bool = False,
) -> Artifact:
    """A zero-shot classify or tags function for ``labels``; calibrated on ``calibrate``.

    ``prompts``: a file of templates (:func:`read_prompts`), else the default ensemble.
    ``calibrate``: a dataset (path or loaded) in the function's labels. The backbone loads
    once, on ``device`` (unset: CUDA when available), weights fetched into ``cache_dir``, a
    hub download refused when ``offline`` (:class:`models.backbones.OfflineError`).
    """
    kind = FunctionType(kind)
    templates = read_prompts(prompts) if prompts else list(DEFAULT_TEMPLATES)
    ref = resolve_ref(backbone, weights)
    encoder = load_backbone(ref, device=device, cache_dir=cache_dir, offline=offline)
    artifact = zero_shot(name, kind, labels, ref, templates=templates, encoder=encoder)
    if calibrate is None:
        return artifact
    if isinstance(calibrate, str):
        calibrate = load_dataset(calibrate, kind, labels=list(labels), min_per_label=1)
    shared = {encoder.key: encoder}
    images, _ = read_images(calibrate, encoder.input_size)
    targets = calibrate.targets()
    scores = predict_scores(artifact, images, backbones=shared)
    if kind == FunctionType.TAGS:
        thresholds = {
            label: choose_threshold(targets[:, i], scores[:, i], target_precision)
            for i, label in enumerate(artifact.manifest.labels)
        }
        update: dict[str, object] = {"thresholds": thresholds}
    else:  # log-probabilities are the logits up to a per-row constant, which softmax ignores
        update = {"temperature": fit_temperature(np.log(np.clip(scores, 1e-12, 1)), targets)}
    artifact.manifest = artifact.manifest.model_copy(update=update)
    current = evaluate_arrays(artifact.with_version(), images, targets, backbones=shared)
    headline = {k: current.metrics[k] for k in HEADLINE[kind]}
    artifact.manifest = artifact.manifest.model_copy(update={"metrics": headline})
    artifact = artifact.with_version()
    split = f"all of {calibrate.source} (also used to calibrate)"
    _, artifact.files = build_report(artifact, current, split=split)
    return artifact
