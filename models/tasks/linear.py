"""classify and tags: a linear head on the pooled embedding, trained, calibrated, evaluated.

Training modes:
- ``probe``: the backbone stays frozen; pooled embeddings are computed once per image and
  cached on disk (keyed by backbone id + image content hash), then a linear head is fitted on
  them full-batch (seconds).
- ``finetune``: the image tower (all blocks, or the last ``unfreeze_blocks``) trains with the
  head; the artifact carries its own backbone weights.

Then: calibration on the held-out split (classify: temperature; tags: per-label thresholds by
best F1 or a target precision), evaluation through the serving path (``Fleet.predict``, so the
numbers describe exactly what the service returns), report files.
"""

from __future__ import annotations

import io
import logging
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from models import storage
from models.artifacts import Artifact
from models.backbones import Backbone, Features, load_backbone, resolve_ref
from models.data.labelled import data_hash, read_images
from models.data.load import load_dataset
from models.data.samples import Dataset, stratified_split
from models.embcache import EmbeddingCache
from models.fleet import Fleet
from models.function import Function, build_head
from models.manifest import FunctionType, Manifest, Mode
from models.metrics import choose_threshold, classify_metrics, fit_temperature, tags_metrics
from models.tasks import Report, Task
from models.tiling import Tiling, cut_tiles, predict_tiled
from models.training.evaluation import Evaluation
from models.training.folds import fewest_per_label, spread, stratified_folds
from models.training.loop import Fit, fit_finetune, fit_probe
from models.training.presets import Settings, resolve
from models.training.report import HEADLINE, build_report
from models.training.spec import TrainSpec
from models.weights import cache_dir
from models.zeroshot import zero_shot_head_state

log = logging.getLogger(__name__)


def _embed(backbone: Backbone, images: np.ndarray, batch: int = 64) -> np.ndarray:
    out = [
        backbone.encode(images[i : i + batch]).pooled.cpu().numpy()
        for i in range(0, len(images), batch)
    ]
    return np.concatenate(out)


@torch.inference_mode()
def _logits(
    head: torch.nn.Module, backbone: Backbone, images: np.ndarray, emb: np.ndarray | None
) -> np.ndarray:
    if emb is not None:
        x = Features(torch.as_tensor(emb, device=backbone.device), None, None)
        return head(x).float().cpu().numpy()
    return np.concatenate(
        [
            head(backbone.encode(images[i : i + 64])).float().cpu().numpy()
            for i in range(0, len(images), 64)
        ]
    )


def calibrate(
    kind: FunctionType,
    logits: np.ndarray,
    y: np.ndarray,
    labels: list[str],
    target_precision: float | None,
) -> dict[str, Any]:
    """The head's calibration fitted on validation logits: classify's softmax temperature,
    or each tags label's threshold (best F1, or ``target_precision``)."""
    if kind == FunctionType.CLASSIFY:
        return {"temperature": fit_temperature(logits, y)}
    scores = 1 / (1 + np.exp(-logits))
    return {
        "thresholds": {
            label: choose_threshold(y[:, i], scores[:, i], target_precision)
            for i, label in enumerate(labels)
        }
    }


def _candidates(
    manifest: Manifest,
    backbone: Backbone,
    spec: TrainSpec,
    settings: Settings,
    train_set: tuple[np.ndarray, np.ndarray],
    val_set: tuple[np.ndarray, np.ndarray],
) -> tuple[torch.nn.Module, Fit, list[Fit]]:
    """Fine-tune one head per pooling of ``settings`` from the same start; keep the best.

    The winner has the best validation macro-F1; on a tie the earlier pooling (``pooled``
    first) wins. On return the backbone holds the winner's weights.
    """
    start = {k: v.detach().clone() for k, v in backbone.visual.state_dict().items()}
    runs: list[tuple[torch.nn.Module, Fit, dict[str, torch.Tensor]]] = []
    for pooling in settings.poolings:
        backbone.visual.load_state_dict(start)
        torch.manual_seed(spec.seed)
        head = build_head(manifest.model_copy(update={"head": {"pooling": pooling}}), backbone)
        if spec.zero_shot_init:
            head.load_state_dict(zero_shot_head_state(backbone, spec.type, manifest.labels))
        fit = fit_finetune(head, backbone, spec.type, train_set, val_set, settings, spec, pooling)
        _say(spec, settings, fit)
        state = {k: v.detach().clone() for k, v in backbone.visual.state_dict().items()}
        runs.append((head, fit, state))
    head, fit, state = max(runs, key=lambda run: (run[1].score, -runs.index(run)))
    backbone.visual.load_state_dict(state)
    return head, fit, [run[1] for run in runs]


def _say(spec: TrainSpec, settings: Settings, fit: Fit) -> None:
    """Print one line per run: what it kept and how long it took (stderr, with ``progress``)."""
    line = (
        f"recipe {settings.recipe}: {fit.pooling}, {len(fit.history)} evaluations, kept "
        f"{fit.kept} (validation macro-F1 {fit.score:.3f}), {fit.seconds:.1f} s"
    )
    log.info(line)
    if spec.progress:
        print(line, file=sys.stderr)


def _fit(
    manifest: Manifest,
    backbone: Backbone,
    spec: TrainSpec,
    settings: Settings,
    data: tuple[np.ndarray, np.ndarray | None, np.ndarray],
    tr: np.ndarray,
    va: np.ndarray,
) -> tuple[torch.nn.Module, Fit, list[Fit]]:
    """Train on ``tr``, select on ``va``: (head, the kept run, every run).

    ``data``: (images, pooled embeddings or ``None``, targets); probe mode fits the embeddings.
    """
    images, emb, y = data
    if emb is None:
        return _candidates(
            manifest, backbone, spec, settings, (images[tr], y[tr]), (images[va], y[va])
        )
    head = build_head(manifest.model_copy(update={"head": {"pooling": "pooled"}}), backbone)
    if spec.zero_shot_init:
        head.load_state_dict(zero_shot_head_state(backbone, spec.type, manifest.labels))
    fit = fit_probe(
        head, spec.type, (emb[tr], y[tr]), (emb[va], y[va]), settings, spec, backbone.device
    )
    _say(spec, settings, fit)
    return head, fit, [fit]


def _head(spec: TrainSpec, pooling: str) -> dict[str, Any]:
    """The manifest's ``head`` dict: the pooling and, when set, the tiling of serving."""
    tiling = {"tiling": {"tile": spec.tile, "overlap": 0.25}} if spec.tile else {}
    return {"pooling": pooling, **tiling}


def _record(settings: Settings, fit: Fit, fits: list[Fit]) -> dict[str, Any]:
    return {
        "recipe": settings.record(),
        "pooling": fit.pooling,
        "kept": fit.kept,
        "val_macro_f1": round(fit.score, 6),
        "candidates": {f.pooling: round(f.score, 6) for f in fits},
    }


def train(
    dataset: Dataset | str,
    spec: TrainSpec,
    backbone: Backbone | None = None,
    previous: Artifact | None = None,
) -> Artifact:
    """Train, calibrate and evaluate a classify or tags function; return the (unsaved) artifact.

    ``backbone``: an already loaded backbone matching ``spec`` (reused, e.g. by tests that
    count its passes; in finetune mode its weights change). ``previous``: an earlier version,
    compared on the same held-out split in the report. The recipe (:func:`resolve`), the
    pooling chosen and the checkpoint kept are recorded in the manifest's ``training`` and in
    the report. When the rarest label has fewer than ``spec.kfold_below`` samples, k-fold
    cross-validation gives the report's figures and the function trains on every sample
    (:func:`_train_kfold`).
    """
    started = time.perf_counter()
    torch.manual_seed(spec.seed)
    if isinstance(dataset, str):
        dataset = load_dataset(dataset, spec.type)
    settings = resolve(spec)
    ref = resolve_ref(spec.backbone, spec.weights)
    backbone = backbone or load_backbone(ref, **spec.backbone_options())
    images, hashes = read_images(dataset, backbone.input_size)
    y = dataset.targets()
    manifest = Manifest(
        name=spec.name,
        type=spec.type,
        labels=dataset.labels,
        backbone=ref,
        mode=Mode.FINETUNE if spec.mode == Mode.FINETUNE else Mode.PROBE,
        training_data_hash=data_hash(dataset, hashes),
    )
    extra: dict[str, Any] = {"mode": manifest.mode.value}
    emb = None
    if spec.mode != Mode.FINETUNE:
        root = Path(spec.cache_dir) if spec.cache_dir else cache_dir()
        cache = EmbeddingCache(root / "embeddings", backbone.key)
        emb = cache.embeddings(hashes, lambda idx: _embed(backbone, images[idx]))
        extra["embedding_cache"] = {"hits": cache.hits, "misses": cache.misses}
        log.info("embedding cache: %d hits, %d misses", cache.hits, cache.misses)
    data = (images, emb, y)
    if spec.kfold_below and fewest_per_label(y) < spec.kfold_below:
        return _train_kfold(manifest, backbone, spec, settings, data, previous, extra, started)
    tr, va = stratified_split(y, spec.val_fraction, spec.seed)
    extra["train_samples"] = len(tr)
    head, fit, fits = _fit(manifest, backbone, spec, settings, data, tr, va)
    training = _record(settings, fit, fits)
    val_logits = _logits(head, backbone, images[va], None if emb is None else emb[va])
    update = calibrate(spec.type, val_logits, y[va], dataset.labels, spec.target_precision)
    manifest = manifest.model_copy(
        update={**update, "head": _head(spec, fit.pooling), "training": training}
    )
    extra["training"] = {
        **training,
        "runs": [f.record() for f in fits],
        "seconds": round(time.perf_counter() - started, 2),
    }
    return _finish(manifest, head, backbone, images[va], y[va], previous, extra)


def _artifact(manifest: Manifest, head: torch.nn.Module, backbone: Backbone) -> Artifact:
    own = backbone.model.state_dict() if manifest.mode == Mode.FINETUNE else None
    own = None if own is None else {k: v.detach().cpu().clone() for k, v in own.items()}
    head_state = {k: v.detach().cpu().clone() for k, v in head.state_dict().items()}
    return Artifact(manifest, head_state, own).with_version()


def _train_kfold(
    manifest: Manifest,
    backbone: Backbone,
    spec: TrainSpec,
    settings: Settings,
    data: tuple[np.ndarray, np.ndarray | None, np.ndarray],
    previous: Artifact | None,
    extra: dict[str, Any],
    started: float,
) -> Artifact:
    """Small data: k folds, each trained on the others (selection on an inner split of them)
    and scored through the serving path on its own fold; the report gives the out-of-fold
    figures (headline: the mean over folds, with their spread). The function then trains on
    every sample with the folds' most chosen pooling for the folds' median kept epoch;
    classify takes the folds' median temperature, tags thresholds chosen on the out-of-fold
    scores."""
    images, emb, y = data
    k = max(2, min(spec.folds, fewest_per_label(y)))
    start = {key: v.detach().clone() for key, v in backbone.model.state_dict().items()}
    shared = {backbone.key: backbone} if manifest.mode != Mode.FINETUNE else None
    oof = np.zeros((len(y), len(manifest.labels)))
    per_fold: list[dict[str, Any]] = []
    runs: list[tuple[Fit, float]] = []
    for held in stratified_folds(y, k, spec.seed):
        backbone.model.load_state_dict(start)
        rest = np.setdiff1d(np.arange(len(y)), held)
        inner_tr, inner_va = stratified_split(y[rest], spec.val_fraction, spec.seed)
        head, fit, _ = _fit(
            manifest, backbone, spec, settings, data, rest[inner_tr], rest[inner_va]
        )
        va = rest[inner_va]
        logits = _logits(head, backbone, images[va], None if emb is None else emb[va])
        update = calibrate(spec.type, logits, y[va], manifest.labels, spec.target_precision)
        fold = _artifact(
            manifest.model_copy(update={**update, "head": _head(spec, fit.pooling)}), head, backbone
        )
        scores = predict_scores(fold, images[held], shared)
        oof[held] = scores
        per_fold.append(score_metrics(fold, y[held], scores))
        runs.append((fit, float(update.get("temperature", 1.0))))
    pooling = max(settings.poolings, key=[f.pooling for f, _ in runs].count)
    epochs = max(1, int(np.median([f.kept for f, _ in runs])))
    final = replace(settings, poolings=(pooling,), epochs=epochs, select="last", patience=0)
    backbone.model.load_state_dict(start)
    everything = np.arange(len(y))
    head, fit, _ = _fit(manifest, backbone, spec, final, data, everything, everything)
    if spec.type == FunctionType.CLASSIFY:
        update = {"temperature": float(np.median([t for _, t in runs]))}
    else:
        logits = np.log(np.clip(oof, 1e-7, 1)) - np.log(np.clip(1 - oof, 1e-7, 1))
        update = calibrate(spec.type, logits, y, manifest.labels, spec.target_precision)
    training = {
        **_record(final, fit, [fit]),
        "kfold": {
            "folds": k,
            "epochs": [f.kept for f, _ in runs],
            "poolings": [f.pooling for f, _ in runs],
        },
    }
    manifest = manifest.model_copy(
        update={**update, "head": _head(spec, pooling), "training": training}
    )
    artifact = _artifact(manifest, head, backbone)
    keys = HEADLINE[manifest.type]
    metrics = score_metrics(artifact, y, oof)
    metrics["kfold"] = {"folds": k, "metrics": spread(per_fold, keys)}
    metrics.update({key: metrics["kfold"]["metrics"][key]["mean"] for key in keys})
    artifact.manifest = artifact.manifest.model_copy(
        update={"metrics": {key: metrics[key] for key in keys}}
    )
    artifact = artifact.with_version()
    extra["train_samples"] = len(y)
    extra["training"] = {
        **training,
        "runs": [f.record() for f, _ in runs] + [fit.record()],
        "seconds": round(time.perf_counter() - started, 2),
    }
    current = Evaluation(oof, y, metrics, images=images)
    before = evaluate_arrays(previous, images, y) if previous is not None else None
    split = f"{k}-fold cross-validation (out-of-fold predictions)"
    _, artifact.files = build_report(artifact, current, previous, before, split=split, extra=extra)
    return artifact


def _finish(
    manifest: Manifest,
    head: torch.nn.Module,
    backbone: Backbone,
    images: np.ndarray,
    y: np.ndarray,
    previous: Artifact | None,
    extra: dict[str, Any],
) -> Artifact:
    """Evaluate on the held-out split through the serving path and attach the report."""
    artifact = _artifact(manifest, head, backbone)
    shared = {backbone.key: backbone} if artifact.backbone_state is None else None
    current = evaluate_arrays(artifact, images, y, backbones=shared)
    headline = {k: current.metrics[k] for k in HEADLINE[manifest.type]}
    artifact.manifest = artifact.manifest.model_copy(update={"metrics": headline})
    artifact = artifact.with_version()
    before = evaluate_arrays(previous, images, y) if previous is not None else None
    split = "held-out validation split (it also chose the epoch and the pooling)"
    _, artifact.files = build_report(artifact, current, previous, before, split, extra)
    return artifact


def predict_scores(
    artifact: Artifact,
    images: np.ndarray,
    backbones: dict[str, Backbone] | None = None,
    batch_size: int = 64,
) -> np.ndarray:
    """(N, L) served scores (classify: calibrated probabilities; tags: sigmoid)."""
    fleet = Fleet.from_artifacts([("f", artifact)], backbones=backbones)
    labels = artifact.manifest.labels
    rows = []
    for start in range(0, len(images), batch_size):
        chunk = list(images[start : start + batch_size])
        for result in fleet.predict(chunk, [(1, 1)] * len(chunk)):
            rows.append([result["f"]["scores"][label] for label in labels])
    return np.array(rows, dtype=np.float64).reshape(len(images), len(labels))


def score_metrics(artifact: Artifact, targets: np.ndarray, scores: np.ndarray) -> dict[str, Any]:
    """The metrics of ``artifact``'s type for these served scores."""
    m = artifact.manifest
    if m.type == FunctionType.CLASSIFY:
        return classify_metrics(targets, scores, m.labels)
    if m.type == FunctionType.TAGS:
        limits = np.array([m.thresholds.get(label, 0.5) for label in m.labels])
        return tags_metrics(targets, scores, limits, m.labels)
    raise ValueError(f"no evaluation for {m.type.value} here")


def evaluate_arrays(
    artifact: Artifact,
    images: np.ndarray,
    targets: np.ndarray,
    backbones: dict[str, Backbone] | None = None,
) -> Evaluation:
    """Evaluate ``artifact`` on preprocessed images and targets in its label order."""
    scores = predict_scores(artifact, images, backbones)
    return Evaluation(scores, targets, score_metrics(artifact, targets, scores), images=images)


def evaluate(
    artifact: Artifact,
    dataset: Dataset | str,
    previous: Artifact | None = None,
    backbones: dict[str, Backbone] | None = None,
) -> Report:
    """Evaluate a classify or tags function on a whole dataset: (report dict, report files).

    ``previous``: another version, evaluated on the same images and compared in the report.
    ``backbones``: backbones already loaded (on the caller's device), by key.
    Labels in the dataset that the function does not know are a DatasetError.
    """
    m = artifact.manifest
    if isinstance(dataset, str):
        dataset = load_dataset(dataset, m.type, labels=m.labels, min_per_label=1)
    shared = backbones if backbones is not None else {}
    size = Fleet.from_artifacts([artifact], backbones=shared).input_size
    images, _ = read_images(dataset, size)
    targets = dataset.targets()
    tiling = Tiling.of(m)
    if tiling is None:
        current = evaluate_arrays(artifact, images, targets, shared)
    else:  # scored as served: tiles of the original pictures
        scores = tiled_scores(artifact, dataset, tiling, shared)
        metrics = score_metrics(artifact, targets, scores)
        current = Evaluation(scores, targets, metrics, images=images)
    before = evaluate_arrays(previous, images, targets, shared) if previous is not None else None
    return build_report(artifact, current, previous, before, split=f"all of {dataset.source}")


def tiled_scores(
    artifact: Artifact,
    dataset: Dataset,
    tiling: Tiling,
    backbones: dict[str, Backbone] | None = None,
) -> np.ndarray:
    """(N, L) scores of ``artifact`` served in tiles of each original picture of ``dataset``."""
    m = artifact.manifest
    fleet = Fleet.from_artifacts([artifact], backbones=backbones)  # the one backbone, loaded once
    backbone = next(iter(fleet.backbones.values()))
    function = Function(artifact, backbone)
    rows = []
    for sample in dataset.samples:
        with Image.open(io.BytesIO(storage.read_bytes(sample.image))) as image:
            image.load()
            tiles = cut_tiles(image, tiling, backbone.input_size)
            result = predict_tiled(function, tiles, image.size)
        rows.append([result["scores"][label] for label in m.labels])
    return np.array(rows, dtype=np.float64).reshape(len(dataset.samples), len(m.labels))


TASK = Task(train=train, evaluate=evaluate)
