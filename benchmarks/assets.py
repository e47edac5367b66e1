"""A photo-library-like asset set, generated once, cached under var/bench/, uploaded to S3.

The mix (default 1,000 images): 60% 12 MP JPEG at quality 90 (4000x3000), 30% 1080p JPEG at
quality 90 (1920x1080), 10% 1080p PNG (graphics: flat colours, no sensor noise). Content is the
synthetic shape scenes of :mod:`models.synthetic`, upscaled, with photo-like grain on the
JPEGs so they compress like camera pictures (about 1.4 bits per pixel). The first 100 indices
are distinct pictures; the others repeat one of them (same kind) with a comment added, so
every object differs and rendering stays quick. Generation is deterministic per index, so the
cache is valid across runs; uploads skip keys already there.

    python -m benchmarks.assets [--images 1000] [--bucket tagfleet-bench] [--delete]
"""

from __future__ import annotations

import argparse
import functools
import io
import os
import struct
import zlib
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageChops

from models import synthetic

REPO = Path(__file__).resolve().parents[1]
CACHE = REPO / "var" / "bench" / "assets"
KINDS = {  # name: (share, size, format)
    "jpeg12mp": (0.6, (4000, 3000), "JPEG"),
    "jpeg1080p": (0.3, (1920, 1080), "JPEG"),
    "png1080p": (0.1, (1920, 1080), "PNG"),
}
GRAIN_TILE = 1024
DISTINCT = 100  # distinct pictures (10 per 10 indices keep the mix)


@dataclass(frozen=True)
class Asset:
    index: int
    kind: str
    key: str
    path: Path

    @property
    def size(self) -> int:
        return self.path.stat().st_size


def kind_of(index: int) -> str:
    """The kind of image ``index``: 6 in 10 12 MP JPEGs, 3 in 10 1080p JPEGs, 1 in 10 PNGs."""
    slot = index % 10
    return "jpeg12mp" if slot < 6 else "jpeg1080p" if slot < 9 else "png1080p"


def plan(count: int) -> list[Asset]:
    assets = []
    for i in range(count):
        kind = kind_of(i)
        ext = "png" if KINDS[kind][2] == "PNG" else "jpg"
        key = f"{kind}/{i:05d}.{ext}"
        assets.append(Asset(i, kind, key, CACHE / key))
    return assets


def render(index: int, kind: str) -> bytes:
    """The bytes of image ``index`` (deterministic).

    JPEGs get luminance grain (Gaussian, sigma 1 to 3 by index, like sensor noise after a
    camera's chroma denoising), which makes them compress like photos: about 1.4 bits per pixel.
    """
    _, (width, height), fmt = KINDS[kind]
    small, _ = synthetic.colours_image(np.random.default_rng(index), size=256)
    out = io.BytesIO()
    if fmt == "PNG":
        graphic = small.quantize(32).resize((width, height), Image.Resampling.NEAREST)
        graphic.convert("RGB").save(out, "PNG")
        return out.getvalue()
    image = small.resize((width, height), Image.Resampling.BILINEAR)
    image = ImageChops.add(image, _grain(1 + index % 3, width, height), 1.0, -128)
    image.save(out, "JPEG", quality=90)
    return out.getvalue()


@functools.cache
def _grain(sigma: int, width: int, height: int) -> Image.Image:
    """Grey Gaussian grain around 128 (added to R, G and B alike: luminance only)."""
    rng = np.random.default_rng(sigma)
    tile = np.clip(np.rint(rng.normal(128, sigma, (GRAIN_TILE, GRAIN_TILE))), 0, 255)
    reps = (-(-height // GRAIN_TILE), -(-width // GRAIN_TILE))
    full = np.tile(tile.astype(np.uint8), reps)[:height, :width]
    return Image.fromarray(full).convert("RGB")


def variant(data: bytes, index: int) -> bytes:
    """``data`` made a distinct object by a comment (JPEG COM segment, PNG tEXt chunk)."""
    text = f"tagfleet benchmark asset {index}".encode()
    if data.startswith(b"\xff\xd8"):
        return data[:2] + b"\xff\xfe" + struct.pack(">H", len(text) + 2) + text + data[2:]
    chunk = b"tEXt" + b"Comment\x00" + text
    end_of_ihdr = 8 + 8 + 13 + 4
    packed = struct.pack(">I", len(chunk) - 4) + chunk + struct.pack(">I", zlib.crc32(chunk))
    return data[:end_of_ihdr] + packed + data[end_of_ihdr:]


def _write(asset: Asset) -> None:
    if asset.index < DISTINCT:
        data = render(asset.index, asset.kind)
    else:  # same pixels as a distinct one of its kind, different bytes (rendering is slow)
        data = variant(plan(DISTINCT)[asset.index % DISTINCT].path.read_bytes(), asset.index)
    asset.path.parent.mkdir(parents=True, exist_ok=True)
    tmp = asset.path.with_suffix(".tmp")
    tmp.write_bytes(data)
    tmp.replace(asset.path)


def generate(count: int, workers: int | None = None) -> list[Asset]:
    """Every asset of the set on disk (missing ones rendered, in parallel)."""
    assets = plan(count)
    missing = [a for a in assets if not a.path.exists()]
    if missing:
        print(f"rendering {len(missing)} images into {CACHE} (cached for later runs)", flush=True)
        for a in plan(min(count, DISTINCT)):  # the distinct pictures first
            if not a.path.exists():
                with ProcessPoolExecutor(workers or os.cpu_count()) as pool:
                    list(pool.map(_write, [b for b in missing if b.index < DISTINCT]))
                break
        for a in missing:
            if a.index >= DISTINCT:
                _write(a)
    return assets


def upload(s3: object, bucket: str, assets: list[Asset]) -> int:
    """Create ``bucket`` if needed and put every asset whose key is missing; returns puts."""
    existing = dict(_listing(s3, bucket))
    puts = 0
    for asset in assets:
        if existing.get(asset.key) != asset.size:
            s3.put_object(Bucket=bucket, Key=asset.key, Body=asset.path.read_bytes())  # type: ignore[attr-defined]
            puts += 1
    return puts


def _listing(s3: object, bucket: str) -> Iterator[tuple[str, int]]:
    try:
        s3.create_bucket(Bucket=bucket)  # type: ignore[attr-defined]
    except Exception as exc:  # noqa: BLE001 - already there is fine
        if "BucketAlready" not in type(exc).__name__ + str(exc):
            raise
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=bucket)  # type: ignore[attr-defined]
    for page in pages:
        for item in page.get("Contents", []):
            yield item["Key"], item["Size"]


def delete_bucket(s3: object, bucket: str) -> None:
    """Delete every object of ``bucket`` and the bucket (frees the shared moto server)."""
    keys = [k for k, _ in _listing(s3, bucket)]
    for start in range(0, len(keys), 1000):
        chunk = [{"Key": k} for k in keys[start : start + 1000]]
        s3.delete_objects(Bucket=bucket, Delete={"Objects": chunk})  # type: ignore[attr-defined]
    s3.delete_bucket(Bucket=bucket)  # type: ignore[attr-defined]


def summary(assets: list[Asset]) -> dict[str, dict[str, float]]:
    """Per kind: count, total MB, mean MB."""
    out: dict[str, dict[str, float]] = {}
    for kind in KINDS:
        sizes = [a.size for a in assets if a.kind == kind]
        if sizes:
            out[kind] = {
                "count": len(sizes),
                "total_mb": sum(sizes) / 1e6,
                "mean_mb": sum(sizes) / len(sizes) / 1e6,
            }
    return out


def print_summary(assets: list[Asset]) -> None:
    rows = summary(assets)
    print(f"{'kind':<10} {'count':>6} {'mean MB':>8} {'total MB':>9}")
    for kind, row in rows.items():
        print(f"{kind:<10} {row['count']:>6.0f} {row['mean_mb']:>8.2f} {row['total_mb']:>9.1f}")
    total = sum(r["total_mb"] for r in rows.values())
    print(f"{'all':<10} {len(assets):>6} {total / len(assets):>8.2f} {total:>9.1f}")


def main() -> None:
    from benchmarks.stack import s3_client

    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--images", type=int, default=1000, help="images (default 1000)")
    parser.add_argument(
        "--bucket", default="tagfleet-bench", help="S3 bucket (default tagfleet-bench)"
    )
    parser.add_argument("--delete", action="store_true", help="delete the bucket and exit")
    args = parser.parse_args()
    s3 = s3_client()
    if args.delete:
        delete_bucket(s3, args.bucket)
        print(f"deleted s3://{args.bucket}")
        return
    assets = generate(args.images)
    print_summary(assets)
    print(f"uploaded {upload(s3, args.bucket, assets)} objects to s3://{args.bucket}")


if __name__ == "__main__":
    main()
