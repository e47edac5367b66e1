"""Where the tiles of an image are, and cutting them: Pillow and numpy only.

The service's decode processes import this module, not :mod:`models.tiling` (which encodes
tiles and needs torch): a decode process stays small and starts fast.

A :class:`Tiling` (a manifest's ``head["tiling"]``) says the side of a tile in original
pixels and the share two neighbours share. :meth:`Tiling.fit` bounds the number of tiles of
one image: past ``max_tiles``, the tiles grow (each still resized to the backbone input), so
the image is read at a coarser scale instead of being refused or costing unbounded memory.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

from models.preprocess import preprocess_image

if TYPE_CHECKING:
    from models.manifest import Manifest

Box = tuple[int, int, int, int]


@dataclass(frozen=True)
class Tiling:
    """``tile``: a tile's side in original pixels; ``overlap``: the share neighbours share."""

    tile: int
    overlap: float = 0.25

    def __post_init__(self) -> None:
        if self.tile < 1 or not 0 <= self.overlap < 1:
            raise ValueError(f"a tiling needs tile >= 1 and 0 <= overlap < 1, not {self}")

    @classmethod
    def of(cls, manifest: Manifest) -> Tiling | None:
        """The manifest's tiling, or ``None`` (whole-image resize)."""
        spec = manifest.head.get("tiling")
        return None if not spec else cls(int(spec["tile"]), float(spec.get("overlap", 0.25)))

    @property
    def stride(self) -> int:
        return max(1, int(self.tile * (1 - self.overlap)))

    def count(self, width: int, height: int) -> int:
        """How many tiles :meth:`boxes` gives for an image of that size."""

        def along(n: int) -> int:
            return 1 if n <= self.tile else math.ceil((n - self.tile) / self.stride) + 1

        return along(width) * along(height)

    def boxes(self, width: int, height: int) -> list[Box]:
        """Tile boxes (x1, y1, x2, y2) covering the image, row by row; the last tile of a row
        or column ends at the image's edge."""
        stride = self.stride

        def starts(n: int) -> list[int]:
            if n <= self.tile:
                return [0]
            return [*range(0, n - self.tile, stride), n - self.tile]

        return [
            (x, y, x + min(self.tile, width), y + min(self.tile, height))
            for y in starts(height)
            for x in starts(width)
        ]

    def fit(self, width: int, height: int, max_tiles: int) -> Tiling:
        """This tiling, or the one with the smallest larger tile (same overlap) that cuts an
        image of that size into at most ``max_tiles`` tiles."""
        if max_tiles < 1:
            raise ValueError("max_tiles must be at least 1")
        if self.count(width, height) <= max_tiles:
            return self
        low, high = self.tile, max(width, height, self.tile)  # one tile always fits
        while high - low > 1:
            middle = (low + high) // 2
            if Tiling(middle, self.overlap).count(width, height) <= max_tiles:
                high = middle
            else:
                low = middle
        return Tiling(high, self.overlap)


@dataclass(frozen=True)
class TileSet:
    """One image's tiles for a function's ``tiling``: ``array`` uint8 (T, S, S, 3), each tile
    resized to the backbone input S; ``boxes`` where each was cut, in the original's pixels
    (after EXIF orientation); ``used``: the tiling cut (``tiling`` fitted to the tile cap)."""

    tiling: Tiling
    used: Tiling
    array: np.ndarray
    boxes: tuple[Box, ...]


def cut_tiles(image: Image.Image, tiling: Tiling, size: int) -> np.ndarray:
    """The tiles of ``image`` (original pixels, after EXIF orientation) as uint8 (T, S, S, 3),
    each resized as :func:`models.preprocess.preprocess_image` resizes a whole image."""
    image = image.convert("RGB") if image.mode != "RGB" else image
    return np.stack([preprocess_image(image.crop(box), size) for box in tiling.boxes(*image.size)])


def cut_tile_set(image: Image.Image, tiling: Tiling, size: int, max_tiles: int) -> TileSet:
    """:func:`cut_tiles` with at most ``max_tiles`` tiles (:meth:`Tiling.fit`), and where each
    tile lies in the image."""
    used = tiling.fit(*image.size, max_tiles)
    return TileSet(tiling, used, cut_tiles(image, used, size), tuple(used.boxes(*image.size)))
