"""What JPEG draft() buys: decode a 24 MP photo for a 224 px model, drafted and full size.

python benchmarks/decode_draft.py [--runs 5] [--target 224]
"""

from __future__ import annotations

import argparse
import io
import statistics
import time
from collections.abc import Callable

import numpy as np
from PIL import Image

from consumers.decode import DecodedImage, DecodeLimits, decode_image, decode_image_full


def photo(width: int = 6000, height: int = 4000) -> bytes:
    """A JPEG with photo-like content (smooth gradients plus noise), quality 90."""
    y, x = np.mgrid[0:height, 0:width]
    rgb = np.stack([x * 255 // width, y * 255 // height, (x + y) * 255 // (width + height)], -1)
    rgb = rgb + np.random.default_rng(0).integers(-4, 4, rgb.shape)
    buffer = io.BytesIO()
    Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8)).save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


def timed(decode: Callable[..., DecodedImage], data: bytes, target: int, runs: int) -> float:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        decode(data, target, DecodeLimits())
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="decodes per variant (default 5)")
    parser.add_argument("--target", type=int, default=224, help="model input side (default 224)")
    args = parser.parse_args()
    data = photo()
    drafted = timed(decode_image, data, args.target, args.runs)
    full = timed(decode_image_full, data, args.target, args.runs)
    print(f"24 MP JPEG ({len(data) / 1e6:.1f} MB) -> {args.target}px, median of {args.runs}")
    print(f"  draft: {drafted * 1000:8.1f} ms")
    print(f"  full:  {full * 1000:8.1f} ms   ({full / drafted:.1f}x slower)")


if __name__ == "__main__":
    main()
