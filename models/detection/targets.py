"""FCOS-style target assignment and the detection loss (torchvision.ops for the box maths).

A cell is positive for a ground-truth box when its centre lies inside the box and within
``CENTRE_RADIUS`` cells of the box centre, or when it is the cell holding the box centre (so
that small boxes get a cell too); a cell claimed by several boxes takes the smallest.
Loss = focal loss on the class logits (all cells) + GIoU loss on positive boxes weighted by
their centre-ness target + BCE on centre-ness (positives), each normalised by the positives.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torchvision.ops import box_area, generalized_box_iou_loss, sigmoid_focal_loss

CENTRE_RADIUS = 1.5


def assign(points: torch.Tensor, stride: float, boxes: torch.Tensor) -> torch.Tensor:
    """(N,) index of the box each cell predicts, -1 for background.

    ``points`` (N, 2) cell centres, ``stride`` the cell side, ``boxes`` (K, 4) xyxy, all in
    the same (normalised input) units.
    """
    if len(boxes) == 0:
        return torch.full((len(points),), -1, dtype=torch.long, device=points.device)
    px, py = points[:, 0:1], points[:, 1:2]
    inside = (px > boxes[:, 0]) & (px < boxes[:, 2]) & (py > boxes[:, 1]) & (py < boxes[:, 3])
    cx, cy = (boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2
    near = ((px - cx).abs() < CENTRE_RADIUS * stride) & ((py - cy).abs() < CENTRE_RADIUS * stride)
    holds = ((px - cx).abs() <= stride / 2) & ((py - cy).abs() <= stride / 2)
    candidate = (inside & near) | holds
    area = torch.where(candidate, box_area(boxes)[None, :], torch.inf)
    best_area, index = area.min(dim=1)
    return torch.where(torch.isfinite(best_area), index, -1)


def centerness(points: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
    """(N,) FCOS centre-ness of each point in its (N, 4) box, in [0, 1]."""
    ltrb = torch.cat([points - boxes[:, :2], boxes[:, 2:] - points], dim=1).clamp(min=1e-6)
    lr, tb = ltrb[:, [0, 2]], ltrb[:, [1, 3]]
    ratio = (lr.min(1).values / lr.max(1).values) * (tb.min(1).values / tb.max(1).values)
    return ratio.sqrt()


def detection_loss(
    raw: dict[str, torch.Tensor],
    points: torch.Tensor,
    stride: float,
    boxes: list[torch.Tensor],
    labels: list[torch.Tensor],
) -> torch.Tensor:
    """The training loss of a batch; ``boxes[i]`` (K, 4) normalised xyxy, ``labels[i]`` (K,)."""
    logits, ctr, pred = raw["logits"].float(), raw["centerness"].float(), raw["boxes"].float()
    cls_target = torch.zeros_like(logits)
    pos_pred, pos_box, pos_points, pos_ctr = [], [], [], []
    for i, (b, lab) in enumerate(zip(boxes, labels, strict=True)):
        index = assign(points, stride, b)
        pos = torch.nonzero(index >= 0).squeeze(1)
        cls_target[i, pos, lab[index[pos]]] = 1.0
        pos_pred.append(pred[i, pos])
        pos_box.append(b[index[pos]])
        pos_points.append(points[pos])
        pos_ctr.append(ctr[i, pos])
    num_pos = max(sum(len(p) for p in pos_pred), 1)
    loss = sigmoid_focal_loss(logits, cls_target, reduction="sum") / num_pos
    pred_box, target_box = torch.cat(pos_pred), torch.cat(pos_box)
    if not len(pred_box):
        return loss
    target_ctr = centerness(torch.cat(pos_points), target_box)
    giou = generalized_box_iou_loss(pred_box, target_box, reduction="none")
    loss = loss + (giou * target_ctr).sum() / target_ctr.sum().clamp(min=1e-6)
    return loss + F.binary_cross_entropy_with_logits(torch.cat(pos_ctr), target_ctr)
