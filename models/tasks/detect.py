"""detect: the anchor-free head of :mod:`models.heads.detect`, trained, calibrated, evaluated.

Training modes (``spec.mode``): ``probe`` trains the head on a frozen backbone (one no-grad
pass per batch, since augmentation changes the images every epoch); ``finetune`` also trains
the image tower (all blocks, or the last ``spec.unfreeze_blocks``) and the artifact carries
it. Augmentation: :mod:`models.detection.augment`. A seed fixes the split, the
initialisation, the batch order and the augmentation. Then per-label score thresholds (best
F1 at IoU 0.5, or ``spec.target_precision``) and the report come from the held-out split,
through the serving path.

Evaluation runs the serving path (``Fleet.predict``) in original pixels. mAP needs every
candidate box, not just those above the served threshold, so the fleet runs the artifact
with its thresholds lowered to :data:`EVAL_FLOOR` (the same head, NMS and box mapping as in
serving); precision/recall/F1 per label are then read at the stored thresholds.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from models.artifacts import Artifact
from models.backbones import Backbone, load_backbone, resolve_ref
from models.data.coco import (
    DetectDataset,
    detect_data_hash,
    input_boxes,
    read_detect_images,
)
from models.data.load import load_dataset
from models.data.samples import Dataset, stratified_split
from models.detection.augment import augment_sample, detect_augmentation
from models.detection.metrics import ImageBoxes, best_threshold, detection_metrics, label_matches
from models.detection.targets import detection_loss
from models.fleet import Fleet
from models.function import build_head
from models.heads.detect import (
    DEFAULT_MAX_DETECTIONS,
    DEFAULT_NMS_IOU,
    DetectHead,
    label_thresholds,
)
from models.manifest import FunctionType, Manifest, Mode
from models.tasks import Report, Task
from models.training.blocks import trainable_blocks
from models.training.evaluation import Evaluation
from models.training.plots import label_pr_pngs
from models.training.report import HEADLINE, build_report
from models.training.spec import TrainSpec

HEAD_DEFAULTS = {
    "hidden": 128,
    "depth": 2,
    "nms_iou": DEFAULT_NMS_IOU,
    "max_detections": DEFAULT_MAX_DETECTIONS,
}
EVAL_FLOOR = 0.01  # evaluation keeps every box scoring at least this (mAP needs them all)


def _batch(
    images: np.ndarray,
    boxes: Sequence[np.ndarray],
    labels: Sequence[np.ndarray],
    idx: np.ndarray,
    transform: Any,
) -> tuple[np.ndarray, list[torch.Tensor], list[torch.Tensor]]:
    """Images (augmented when ``transform``), boxes normalised to the input, label tensors."""
    size = images.shape[1]
    out_img, out_box, out_lab = [], [], []
    for i in idx:
        img, box, lab = images[i], boxes[i], labels[i]
        if transform is not None:
            img, box, lab = augment_sample(transform, img, box, lab)
        out_img.append(img)
        out_box.append(torch.as_tensor(box, dtype=torch.float32).reshape(-1, 4) / size)
        out_lab.append(torch.as_tensor(lab, dtype=torch.int64))
    return np.stack(out_img), out_box, out_lab


def fit_detect(
    head: DetectHead,
    backbone: Backbone,
    images: np.ndarray,
    boxes: Sequence[np.ndarray],
    labels: Sequence[np.ndarray],
    spec: TrainSpec,
) -> None:
    """Train ``head`` (and in finetune mode the image tower) on input-pixel boxes."""
    finetune = spec.mode == Mode.FINETUNE
    groups: list[dict[str, Any]] = [{"params": list(head.parameters()), "lr": spec.lr or 1e-3}]
    if finetune:
        groups.append(
            {"params": trainable_blocks(backbone, spec.unfreeze_blocks), "lr": spec.backbone_lr}
        )
    opt = torch.optim.AdamW(groups, weight_decay=spec.weight_decay)
    epochs = spec.epochs or 30
    steps = epochs * -(-len(images) // spec.batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=[g["lr"] for g in groups], total_steps=steps, pct_start=0.1
    )
    gen = torch.Generator().manual_seed(spec.seed)
    transform = detect_augmentation() if spec.augment else None
    backbone.visual.train(finetune)
    head.train()
    for _ in tqdm(range(epochs), desc=f"detect {spec.mode.value}", disable=not spec.progress):
        for idx in torch.randperm(len(images), generator=gen).split(spec.batch_size):
            batch, b, lab = _batch(images, boxes, labels, idx.numpy(), transform)
            pixels = backbone.to_pixels(batch)
            with torch.set_grad_enabled(finetune):
                features = backbone.forward_pixels(pixels)
            raw = head(features)
            points = head.points(features.grid, pixels.device)  # type: ignore[arg-type]
            loss = detection_loss(
                raw,
                points,
                head.stride,
                [x.to(pixels.device) for x in b],
                [x.to(pixels.device) for x in lab],
            )
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
    backbone.visual.eval()
    head.eval()
    backbone.model.requires_grad_(False)


def _thresholds(
    truth: Sequence[ImageBoxes],
    dets: Sequence[ImageBoxes],
    labels: list[str],
    target_precision: float | None,
) -> dict[str, float]:
    return {
        label: best_threshold(*m, target_precision=target_precision)
        for label, m in zip(labels, label_matches(truth, dets, len(labels)), strict=True)
    }


def train(
    dataset: Dataset | str,
    spec: TrainSpec,
    backbone: Backbone | None = None,
    previous: Artifact | None = None,
) -> Artifact:
    """Train, calibrate and evaluate a detect function; return the (unsaved) artifact.

    Same contract as :func:`models.train.train` (``backbone`` is reused and, in finetune
    mode, changed; ``previous`` is compared on the same held-out split). ``dataset``: a COCO
    file or its :class:`~models.data.coco.DetectDataset`.
    """
    if spec.zero_shot_init:
        raise ValueError("detect functions cannot start zero-shot (no boxes from label names)")
    torch.manual_seed(spec.seed)
    if isinstance(dataset, str):
        dataset = load_dataset(dataset, FunctionType.DETECT)
    assert isinstance(dataset, DetectDataset)
    ref = resolve_ref(spec.backbone, spec.weights)
    backbone = backbone or load_backbone(ref, **spec.backbone_options())
    size = backbone.input_size
    images, hashes, sizes = read_detect_images(dataset, size)
    index = {label: i for i, label in enumerate(dataset.labels)}
    boxes = [input_boxes(s, o, size) for s, o in zip(dataset.samples, sizes, strict=True)]  # type: ignore[arg-type]
    labels = [np.array([index[x] for x in s.labels], dtype=np.int64) for s in dataset.samples]
    tr, va = stratified_split(dataset.targets(), spec.val_fraction, spec.seed)
    mode = Mode.FINETUNE if spec.mode == Mode.FINETUNE else Mode.PROBE
    manifest = Manifest(
        name=spec.name,
        type=FunctionType.DETECT,
        labels=dataset.labels,
        backbone=ref,
        mode=mode,
        head=dict(HEAD_DEFAULTS),
        training_data_hash=detect_data_hash(dataset, hashes),
    )
    head = build_head(manifest, backbone)
    assert isinstance(head, DetectHead)
    fit_detect(head, backbone, images[tr], [boxes[i] for i in tr], [labels[i] for i in tr], spec)
    truth = [truth_boxes(dataset)[i] for i in va]
    extra = {"mode": mode.value, "train_samples": len(tr), "augment": spec.augment}
    return _finish(
        manifest, head, backbone, images[va], [sizes[i] for i in va], truth, spec, previous, extra
    )


def _finish(
    manifest: Manifest,
    head: torch.nn.Module,
    backbone: Backbone,
    images: np.ndarray,
    sizes: list[tuple[int, int]],
    truth: list[ImageBoxes],
    spec: TrainSpec,
    previous: Artifact | None,
    extra: dict[str, Any],
) -> Artifact:
    """Thresholds and evaluation on the held-out split through the serving path; the report."""
    own = backbone.model.state_dict() if manifest.mode == Mode.FINETUNE else None
    head_state = {k: v.detach().cpu().clone() for k, v in head.state_dict().items()}
    shared = {backbone.key: backbone} if own is None else {}
    dets = predict_boxes(Artifact(manifest, head_state, own), images, sizes, shared)
    thresholds = _thresholds(truth, dets, manifest.labels, spec.target_precision)
    manifest = manifest.model_copy(update={"thresholds": thresholds})
    current = detections_evaluation(manifest, truth, dets)
    headline = {k: current.metrics[k] for k in HEADLINE[FunctionType.DETECT]}
    manifest = manifest.model_copy(update={"metrics": headline})
    artifact = Artifact(manifest, head_state, own).with_version()
    before = None
    if previous is not None:
        before = detections_evaluation(
            previous.manifest, truth, predict_boxes(previous, images, sizes)
        )
    _, artifact.files = build_report(artifact, current, previous, before, extra=extra)
    return artifact


def truth_boxes(dataset: DetectDataset) -> list[ImageBoxes]:
    """Ground truth of every image in original pixels, labels as indices."""
    index = {label: i for i, label in enumerate(dataset.labels)}
    return [
        ImageBoxes(
            np.asarray(s.boxes, dtype=np.float64).reshape(-1, 4),  # type: ignore[attr-defined]
            np.array([index[label] for label in s.labels], dtype=np.int64),
        )
        for s in dataset.samples
    ]


def predict_boxes(
    artifact: Artifact,
    images: np.ndarray,
    orig_sizes: Sequence[tuple[int, int]],
    backbones: dict[str, Backbone] | None = None,
    floor: float = EVAL_FLOOR,
    batch_size: int = 64,
) -> list[ImageBoxes]:
    """Served detections (thresholds lowered to ``floor``) per image, in original pixels."""
    manifest = artifact.manifest.model_copy(update={"thresholds": {"*": floor}})
    low = Artifact(manifest, artifact.head_state, artifact.backbone_state)
    fleet = Fleet.from_artifacts([("f", low)], backbones=backbones)
    index = {label: i for i, label in enumerate(manifest.labels)}
    out = []
    for start in range(0, len(images), batch_size):
        chunk = list(images[start : start + batch_size])
        for result in fleet.predict(chunk, orig_sizes[start : start + len(chunk)]):
            objs = result["f"]["objects"]
            out.append(
                ImageBoxes(
                    np.array([o["box"] for o in objs]).reshape(-1, 4),
                    np.array([index[o["label"]] for o in objs], dtype=np.int64),
                    np.array([o["score"] for o in objs]),
                )
            )
    return out


def detections_evaluation(
    manifest: Manifest, truth: Sequence[ImageBoxes], dets: Sequence[ImageBoxes]
) -> Evaluation:
    """mAP and per-label metrics of these detections (at ``manifest``'s thresholds), one PR
    plot per label. ``scores`` and ``targets`` of the evaluation are empty (classify/tags only).
    """
    max_dets = int(manifest.head.get("max_detections", DEFAULT_MAX_DETECTIONS))
    metrics: dict[str, Any] = detection_metrics(
        truth, dets, manifest.labels, label_thresholds(manifest), max_dets
    )
    curves = metrics.pop("pr_curves")
    return Evaluation(np.zeros(0), np.zeros(0), metrics, plots=label_pr_pngs(curves))


def evaluate_detections(
    artifact: Artifact,
    images: np.ndarray,
    orig_sizes: Sequence[tuple[int, int]],
    truth: Sequence[ImageBoxes],
    backbones: dict[str, Backbone] | None = None,
) -> Evaluation:
    """Run ``artifact`` on preprocessed images and evaluate against ``truth`` (original px)."""
    dets = predict_boxes(artifact, images, orig_sizes, backbones)
    return detections_evaluation(artifact.manifest, truth, dets)


def evaluate(
    artifact: Artifact,
    dataset: Dataset | str,
    previous: Artifact | None = None,
    backbones: dict[str, Backbone] | None = None,
) -> Report:
    """Evaluate a detect function on a whole COCO dataset: (report dict, report files).

    ``backbones``: backbones already loaded (on the caller's device), by key."""
    m = artifact.manifest
    if isinstance(dataset, str):
        dataset = load_dataset(dataset, m.type, labels=m.labels, min_per_label=1)
    assert isinstance(dataset, DetectDataset)
    shared: dict[str, Backbone] = backbones if backbones is not None else {}
    size = Fleet.from_artifacts([artifact], backbones=shared).input_size
    images, _, sizes = read_detect_images(dataset, size)
    truth = truth_boxes(dataset)
    current = evaluate_detections(artifact, images, sizes, truth, shared)
    before = (
        evaluate_detections(previous, images, sizes, truth, shared)
        if previous is not None
        else None
    )
    return build_report(artifact, current, previous, before, split=f"all of {dataset.source}")


TASK = Task(train=train, evaluate=evaluate)
