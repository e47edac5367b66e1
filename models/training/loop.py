"""The training loop of classify and tags: schedule, balance, smoothing, checkpoint selection.

One run (:func:`fit_finetune` or :func:`fit_probe`) follows a :class:`Settings`: class-balanced
sampling or loss weights, label smoothing, a linear learning-rate warm-up then a cosine decay,
a validation macro-F1 after every epoch (probe: every ``PROBE_EVAL_EVERY`` steps), early
stopping after ``patience`` evaluations without a better one, and the checkpoint of the best
evaluation kept (``select="best"``) rather than the last. Both return a :class:`Fit`, the
history the report shows.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from models.backbones import Backbone, Features
from models.manifest import FunctionType
from models.metrics import choose_threshold, classify_metrics, tags_metrics
from models.training.augment import augment
from models.training.blocks import trainable_blocks
from models.training.presets import Settings
from models.training.spec import TrainSpec

PROBE_EVAL_EVERY = 10  # probe: full-batch steps between two validation evaluations
WARMUP_START = 0.04  # the warm-up starts at this share of the learning rate


@dataclass
class Fit:
    """What one training run did: per evaluation the validation macro-F1 and the mean loss.

    ``kept``: the evaluation (1-based epoch; probe: step) whose weights the head (and, in
    finetune, the backbone) now hold; ``score`` its validation macro-F1.
    """

    pooling: str
    history: list[float] = field(default_factory=list)
    losses: list[float] = field(default_factory=list)
    steps: list[int] = field(default_factory=list)
    kept: int = 0
    score: float = 0.0
    seconds: float = 0.0

    @property
    def best(self) -> int:
        """The evaluation with the best validation macro-F1 (the first of equals)."""
        return self.steps[int(np.argmax(self.history))] if self.history else 0

    def record(self) -> dict[str, Any]:
        """A JSON-ready summary for the manifest and the report."""
        return {
            "pooling": self.pooling,
            "kept": self.kept,
            "best": self.best,
            "val_macro_f1": self.score,
            "history": [round(v, 4) for v in self.history],
            "loss": [round(v, 4) for v in self.losses],
            "seconds": round(self.seconds, 2),
        }


def val_macro_f1(
    kind: FunctionType, logits: np.ndarray, y: np.ndarray, target_precision: float | None
) -> float:
    """Validation macro-F1 (tags: at per-label thresholds chosen as calibration chooses them)."""
    labels = [str(i) for i in range(logits.shape[1])]
    if kind == FunctionType.CLASSIFY:
        return float(classify_metrics(y, logits, labels)["macro_f1"])
    scores = 1 / (1 + np.exp(-logits))
    limits = np.array(
        [choose_threshold(y[:, i], scores[:, i], target_precision) for i in range(len(labels))]
    )
    return float(tags_metrics(y, scores, limits, labels)["macro_f1"])


def _strata(kind: FunctionType, y: np.ndarray) -> np.ndarray:
    """A class per sample (tags: its rarest label, -1 for none) for balanced sampling."""
    if kind == FunctionType.CLASSIFY:
        return y
    freq = y.sum(axis=0)
    rarest = np.where(y > 0, freq[None, :], np.inf).argmin(axis=1)
    return np.where(y.sum(axis=1) > 0, rarest, -1)


def sample_weights(kind: FunctionType, y: np.ndarray) -> np.ndarray:
    """Per sample ``1 / size of its class``: a class-balanced draw."""
    strata = _strata(kind, y)
    _, inverse, counts = np.unique(strata, return_inverse=True, return_counts=True)
    return 1.0 / counts[inverse]


def loss_fn(
    kind: FunctionType, y: np.ndarray, settings: Settings, device: torch.device
) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """The loss of ``settings``: cross-entropy (classify) or BCE (tags), balanced and smoothed."""
    eps = settings.label_smoothing
    if kind == FunctionType.CLASSIFY:
        weight = None
        if settings.balance == "loss":
            counts = np.bincount(y, minlength=int(y.max()) + 1).astype(np.float64)
            w = len(y) / (len(counts) * np.maximum(counts, 1))
            weight = torch.as_tensor(w, dtype=torch.float32, device=device)
        return lambda logits, t: F.cross_entropy(logits, t, weight=weight, label_smoothing=eps)
    pos_weight = None
    if settings.balance == "loss":
        pos = y.sum(axis=0)
        pw = np.clip((len(y) - pos) / np.maximum(pos, 1), 1.0, 10.0)
        pos_weight = torch.as_tensor(pw, dtype=torch.float32, device=device)
    return lambda logits, t: F.binary_cross_entropy_with_logits(
        logits, t * (1 - eps) + eps / 2, pos_weight=pos_weight
    )


def warmup_cosine(total: int, warmup_fraction: float) -> Callable[[int], float]:
    """Learning-rate factor per step: linear warm-up, then a cosine decay to zero."""
    warm = max(1, int(round(total * warmup_fraction))) if warmup_fraction > 0 else 0

    def factor(step: int) -> float:
        if step < warm:
            return WARMUP_START + (1 - WARMUP_START) * step / warm
        done = (step - warm) / max(1, total - warm)
        return 0.5 * (1 + math.cos(math.pi * min(done, 1.0)))

    return factor


class _Keeper:
    """Tracks the evaluations, keeps the best weights, says when to stop."""

    def __init__(self, fit: Fit, settings: Settings, modules: list[torch.nn.Module]) -> None:
        self.fit, self.settings, self.modules = fit, settings, modules
        self.saved: list[dict[str, torch.Tensor]] | None = None
        self.since_best = 0

    def see(self, step: int, score: float, loss: float) -> bool:
        """Record one evaluation; True when training should stop early."""
        fit = self.fit
        improved = not fit.history or score > max(fit.history)
        fit.history.append(score)
        fit.losses.append(loss)
        fit.steps.append(step)
        if improved:
            self.since_best = 0
            if self.settings.select == "best":
                self.saved = [_clone(m.state_dict()) for m in self.modules]
        else:
            self.since_best += 1
        return self.settings.patience > 0 and self.since_best >= self.settings.patience

    def finish(self, seconds: float) -> Fit:
        """Load the kept weights; the fit with ``kept`` and ``score`` set."""
        fit = self.fit
        if self.settings.select == "best" and self.saved is not None:
            for module, state in zip(self.modules, self.saved, strict=True):
                module.load_state_dict(state)
            fit.kept, fit.score = fit.best, max(fit.history)
        elif fit.history:
            fit.kept, fit.score = fit.steps[-1], fit.history[-1]
        fit.seconds = seconds
        return fit


def _clone(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in state.items()}


@torch.inference_mode()
def _val_logits(head: torch.nn.Module, backbone: Backbone, images: np.ndarray) -> np.ndarray:
    return np.concatenate(
        [
            head(backbone.encode(images[i : i + 64])).float().cpu().numpy()
            for i in range(0, len(images), 64)
        ]
    )


def _epoch_order(
    kind: FunctionType, y: np.ndarray, settings: Settings, gen: torch.Generator
) -> torch.Tensor:
    if settings.balance == "sampler":
        weights = torch.as_tensor(sample_weights(kind, y))
        return torch.multinomial(weights, len(y), replacement=True, generator=gen)
    return torch.randperm(len(y), generator=gen)


def fit_finetune(
    head: torch.nn.Module,
    backbone: Backbone,
    kind: FunctionType,
    train: tuple[np.ndarray, np.ndarray],
    val: tuple[np.ndarray, np.ndarray],
    settings: Settings,
    spec: TrainSpec,
    pooling: str,
) -> Fit:
    """Fine-tune ``head`` and the image tower on ``train`` (images, targets); select on ``val``.

    On return the head and the tower hold the kept checkpoint's weights, in eval mode.
    """
    started = time.perf_counter()
    images, y = train
    params = trainable_blocks(backbone, spec.unfreeze_blocks)
    trainable = [*head.parameters(), *params]
    head_lr = spec.lr or 1e-3
    opt = torch.optim.AdamW(
        [{"params": head.parameters(), "lr": head_lr}, {"params": params, "lr": spec.backbone_lr}],
        weight_decay=spec.weight_decay,
    )
    total = settings.epochs * -(-len(images) // spec.batch_size)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, warmup_cosine(total, settings.warmup_fraction))
    gen = torch.Generator().manual_seed(spec.seed)
    target = torch.as_tensor(y)
    loss = loss_fn(kind, y, settings, backbone.device)
    keeper = _Keeper(Fit(pooling), settings, [head, backbone.visual])
    for epoch in tqdm(
        range(1, settings.epochs + 1), desc=f"finetune {pooling}", disable=not spec.progress
    ):
        backbone.visual.train()
        head.train()
        losses = []
        for idx in _epoch_order(kind, y, settings, gen).split(spec.batch_size):
            pixels = augment(
                settings.augment,
                backbone.to_pixels(images[idx.numpy()]),
                backbone.mean,
                backbone.std,
                gen,
            )
            opt.zero_grad()
            logits = head(backbone.forward_pixels(pixels))
            value = loss(logits.float(), target[idx].to(backbone.device))
            value.backward()
            if settings.clip:
                torch.nn.utils.clip_grad_norm_(trainable, settings.clip)
            opt.step()
            sched.step()
            losses.append(float(value.detach()))
        backbone.visual.eval()
        head.eval()
        score = val_macro_f1(
            kind, _val_logits(head, backbone, val[0]), val[1], spec.target_precision
        )
        if keeper.see(epoch, score, float(np.mean(losses))):
            break
    backbone.visual.eval()
    head.eval()
    backbone.model.requires_grad_(False)
    return keeper.finish(time.perf_counter() - started)


def fit_probe(
    head: torch.nn.Module,
    kind: FunctionType,
    train: tuple[np.ndarray, np.ndarray],
    val: tuple[np.ndarray, np.ndarray],
    settings: Settings,
    spec: TrainSpec,
    device: torch.device,
) -> Fit:
    """Fit ``head`` full-batch on cached pooled embeddings; evaluate every few steps on ``val``."""
    started = time.perf_counter()
    x = Features(torch.as_tensor(train[0], device=device), None, None)
    xv = Features(torch.as_tensor(val[0], device=device), None, None)
    target = torch.as_tensor(train[1], device=device)
    opt = torch.optim.AdamW(head.parameters(), lr=spec.lr or 1e-2, weight_decay=spec.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, warmup_cosine(settings.epochs, settings.warmup_fraction)
    )
    loss = loss_fn(kind, train[1], settings, device)
    keeper = _Keeper(Fit("pooled"), settings, [head])
    for step in tqdm(range(1, settings.epochs + 1), desc="probe", disable=not spec.progress):
        head.train()
        opt.zero_grad()
        value = loss(head(x), target)
        value.backward()
        opt.step()
        sched.step()
        if step % PROBE_EVAL_EVERY == 0 or step == settings.epochs:
            head.eval()
            with torch.inference_mode():
                logits = head(xv).float().cpu().numpy()
            if keeper.see(
                step,
                val_macro_f1(kind, logits, val[1], spec.target_precision),
                float(value.detach()),
            ):
                break
    head.eval()
    return keeper.finish(time.perf_counter() - started)
