"""Generated images: coloured shapes on noisy backgrounds (tests, the demo and benchmarks).

Deterministic for a given ``numpy.random.Generator``. ``scene`` also returns boxes, so the
detect tests can use the same generator.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "green": (30, 190, 40),
    "blue": (30, 60, 220),
    "yellow": (235, 215, 30),
}
SHAPES = ("circle", "square", "triangle", "cross")


@dataclass(frozen=True)
class Obj:
    shape: str
    colour: str
    box: tuple[int, int, int, int]  # x1, y1, x2, y2 in pixels


def background(rng: np.random.Generator, size: int) -> Image.Image:
    """Grey-ish noise with a random tint."""
    base = rng.integers(60, 150, size=3)
    noise = rng.normal(0, 25, size=(size, size, 3))
    return Image.fromarray(np.clip(base + noise, 0, 255).astype(np.uint8))


def draw(img: Image.Image, obj: Obj, rng: np.random.Generator) -> None:
    """Draw ``obj`` onto ``img`` with a slightly jittered colour."""
    d = ImageDraw.Draw(img)
    colour = tuple(int(np.clip(c + rng.integers(-20, 21), 0, 255)) for c in COLOURS[obj.colour])
    x1, y1, x2, y2 = obj.box
    if obj.shape == "circle":
        d.ellipse(obj.box, fill=colour)
    elif obj.shape == "square":
        d.rectangle(obj.box, fill=colour)
    elif obj.shape == "triangle":
        d.polygon([((x1 + x2) // 2, y1), (x2, y2), (x1, y2)], fill=colour)
    else:
        w = max(2, (x2 - x1) // 3)
        cx, cy = (x1 + x2) // 2, (y1 + y2) // 2
        d.rectangle((cx - w // 2, y1, cx + w // 2, y2), fill=colour)
        d.rectangle((x1, cy - w // 2, x2, cy + w // 2), fill=colour)


def random_box(rng: np.random.Generator, size: int, lo: float, hi: float) -> tuple[int, ...]:
    side = int(rng.uniform(lo, hi) * size)
    x1 = int(rng.integers(0, size - side))
    y1 = int(rng.integers(0, size - side))
    return (x1, y1, x1 + side, y1 + side)


def scene(
    rng: np.random.Generator,
    objects: list[tuple[str, str]],
    size: int = 64,
    lo: float = 0.3,
    hi: float = 0.5,
) -> tuple[Image.Image, list[Obj]]:
    """An image with the given (shape, colour) objects at random places and sizes."""
    img = background(rng, size)
    placed = []
    for shape, colour in objects:
        obj = Obj(shape, colour, random_box(rng, size, lo, hi))  # type: ignore[arg-type]
        draw(img, obj, rng)
        placed.append(obj)
    return img, placed


def shape_image(rng: np.random.Generator, shape: str, size: int = 64) -> Image.Image:
    """One shape of a random colour, large, on noise (classify by shape)."""
    colour = str(rng.choice(list(COLOURS)))
    return scene(rng, [(shape, colour)], size=size, lo=0.45, hi=0.8)[0]


def coloured_shape_image(rng: np.random.Generator, colour: str, size: int = 64) -> Image.Image:
    """One shape of a random kind in ``colour``, mid-sized, on noise (classify by colour)."""
    shape = str(rng.choice(SHAPES))
    return scene(rng, [(shape, colour)], size=size, lo=0.3, hi=0.6)[0]


def colours_image(rng: np.random.Generator, size: int = 64) -> tuple[Image.Image, list[str]]:
    """1 to 3 shapes of distinct random colours (tags = which colours appear)."""
    k = int(rng.integers(1, 4))
    colours = [str(c) for c in rng.choice(list(COLOURS), size=k, replace=False)]
    shapes = [str(rng.choice(SHAPES)) for _ in colours]
    img, _ = scene(rng, list(zip(shapes, colours, strict=True)), size=size, lo=0.3, hi=0.45)
    return img, sorted(colours)


# Textures of a material: clean, a small local mark, a change over the whole surface.

SURFACES = ("clean", "local", "whole")


def texture(rng: np.random.Generator, width: int = 250, height: int | None = None) -> np.ndarray:
    """A material-like surface, float (height, width, 3): tinted grey, an oriented grain, noise."""
    height = height or width
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float64)
    angle = rng.uniform(0, np.pi)
    period = rng.uniform(14, 30)
    phase = (xx * np.cos(angle) + yy * np.sin(angle)) * 2 * np.pi / period
    grain = 6 * np.sin(phase + rng.uniform(0, 2 * np.pi))
    base = rng.integers(100, 170) + rng.integers(-12, 13, size=3)
    noise = rng.normal(0, 8, size=(height, width, 3))
    return base[None, None, :] + grain[..., None] + noise


def _blotches(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    """Low-frequency mottling over the whole surface, in [-1, 1]."""
    coarse = rng.normal(0, 1, size=(6, 6))
    img = Image.fromarray(((coarse - coarse.min()) / np.ptp(coarse) * 255).astype(np.uint8))
    smooth = np.asarray(img.resize((width, height), Image.Resampling.BICUBIC), dtype=np.float64)
    return smooth / 127.5 - 1


def surface_image(
    rng: np.random.Generator,
    kind: str,
    size: int = 250,
    mark: tuple[int, int] = (10, 14),
    height: int | None = None,
) -> Image.Image:
    """A texture of ``kind`` (one of ``SURFACES``), ``size`` wide and ``height`` (else
    ``size``) high.

    ``local``: one small dark mark (a blob ``mark`` px across: at 250 px 0.1 to 0.25 % of the
    surface; after the resize to a 64 px backbone input, 2.5 to 3.5 pixels) at a random place;
    ``whole``: mottled staining over the whole surface; ``clean``: neither.
    """
    width, height = size, height or size
    surface = texture(rng, width, height)
    if kind == "local":
        d = int(rng.integers(mark[0], mark[1] + 1))
        x, y = (int(v) for v in rng.integers(d, np.array([width, height]) - 2 * d))
        yy, xx = np.mgrid[0:height, 0:width]
        inside = (xx - x) ** 2 + (yy - y) ** 2 <= (d / 2) ** 2
        surface[inside] -= rng.uniform(80, 110)
    elif kind == "whole":
        tint = np.array([1.0, 0.6, 0.3]) * rng.uniform(18, 30)
        surface += _blotches(rng, width, height)[..., None] * tint[None, None, :]
    elif kind != "clean":
        raise ValueError(f"unknown surface kind {kind!r}; expected one of {SURFACES}")
    return Image.fromarray(np.clip(surface, 0, 255).astype(np.uint8))


def surfaces_folder(
    root: Path, counts: dict[str, int], seed: int, size: int = 250, mark: tuple[int, int] = (10, 14)
) -> Path:
    """classify surfaces: ``root/<kind>/<i>.png`` with ``counts[kind]`` images of each kind."""
    rng = np.random.default_rng(seed)
    for kind, n in counts.items():
        (root / kind).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            surface_image(rng, kind, size, mark).save(root / kind / f"{i}.png")
    return root


# Datasets on disk, in the formats users have (folder per label, JSONL manifest).


def _folder(root: Path, classes: list[str], per_class: int, seed: int, draw: Any) -> Path:
    rng = np.random.default_rng(seed)
    for name in classes:
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            draw(rng, name).save(root / name / f"{i}.png")
    return root


def shapes_folder(root: Path, per_class: int, seed: int) -> Path:
    """classify by shape (any colour): ``root/<shape>/<i>.png``."""
    return _folder(root, list(SHAPES), per_class, seed, shape_image)


def colour_folder(root: Path, per_class: int, seed: int) -> Path:
    """classify by the colour of one shape (any kind): ``root/<colour>/<i>.png``."""
    return _folder(root, list(COLOURS), per_class, seed, coloured_shape_image)


def colours_jsonl(root: Path, n: int, seed: int) -> Path:
    """tags = which colours appear: ``root/manifest.jsonl`` with ``image`` and ``labels``."""
    rng = np.random.default_rng(seed)
    (root / "img").mkdir(parents=True, exist_ok=True)
    lines = []
    for i in range(n):
        img, colours = colours_image(rng)
        img.save(root / "img" / f"{i}.png")
        lines.append(json.dumps({"image": f"img/{i}.png", "labels": colours}))
    (root / "manifest.jsonl").write_text("\n".join(lines) + "\n")
    return root / "manifest.jsonl"
