"""detect: an anchor-free (FCOS-style) head on the patch tokens of the shared backbone pass.

Every patch cell predicts, for each label, a class logit, plus one centre-ness logit and the
distances (left, top, right, bottom) from the cell centre to the box edges. Raw output
(:class:`DetectHead.forward`): ``logits`` (B, N, L), ``centerness`` (B, N) and ``boxes``
(B, N, 4) as ``x1, y1, x2, y2`` normalised to the model input (0..1), N = grid cells.

:func:`results` scores a (cell, label) pair as ``sqrt(sigmoid(logit) * sigmoid(centerness))``,
keeps the pairs at or above the label's threshold (``thresholds[label]``, else
``thresholds["*"]``, else :data:`DEFAULT_THRESHOLD`), runs per-label NMS
(``torchvision.ops.batched_nms``, IoU ``head["nms_iou"]``), keeps the best
``head["max_detections"]`` and scales the boxes to the original image's pixels, clipped.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torchvision.ops import batched_nms, clip_boxes_to_image

from models.backbones import Features
from models.heads import HeadDims, HeadType, register
from models.manifest import FunctionType, Manifest

DEFAULT_THRESHOLD = 0.3
DEFAULT_NMS_IOU = 0.5
DEFAULT_MAX_DETECTIONS = 100
# boxes kept below the threshold (``candidates``), so a lower threshold later needs no model
DEFAULT_SCORE_FLOOR = 0.05
DEFAULT_MAX_CANDIDATES = 100
PRE_NMS_TOP_K = 1000
PRIOR_PROB = 0.01  # focal-loss prior: initial class probability of every cell


def _block(cin: int, cout: int) -> list[torch.nn.Module]:
    return [torch.nn.Conv2d(cin, cout, 3, padding=1), torch.nn.GroupNorm(8, cout), torch.nn.GELU()]


class DetectHead(torch.nn.Module):
    """A small conv tower on the token grid with class, centre-ness and box outputs."""

    def __init__(
        self,
        token_dim: int,
        num_labels: int,
        patch_size: int,
        input_size: int,
        hidden: int = 128,
        depth: int = 2,
    ) -> None:
        super().__init__()
        layers: list[torch.nn.Module] = []
        for i in range(depth):
            layers += _block(token_dim if i == 0 else hidden, hidden)
        self.tower = torch.nn.Sequential(*layers)
        self.cls = torch.nn.Conv2d(hidden, num_labels, 3, padding=1)
        self.ctr = torch.nn.Conv2d(hidden, 1, 3, padding=1)
        self.box = torch.nn.Conv2d(hidden, 4, 3, padding=1)
        assert self.cls.bias is not None  # Conv2d's bias is on by default
        torch.nn.init.constant_(
            self.cls.bias, -float(torch.log(torch.tensor((1 - PRIOR_PROB) / PRIOR_PROB)))
        )
        self.stride = patch_size / input_size  # one cell, in normalised input units

    def points(self, grid: tuple[int, int], device: torch.device) -> torch.Tensor:
        """(N, 2) cell centres ``(x, y)`` in normalised input units, row-major."""
        rows, cols = grid
        ys = (torch.arange(rows, device=device, dtype=torch.float32) + 0.5) / rows
        xs = (torch.arange(cols, device=device, dtype=torch.float32) + 0.5) / cols
        yy, xx = torch.meshgrid(ys, xs, indexing="ij")
        return torch.stack([xx.reshape(-1), yy.reshape(-1)], dim=-1)

    def forward(self, features: Features) -> dict[str, torch.Tensor]:
        if features.tokens is None or features.grid is None:
            raise ValueError("detect needs a ViT backbone with patch tokens")
        rows, cols = features.grid
        b, n, w = features.tokens.shape
        x = self.tower(features.tokens.float().transpose(1, 2).reshape(b, w, rows, cols))
        logits = self.cls(x).flatten(2).transpose(1, 2)
        ltrb = torch.exp(self.box(x).flatten(2).transpose(1, 2).clamp(max=6.0)) * self.stride
        p = self.points((rows, cols), x.device)
        boxes = torch.cat([p - ltrb[..., :2], p + ltrb[..., 2:]], dim=-1)
        return {"logits": logits, "centerness": self.ctr(x).flatten(1), "boxes": boxes}


def build(manifest: Manifest, dims: HeadDims) -> torch.nn.Module:
    """A fresh detect head; ``manifest.head`` may set ``hidden`` and ``depth``."""
    if dims.token_dim is None or dims.patch_size is None:
        raise ValueError("detect needs a ViT backbone with patch tokens")
    return DetectHead(
        dims.token_dim,
        len(manifest.labels),
        dims.patch_size,
        dims.input_size,
        hidden=int(manifest.head.get("hidden", 128)),
        depth=int(manifest.head.get("depth", 2)),
    )


def scores(raw: dict[str, torch.Tensor]) -> torch.Tensor:
    """(B, N, L) detection scores: ``sqrt(sigmoid(logits) * sigmoid(centerness))``."""
    centre = torch.sigmoid(raw["centerness"].float())[..., None]
    return (torch.sigmoid(raw["logits"].float()) * centre).sqrt()


def label_thresholds(manifest: Manifest) -> list[float]:
    """Per-label score thresholds in label order (label, else ``"*"``, else the default)."""
    default = manifest.thresholds.get("*", DEFAULT_THRESHOLD)
    return [manifest.thresholds.get(label, default) for label in manifest.labels]


def _detect_one(
    boxes: torch.Tensor, score: torch.Tensor, limits: torch.Tensor, manifest: Manifest
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, int]:
    """(boxes (K, 4) normalised, scores (K,), label indices (K,), n) of one image after NMS:
    the candidates at or above the floor (``head["score_floor"]``, or the label's threshold
    when lower), of which the first ``n`` are the objects (each part highest first).

    The objects are the candidates at or above their label's threshold, at most
    ``head["max_detections"]``: the boxes NMS keeps among the floor's boxes are the ones it
    keeps among the threshold's (a box is only suppressed by a higher-scoring box of its label,
    which reaches the threshold too). At most ``head["max_candidates"]`` candidates are kept
    beyond the objects.
    """
    floor = torch.clamp(limits, max=float(manifest.head.get("score_floor", DEFAULT_SCORE_FLOOR)))
    cell, label = torch.nonzero(score >= floor[None, :], as_tuple=True)
    s = score[cell, label]
    if len(s) > PRE_NMS_TOP_K:
        s, top = s.topk(PRE_NMS_TOP_K)
        cell, label = cell[top], label[top]
    b = boxes[cell]
    keep = batched_nms(b, s, label, float(manifest.head.get("nms_iou", DEFAULT_NMS_IOU)))
    passing = torch.nonzero(s[keep] >= limits[label[keep]], as_tuple=True)[0]
    passing = passing[: int(manifest.head.get("max_detections", DEFAULT_MAX_DETECTIONS))]
    # the objects first (in score order), then the other candidates up to the bound
    objects = keep[passing]
    rest = torch.ones(len(keep), dtype=torch.bool, device=keep.device)
    rest[passing] = False
    others = keep[rest][: int(manifest.head.get("max_candidates", DEFAULT_MAX_CANDIDATES))]
    chosen = torch.cat([objects, others])
    return b[chosen], s[chosen], label[chosen], len(objects)


def results(
    raw: dict[str, torch.Tensor], manifest: Manifest, orig_sizes: Sequence[tuple[int, int]]
) -> list[dict[str, Any]]:
    """Result objects ``{"type","version","objects":[{"label","score","box"}],"thresholds"}``,
    one per image.

    Boxes are ``[x1, y1, x2, y2]`` in pixels of the original image (``orig_sizes`` are
    ``(width, height)``), clipped to it; objects are sorted by score, highest first.
    ``thresholds`` maps every label to the score its boxes had to reach (as the tags head
    does: the store keeps it as each tag's provenance, the review queue flags boxes near it).
    ``candidates`` holds the objects and the other boxes NMS kept scoring at least
    ``score_floor`` (``head["score_floor"]``, default :data:`DEFAULT_SCORE_FLOOR`; at most
    ``head["max_candidates"]`` more than the objects), highest first: ``tagfleet retag`` draws
    a lower threshold's objects from them without running the model.
    """
    all_scores = scores(raw)
    floor = float(manifest.head.get("score_floor", DEFAULT_SCORE_FLOOR))
    per_label = label_thresholds(manifest)
    thresholds = {label: float(t) for label, t in zip(manifest.labels, per_label, strict=True)}
    limits = torch.tensor(per_label, device=all_scores.device)
    out = []
    for i, (width, height) in enumerate(orig_sizes):
        boxes, s, label, n = _detect_one(raw["boxes"][i].float(), all_scores[i], limits, manifest)
        scale = torch.tensor([width, height, width, height], device=boxes.device)
        boxes = clip_boxes_to_image(boxes * scale, (height, width))
        found: list[dict[str, Any]] = [
            {"label": manifest.labels[int(k)], "score": float(v), "box": [float(c) for c in box]}
            for box, v, k in zip(
                boxes.cpu().tolist(), s.cpu().tolist(), label.cpu().tolist(), strict=True
            )
        ]
        out.append(
            {
                "type": "detect",
                "version": manifest.version,
                "objects": found[:n],
                "thresholds": dict(thresholds),
                "candidates": sorted(found, key=lambda o: -o["score"]),
                "score_floor": floor,
            }
        )
    return out


register(FunctionType.DETECT, HeadType(build=build, results=results))
