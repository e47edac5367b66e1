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

import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from models.artifacts import Artifact
from models.backbones import Backbone, Features, load_backbone, resolve_ref
from models.data.labelled import data_hash, read_images
from models.data.load import load_dataset
from models.data.samples import Dataset, stratified_split
from models.embcache import EmbeddingCache
from models.fleet import Fleet
from models.function import build_head
from models.manifest import FunctionType, Manifest, Mode
from models.metrics import choose_threshold, classify_metrics, fit_temperature, tags_metrics
from models.tasks import Report, Task
from models.training.blocks import trainable_blocks
from models.training.evaluation import Evaluation
from models.training.report import HEADLINE, build_report
from models.training.spec import TrainSpec
from models.weights import cache_dir
from models.zeroshot import zero_shot_head_state

log = logging.getLogger(__name__)


def _loss(kind: FunctionType, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    if kind == FunctionType.CLASSIFY:
        return F.cross_entropy(logits, y)
    return F.binary_cross_entropy_with_logits(logits, y)


def _augment(pixels: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Random horizontal flips and small shifts (on normalised pixels, on the device)."""
    flip = torch.rand(len(pixels), generator=gen) < 0.5
    pixels = torch.where(flip.to(pixels.device)[:, None, None, None], pixels.flip(-1), pixels)
    dx, dy = (int(v) for v in torch.randint(-4, 5, (2,), generator=gen))
    return torch.roll(pixels, shifts=(dy, dx), dims=(-2, -1))


def _embed(backbone: Backbone, images: np.ndarray, batch: int = 64) -> np.ndarray:
    out = [
        backbone.encode(images[i : i + batch]).pooled.cpu().numpy()
        for i in range(0, len(images), batch)
    ]
    return np.concatenate(out)


def _fit_probe(
    head: torch.nn.Module,
    kind: FunctionType,
    emb: np.ndarray,
    y: np.ndarray,
    spec: TrainSpec,
    device: torch.device,
) -> None:
    x = Features(torch.as_tensor(emb, device=device), None, None)
    target = torch.as_tensor(y, device=device)
    opt = torch.optim.AdamW(head.parameters(), lr=spec.lr or 1e-2, weight_decay=spec.weight_decay)
    head.train()
    for _ in tqdm(range(spec.epochs or 300), desc="probe", disable=not spec.progress):
        opt.zero_grad()
        _loss(kind, head(x), target).backward()
        opt.step()
    head.eval()


def _fit_finetune(
    head: torch.nn.Module,
    backbone: Backbone,
    kind: FunctionType,
    images: np.ndarray,
    y: np.ndarray,
    spec: TrainSpec,
) -> None:
    params = trainable_blocks(backbone, spec.unfreeze_blocks)
    opt = torch.optim.AdamW(
        [
            {"params": head.parameters(), "lr": spec.lr or 1e-3},
            {"params": params, "lr": spec.backbone_lr},
        ],
        weight_decay=spec.weight_decay,
    )
    epochs = spec.epochs or 30
    steps = epochs * -(-len(images) // spec.batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=[spec.lr or 1e-3, spec.backbone_lr], total_steps=steps, pct_start=0.1
    )
    gen = torch.Generator().manual_seed(spec.seed)
    target = torch.as_tensor(y)
    backbone.visual.train()
    head.train()
    for _ in tqdm(range(epochs), desc="finetune", disable=not spec.progress):
        for idx in torch.randperm(len(images), generator=gen).split(spec.batch_size):
            pixels = backbone.to_pixels(images[idx.numpy()])
            if spec.augment:
                pixels = _augment(pixels, gen)
            opt.zero_grad()
            logits = head(backbone.forward_pixels(pixels))
            _loss(kind, logits.float(), target[idx].to(backbone.device)).backward()
            opt.step()
            sched.step()
    backbone.visual.eval()
    head.eval()
    backbone.model.requires_grad_(False)


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


def _calibrate(
    kind: FunctionType,
    logits: np.ndarray,
    y: np.ndarray,
    labels: list[str],
    target_precision: float | None,
) -> dict[str, Any]:
    if kind == FunctionType.CLASSIFY:
        return {"temperature": fit_temperature(logits, y)}
    scores = 1 / (1 + np.exp(-logits))
    return {
        "thresholds": {
            label: choose_threshold(y[:, i], scores[:, i], target_precision)
            for i, label in enumerate(labels)
        }
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
    compared on the same held-out split in the report.
    """
    torch.manual_seed(spec.seed)
    if isinstance(dataset, str):
        dataset = load_dataset(dataset, spec.type)
    ref = resolve_ref(spec.backbone, spec.weights)
    backbone = backbone or load_backbone(ref, device=spec.device)
    images, hashes = read_images(dataset, backbone.input_size)
    y = dataset.targets()
    tr, va = stratified_split(y, spec.val_fraction, spec.seed)
    manifest = Manifest(
        name=spec.name,
        type=spec.type,
        labels=dataset.labels,
        backbone=ref,
        mode=Mode.FINETUNE if spec.mode == Mode.FINETUNE else Mode.PROBE,
        training_data_hash=data_hash(dataset, hashes),
    )
    head = build_head(manifest, backbone)
    if spec.zero_shot_init:
        head.load_state_dict(zero_shot_head_state(backbone, spec.type, dataset.labels))
    extra: dict[str, Any] = {"mode": manifest.mode.value, "train_samples": len(tr)}
    emb = None
    if spec.mode == Mode.FINETUNE:
        _fit_finetune(head, backbone, spec.type, images[tr], y[tr], spec)
    else:
        cache = EmbeddingCache(Path(spec.cache_dir or cache_dir() / "embeddings"), backbone.key)
        emb = cache.embeddings(hashes, lambda idx: _embed(backbone, images[idx]))
        extra["embedding_cache"] = {"hits": cache.hits, "misses": cache.misses}
        log.info("embedding cache: %d hits, %d misses", cache.hits, cache.misses)
        _fit_probe(head, spec.type, emb[tr], y[tr], spec, backbone.device)
    val_logits = _logits(head, backbone, images[va], None if emb is None else emb[va])
    manifest = manifest.model_copy(
        update=_calibrate(spec.type, val_logits, y[va], dataset.labels, spec.target_precision)
    )
    return _finish(manifest, head, backbone, images[va], y[va], previous, extra)


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
    own = backbone.model.state_dict() if manifest.mode == Mode.FINETUNE else None
    head_state = {k: v.detach().cpu().clone() for k, v in head.state_dict().items()}
    artifact = Artifact(manifest, head_state, own).with_version()
    shared = {backbone.key: backbone} if own is None else None
    current = evaluate_arrays(artifact, images, y, backbones=shared)
    headline = {k: current.metrics[k] for k in HEADLINE[manifest.type]}
    artifact.manifest = artifact.manifest.model_copy(update={"metrics": headline})
    artifact = artifact.with_version()
    before = evaluate_arrays(previous, images, y) if previous is not None else None
    _, artifact.files = build_report(artifact, current, previous, before, extra=extra)
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
    return Evaluation(scores, targets, score_metrics(artifact, targets, scores))


def evaluate(
    artifact: Artifact, dataset: Dataset | str, previous: Artifact | None = None
) -> Report:
    """Evaluate a classify or tags function on a whole dataset: (report dict, report files).

    ``previous``: another version, evaluated on the same images and compared in the report.
    Labels in the dataset that the function does not know are a DatasetError.
    """
    m = artifact.manifest
    if isinstance(dataset, str):
        dataset = load_dataset(dataset, m.type, labels=m.labels, min_per_label=1)
    size = Fleet.from_artifacts([artifact]).input_size
    images, _ = read_images(dataset, size)
    targets = dataset.targets()
    current = evaluate_arrays(artifact, images, targets)
    before = evaluate_arrays(previous, images, targets) if previous is not None else None
    return build_report(artifact, current, previous, before, split=f"all of {dataset.source}")


TASK = Task(train=train, evaluate=evaluate)
