"""Augmentation for classify and tags, on a batch of normalised pixels on the device.

``auto`` keeps the evidence: random resized crops that keep at least 85 % of each side (a
mark of a few pixels near the border stays in view, and is enlarged rather than lost to a
downscale), horizontal flips, and a mild colour jitter (brightness, contrast, saturation).
``shift`` is the plain recipe's: horizontal flips and one shift of up to 4 px per batch.
Detect augments boxes with its images (:mod:`models.detection.augment`), never with these.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

MIN_SIDE = 0.92  # the smallest crop side, as a share of the image side
JITTER = 0.1  # brightness, contrast and saturation factors within 1 +- JITTER


def _uniform(n: int, lo: float, hi: float, gen: torch.Generator) -> torch.Tensor:
    return lo + (hi - lo) * torch.rand(n, generator=gen)


def _flip(pixels: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    flip = (torch.rand(len(pixels), generator=gen) < 0.5).to(pixels.device)
    return torch.where(flip[:, None, None, None], pixels.flip(-1), pixels)


def shift(pixels: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Random horizontal flips and one small shift of the batch (the plain recipe's)."""
    pixels = _flip(pixels, gen)
    dx, dy = (int(v) for v in torch.randint(-4, 5, (2,), generator=gen))
    return torch.roll(pixels, shifts=(dy, dx), dims=(-2, -1))


def crop_flip_jitter(
    pixels: torch.Tensor, mean: torch.Tensor, std: torch.Tensor, gen: torch.Generator
) -> torch.Tensor:
    """Per image: a resized crop (side >= ``MIN_SIDE``), a flip, a colour jitter.

    ``mean``/``std``: the normalisation of ``pixels`` (the jitter works on 0..1 colours).
    """
    n = len(pixels)
    side = _uniform(n, MIN_SIDE, 1.0, gen)
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0] = side
    theta[:, 1, 1] = side
    theta[:, 0, 2] = (1 - side) * _uniform(n, -1, 1, gen)
    theta[:, 1, 2] = (1 - side) * _uniform(n, -1, 1, gen)
    grid = F.affine_grid(theta.to(pixels), list(pixels.shape), align_corners=False)
    pixels = F.grid_sample(pixels, grid, mode="bilinear", align_corners=False)
    pixels = _flip(pixels, gen)
    colour = pixels * std + mean
    factors = [
        _uniform(n, 1 - JITTER, 1 + JITTER, gen).to(pixels)[:, None, None, None] for _ in "bcs"
    ]
    colour = colour * factors[0]
    grey = colour.mean(dim=(1, 2, 3), keepdim=True)
    colour = (colour - grey) * factors[1] + grey
    luma = colour.mean(dim=1, keepdim=True)
    colour = ((colour - luma) * factors[2] + luma).clamp(0, 1)
    return (colour - mean) / std


def augment(
    policy: str,
    pixels: torch.Tensor,
    mean: torch.Tensor,
    std: torch.Tensor,
    gen: torch.Generator,
) -> torch.Tensor:
    """``pixels`` augmented by ``policy`` (``auto``, ``shift`` or ``none``)."""
    if policy == "auto":
        return crop_flip_jitter(pixels, mean, std, gen)
    if policy == "shift":
        return shift(pixels, gen)
    return pixels
