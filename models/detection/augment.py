"""Detection augmentation (torchvision ``transforms.v2``, boxes transformed with the image).

Horizontal flip, scale/translate jitter (boxes follow and are clipped; boxes left smaller
than ``MIN_BOX`` pixels are dropped) and colour jitter. Randomness comes from torch's global
generator, so a seeded run is reproducible.
"""

from __future__ import annotations

import numpy as np
import torch
from torchvision import tv_tensors
from torchvision.transforms import v2

MIN_BOX = 2.0


def detect_augmentation() -> v2.Transform:
    """The training transform: takes and returns ``{"image", "boxes", "labels"}``."""
    return v2.Compose(
        [
            v2.ToDtype(torch.float32, scale=True),  # the uint8 kernels are ~20x slower on the CPU
            v2.RandomHorizontalFlip(0.5),
            v2.RandomAffine(degrees=0.0, translate=(0.1, 0.1), scale=(0.75, 1.25)),
            v2.ColorJitter(
                brightness=0.3, contrast=0.3, saturation=0.3
            ),  # no hue: it may be the label
            v2.ToDtype(torch.uint8, scale=True),
            v2.SanitizeBoundingBoxes(min_size=MIN_BOX),
        ]
    )


def augment_sample(
    transform: v2.Transform, image: np.ndarray, boxes: np.ndarray, labels: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Apply ``transform`` to one uint8 (S, S, 3) image, its (K, 4) xyxy boxes and (K,) labels."""
    size = image.shape[:2]
    out = transform(
        {
            "image": tv_tensors.Image(
                torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)
            ),
            "boxes": tv_tensors.BoundingBoxes(
                torch.as_tensor(boxes, dtype=torch.float32), format="XYXY", canvas_size=size
            ),
            "labels": torch.as_tensor(labels, dtype=torch.int64),
        }
    )
    return (
        out["image"].permute(1, 2, 0).numpy(),
        out["boxes"].numpy().reshape(-1, 4),
        out["labels"].numpy(),
    )
