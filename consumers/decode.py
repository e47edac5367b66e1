"""Image decoding with Pillow: accepted formats only, pixel and byte limits, JPEG draft, EXIF
orientation.

Tiles: when some function of the fleet has a tiling (:class:`models.tile_grid.Tiling`), the
image is decoded at full size (no JPEG draft: the tiles need the original's pixels), and
besides the whole-image array the decoder cuts, for each tiling, the tiles the function reads
(:class:`models.tile_grid.TileSet`), each resized to the model input. At most
``max_tiles`` tiles per tiling: a larger image is cut into fewer, larger tiles
(:meth:`models.tile_grid.Tiling.fit`), so an image's tiles hold at most
``max_tiles x target x target x 3`` bytes per tiling.

Thread-safe: no Pillow global is changed. Pillow's own bomb check (``Image.MAX_IMAGE_PIXELS``,
an error above twice its value) stays in force, so the effective limit is the lower of
``max_pixels`` and ``2 * Image.MAX_IMAGE_PIXELS``; ``ImageFile.LOAD_TRUNCATED_IMAGES`` stays off.

Memory is budgeted from the header, before any pixel is decoded: the buffer Pillow will fill
(width x height x its bytes per pixel for the decoded mode, after JPEG draft scaling) plus the
8-bit RGB copy made from it (and the tiles, when the fleet reads some function in tiles) must
fit ``max_decode_bytes``. A 100 MP 32-bit TIFF of 690 KB
asks for 800 MB and is refused; wide modes are narrowed to 8 bits in row blocks, never through
a 64-bit copy of the whole image.
"""

from __future__ import annotations

import io
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image, ImageFile, UnidentifiedImageError

from consumers.domain import PermanentError, Reason
from models.preprocess import preprocess_image
from models.tile_grid import TileSet, Tiling, cut_tile_set

ACCEPTED_FORMATS = ("JPEG", "PNG", "WEBP", "GIF", "TIFF", "BMP")
_SIGNATURES = {
    "JPEG": (b"\xff\xd8\xff",),
    "PNG": (b"\x89PNG\r\n\x1a\n",),
    "GIF": (b"GIF87a", b"GIF89a"),
    "TIFF": (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"),
    "BMP": (b"BM",),
}
_TRANSPOSE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
_ORIENTATION_TAG = 0x0112
_ALPHA_MODES = ("LA", "La", "PA", "RGBA", "RGBa")
# Bytes per pixel of Pillow's in-memory image for a mode: one-band 8-bit modes take 1, the
# 16-bit ones 2, everything else (multi-band modes included) 4.
_NARROW_MODES = frozenset({"1", "L", "P"})
_ROW_BLOCK_BYTES = 8 << 20  # wide modes are narrowed to 8 bits this many source bytes at a time


@dataclass(frozen=True, slots=True)
class DecodeLimits:
    """What the decoder accepts: Pillow format names and the largest ``width * height``;
    ``max_tiles``: the most tiles cut from one image for one tiling."""

    max_pixels: int = 100_000_000
    formats: tuple[str, ...] = ACCEPTED_FORMATS
    max_decode_bytes: int = 512_000_000
    max_tiles: int = 64


@dataclass(frozen=True, slots=True)
class DecodedImage:
    """The model input (``target x target x 3`` uint8 RGB) and the original's oriented size;
    ``tiles``: one :class:`TileSet` per tiling asked for (none when none was). ``array`` is a
    numpy array, or a CUDA ``torch.Tensor`` of the same shape when a GPU decode backend
    (:mod:`consumers.decode_nvimgcodec`) left it on the device."""

    array: np.ndarray | Any
    width: int
    height: int
    format: str
    tiles: tuple[TileSet, ...] = ()


def decode_image(
    data: bytes, target: int, limits: DecodeLimits, tilings: Sequence[Tiling] = ()
) -> DecodedImage:
    """Decode ``data`` for a model whose input side is ``target``.

    JPEGs are decoded with ``draft()`` at the smallest DCT scale still covering ``target`` on
    both sides, unless ``tilings`` are given: then the image is decoded at full size and its
    tiles for each tiling are cut from the oriented original (at most ``limits.max_tiles``
    per tiling, :meth:`Tiling.fit`), each resized to ``target``. The first frame of animated
    images is used; alpha is composited on white; CMYK, palette, grey and 16-bit modes become
    8-bit RGB; EXIF orientation is applied, and
    ``width``/``height`` are those of the full-size image once oriented. Decoding happens here
    (``load()``), so its cost and its errors belong to this call.

    Raises :class:`PermanentError`: ``empty_object`` (no bytes), ``unsupported_format`` (not
    an image of ``limits.formats``), ``image_too_large`` (over ``limits.max_pixels`` or
    ``limits.max_decode_bytes``, checked from the header before any pixel is decoded, or out
    of memory while decoding), ``image_decode_failed`` (truncated, corrupt).
    """
    return _decode(data, target, limits, draft=not tilings, tilings=tilings)


def decode_image_full(
    data: bytes, target: int, limits: DecodeLimits, tilings: Sequence[Tiling] = ()
) -> DecodedImage:
    """:func:`decode_image` without ``draft()``: full-size decode, then resize (benchmarks)."""
    return _decode(data, target, limits, draft=False, tilings=tilings)


def tiles_bytes(tilings: Sequence[Tiling], target: int, max_tiles: int) -> int:
    """The most bytes the tiles of one image take: ``max_tiles`` per tiling."""
    return len(tilings) * max_tiles * target * target * 3


def _decode(
    data: bytes, target: int, limits: DecodeLimits, *, draft: bool, tilings: Sequence[Tiling]
) -> DecodedImage:
    image, width, height = open_checked(data, target, limits, draft=draft, tilings=tilings)
    with _pillow_errors():
        image.load()
        orientation = _orientation(image)
        rgb = _to_rgb(image)
        if orientation in _TRANSPOSE:
            rgb = rgb.transpose(_TRANSPOSE[orientation])
            if orientation >= 5:
                width, height = height, width
        array = preprocess_image(rgb, target)
        tiles = tuple(cut_tile_set(rgb, t, target, limits.max_tiles) for t in tilings)
    return DecodedImage(
        array=array, width=width, height=height, format=str(image.format), tiles=tiles
    )


def open_checked(
    data: bytes, target: int, limits: DecodeLimits, *, draft: bool, tilings: Sequence[Tiling]
) -> tuple[ImageFile.ImageFile, int, int]:
    """The image opened from its header (no pixel decoded yet), its full size, once every limit
    was checked from the header: the bytes, the format, the pixels, the decode memory (after
    JPEG draft scaling when ``draft``, plus the tiles of ``tilings``). Every decode backend
    checks these first. Raises :class:`PermanentError` as :func:`decode_image` does."""
    if not data:
        raise PermanentError(Reason.EMPTY_OBJECT, "the object has no bytes")
    with _pillow_errors():
        image = _open(data, limits)
        width, height = image.size
        if width * height > limits.max_pixels:
            raise PermanentError(
                Reason.IMAGE_TOO_LARGE,
                f"{width}x{height} is over the limit of {limits.max_pixels} pixels",
            )
        if draft and image.format == "JPEG":
            image.draft("RGB", (target, target))
        needed = decode_bytes(image.mode, *image.size)
        needed += tiles_bytes(tilings, target, limits.max_tiles)
        if needed > limits.max_decode_bytes:
            raise PermanentError(
                Reason.IMAGE_TOO_LARGE,
                f"{width}x{height} {image.mode} needs {needed} bytes to decode, over the limit"
                f" of {limits.max_decode_bytes}",
            )
    return image, width, height


def decode_bytes(mode: str, width: int, height: int) -> int:
    """Bytes to decode a ``mode`` image of that size and hold its 8-bit RGB copy (4 bytes a
    pixel in Pillow; an RGB image needs none). Wide modes (16/32-bit, float) also pass through
    a numpy copy and an 8-bit grey image on the way."""
    if mode in _NARROW_MODES:
        per_pixel = 1
    elif mode.startswith("I;16"):
        per_pixel = 2
    else:
        per_pixel = 4
    if mode.startswith("I") or mode == "F":
        return width * height * (2 * per_pixel + 1 + 4)
    return width * height * (per_pixel + (0 if mode == "RGB" else 4))


def _open(data: bytes, limits: DecodeLimits) -> ImageFile.ImageFile:
    try:
        return Image.open(io.BytesIO(data), formats=limits.formats)
    except UnidentifiedImageError:
        sniffed = _sniff(data)
        if sniffed in limits.formats:
            raise PermanentError(
                Reason.IMAGE_DECODE_FAILED, f"{sniffed} header is truncated or corrupt"
            ) from None
        what = f"{sniffed} is not accepted" if sniffed else "not an image Pillow can identify"
        raise PermanentError(Reason.UNSUPPORTED_FORMAT, what) from None


def _sniff(data: bytes) -> str | None:
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WEBP"
    for name, signatures in _SIGNATURES.items():
        if data.startswith(signatures):
            return name
    return None


def _orientation(image: Image.Image) -> int:
    try:
        value = image.getexif().get(_ORIENTATION_TAG, 1)
    except Exception:  # a broken EXIF block must not fail an otherwise good image
        return 1
    return value if isinstance(value, int) else 1


def _to_rgb(image: Image.Image) -> Image.Image:
    mode = image.mode
    if mode == "RGB" and "transparency" not in image.info:
        return image
    if mode.startswith("I") or mode == "F":
        return Image.fromarray(_to_uint8(np.asarray(image))).convert("RGB")
    if mode in _ALPHA_MODES or "transparency" in image.info:
        rgba = image.convert("RGBA")
        background = Image.new("RGB", rgba.size, (255, 255, 255))
        background.paste(rgba, mask=rgba.getchannel("A"))
        return background
    return image.convert("RGB")


def _to_uint8(pixels: np.ndarray) -> np.ndarray:
    """16-bit (and 32-bit integer) grey levels are read as 0..65535; floats as 0..255.

    Narrowed a block of rows at a time into the 8-bit result, so the extra memory is one
    block, not a 64-bit copy of the image (800 MB for 100 MP).
    """
    out = np.empty(pixels.shape, dtype=np.uint8)
    rows = max(1, _ROW_BLOCK_BYTES // max(1, pixels[:1].nbytes))
    for start in range(0, pixels.shape[0], rows):
        block = pixels[start : start + rows]
        if pixels.dtype.kind == "f":
            out[start : start + rows] = np.clip(np.nan_to_num(block), 0, 255)
        else:
            wide = np.clip(block, 0, 65535).astype(np.uint32)
            out[start : start + rows] = (wide * 255 + 32767) // 65535
    return out


@contextmanager
def _pillow_errors() -> Iterator[None]:
    """Map what Pillow and its plugins raise on hostile input to typed permanent errors."""
    try:
        yield
    except PermanentError:
        raise
    except Image.DecompressionBombError as exc:
        raise PermanentError(Reason.IMAGE_TOO_LARGE, str(exc)) from None
    except MemoryError:
        raise PermanentError(Reason.IMAGE_TOO_LARGE, "not enough memory to decode") from None
    except Exception as exc:  # plugins raise OSError, SyntaxError, ValueError, struct.error, ...
        raise PermanentError(Reason.IMAGE_DECODE_FAILED, f"{type(exc).__name__}: {exc}") from None
