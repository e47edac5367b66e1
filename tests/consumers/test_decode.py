"""Decoder tests on images generated with Pillow: formats, modes, limits, draft, EXIF, fuzz."""

from __future__ import annotations

import io
import struct
import zlib
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from consumers import decode
from consumers.decode import DecodeLimits, decode_image, decode_image_full
from consumers.domain import PermanentError, Reason

LIMITS = DecodeLimits()
RED, BLUE, WHITE = (255, 0, 0), (0, 0, 255), (255, 255, 255)


def encode(image: Image.Image, fmt: str, **options: Any) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def noise(size: tuple[int, int], seed: int = 0) -> Image.Image:
    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    return Image.fromarray(pixels)


def halves(
    size: tuple[int, int], left: tuple[int, int, int], right: tuple[int, int, int]
) -> Image.Image:
    image = Image.new("RGB", size, left)
    image.paste(right, (size[0] // 2, 0, size[0], size[1]))
    return image


def reason(data: bytes, limits: DecodeLimits = LIMITS) -> Reason:
    with pytest.raises(PermanentError) as info:
        decode_image(data, 32, limits)
    return info.value.reason


def close_to(pixel: np.ndarray, colour: tuple[int, int, int], tolerance: int = 12) -> bool:
    return bool(np.all(np.abs(pixel.astype(int) - colour) <= tolerance))


def png_bomb(width: int, height: int) -> bytes:
    """A 1-bit PNG of ``width x height`` zeros: a few kB on disk, width*height pixels decoded."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (
            struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
        )

    row = b"\x00" * (1 + (width + 7) // 8)
    packer = zlib.compressobj(9)
    idat = b"".join(packer.compress(row) for _ in range(height)) + packer.flush()
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")
    )


def gif_with_screen(width: int, height: int) -> bytes:
    """A 1x1 GIF whose logical screen (the canvas Pillow allocates) is ``width x height``."""
    data = bytearray(encode(Image.new("P", (1, 1)), "GIF"))
    data[6:10] = struct.pack("<HH", width, height)
    return bytes(data)


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP", "GIF", "TIFF", "BMP"])
def test_every_accepted_format(fmt: str) -> None:
    decoded = decode_image(encode(Image.new("RGB", (40, 30), RED), fmt), 16, LIMITS)
    assert decoded.format == fmt
    assert (decoded.width, decoded.height) == (40, 30)
    assert decoded.array.shape == (16, 16, 3) and decoded.array.dtype == np.uint8
    assert close_to(decoded.array[8, 8], RED, 40)


def test_large_jpeg_is_drafted_to_the_smallest_covering_scale(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    seen: list[tuple[int, int]] = []
    real = decode.preprocess_image

    def spy(image: Image.Image, size: int) -> np.ndarray:
        seen.append(image.size)
        return real(image, size)

    monkeypatch.setattr(decode, "preprocess_image", spy)
    data = encode(halves((4000, 3000), RED, BLUE), "JPEG", quality=80)
    decoded = decode_image(data, 224, LIMITS)
    full = decode_image_full(data, 224, LIMITS)
    assert seen == [(500, 375), (4000, 3000)]
    assert (decoded.width, decoded.height) == (full.width, full.height) == (4000, 3000)
    assert np.abs(decoded.array.astype(int) - full.array).mean() < 4
    decode_image(data, 400, LIMITS)
    assert seen[-1] == (1000, 750)


@pytest.mark.parametrize(
    ("orientation", "top_left", "size"),
    [(1, RED, (80, 40)), (3, BLUE, (80, 40)), (6, RED, (40, 80)), (8, BLUE, (40, 80))],
)
@pytest.mark.parametrize("scale", [1, 20])
def test_exif_orientation_after_draft(
    orientation: int, top_left: tuple[int, int, int], size: tuple[int, int], scale: int
) -> None:
    exif = Image.Exif()
    exif[0x0112] = orientation
    image = halves((80 * scale, 40 * scale), RED, BLUE)
    decoded = decode_image(encode(image, "JPEG", exif=exif, quality=95), 16, LIMITS)
    assert (decoded.width, decoded.height) == (size[0] * scale, size[1] * scale)
    assert close_to(decoded.array[1, 1], top_left, 30)


def test_sixteen_bit_png_is_scaled_not_clipped() -> None:
    grey = np.full((20, 20), 40000, dtype=np.uint16)
    decoded = decode_image(encode(Image.fromarray(grey), "PNG"), 8, LIMITS)
    assert np.all(decoded.array == round(40000 * 255 / 65535))


def test_sixteen_bit_tiff() -> None:
    grey = np.full((20, 20), 65535, dtype=np.uint16)
    decoded = decode_image(encode(Image.fromarray(grey), "TIFF"), 8, LIMITS)
    assert np.all(decoded.array == 255)


def test_cmyk_jpeg() -> None:
    decoded = decode_image(encode(Image.new("CMYK", (64, 64), (0, 255, 255, 0)), "JPEG"), 8, LIMITS)
    assert close_to(decoded.array[4, 4], RED, 30)


def test_palette_png_with_transparency_is_composited_on_white() -> None:
    image = Image.new("P", (20, 20), 1)
    image.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    image.paste(0, (0, 0, 10, 20))
    decoded = decode_image(encode(image, "PNG", transparency=0), 20, LIMITS)
    assert close_to(decoded.array[10, 2], WHITE, 0) and close_to(decoded.array[10, 17], RED, 0)


@pytest.mark.parametrize("mode", ["RGBA", "LA"])
def test_alpha_is_composited_on_white(mode: str) -> None:
    image = Image.new("RGBA", (20, 20), (0, 0, 0, 0))
    image.paste((0, 0, 0, 255), (10, 0, 20, 20))
    decoded = decode_image(encode(image.convert(mode), "PNG"), 20, LIMITS)
    assert close_to(decoded.array[10, 2], WHITE, 0) and close_to(
        decoded.array[10, 17], (0, 0, 0), 0
    )


@pytest.mark.parametrize("fmt", ["GIF", "WEBP", "PNG"])
def test_animated_uses_the_first_frame(fmt: str) -> None:
    frames = [Image.new("RGB", (20, 20), RED), Image.new("RGB", (20, 20), BLUE)]
    data = encode(frames[0], fmt, save_all=True, append_images=frames[1:], duration=100, loop=0)
    assert getattr(Image.open(io.BytesIO(data)), "n_frames", 1) == 2
    assert close_to(decode_image(data, 8, LIMITS).array[4, 4], RED, 20)


@pytest.mark.parametrize("mode", ["1", "L", "I", "F", "YCbCr"])
def test_other_modes_become_rgb(mode: str) -> None:
    fmt = "TIFF" if mode in ("I", "F", "YCbCr") else "PNG"
    data = encode(Image.new("RGB", (10, 10), WHITE).convert(mode), fmt)
    assert decode_image(data, 4, LIMITS).array.shape == (4, 4, 3)


def test_png_bomb_over_pillows_limit() -> None:
    data = png_bomb(20_000, 20_000)
    assert len(data) < 100_000
    assert reason(data) is Reason.IMAGE_TOO_LARGE


def test_png_under_pillows_limit_but_over_ours() -> None:
    assert (
        reason(png_bomb(3000, 3000), DecodeLimits(max_pixels=8_000_000)) is Reason.IMAGE_TOO_LARGE
    )
    assert decode_image(png_bomb(3000, 3000), 8, DecodeLimits(max_pixels=9_000_000)).width == 3000


@pytest.mark.parametrize(("side", "limit"), [(65535, LIMITS.max_pixels), (5000, 1_000_000)])
def test_gif_with_a_huge_logical_screen(side: int, limit: int) -> None:
    assert (
        reason(gif_with_screen(side, side), DecodeLimits(max_pixels=limit))
        is Reason.IMAGE_TOO_LARGE
    )


SAMPLES = {
    fmt: encode(noise((128, 96), seed), fmt)
    for seed, fmt in enumerate(["JPEG", "PNG", "WEBP", "GIF", "TIFF", "BMP"])
}


# Pillow warns (Corrupt EXIF data, Truncated File Read) on the broken files these feed it.
PILLOW_WARNS_ON_BROKEN_FILES = pytest.mark.filterwarnings("ignore::UserWarning:PIL")


@PILLOW_WARNS_ON_BROKEN_FILES
@pytest.mark.parametrize("fmt", sorted(SAMPLES))
@pytest.mark.parametrize("keep", [0.5, 0.9, 20])
def test_truncated_files_fail_to_decode(fmt: str, keep: float) -> None:
    data = SAMPLES[fmt]
    cut = int(len(data) * keep) if keep < 1 else int(keep)
    assert reason(data[:cut]) is Reason.IMAGE_DECODE_FAILED


def test_zero_bytes() -> None:
    assert reason(b"") is Reason.EMPTY_OBJECT


@pytest.mark.parametrize(
    "data",
    [
        b"hello, this is text\n",
        b"%PDF-1.4\n",
        b"\x00" * 64,
        encode(Image.new("RGB", (8, 8)), "PPM"),
        encode(Image.new("RGB", (8, 8)), "ICO"),
    ],
)
def test_not_an_accepted_image(data: bytes) -> None:
    assert reason(data) is Reason.UNSUPPORTED_FORMAT


def test_formats_are_configurable() -> None:
    only_png = DecodeLimits(formats=("PNG",))
    assert reason(SAMPLES["JPEG"], only_png) is Reason.UNSUPPORTED_FORMAT
    assert reason(SAMPLES["JPEG"][:10], only_png) is Reason.UNSUPPORTED_FORMAT
    assert decode_image(SAMPLES["PNG"], 8, only_png).format == "PNG"


@st.composite
def hostile_bytes(draw: st.DrawFn) -> bytes:
    if draw(st.booleans()):
        return draw(st.binary(min_size=1, max_size=2048))
    data = bytearray(draw(st.sampled_from(sorted(SAMPLES.values()))))
    for _ in range(draw(st.integers(1, 8))):
        position = draw(st.integers(0, len(data) - 1))
        data[position] = draw(st.integers(0, 255))
    return bytes(data[: draw(st.integers(1, len(data)))])


@PILLOW_WARNS_ON_BROKEN_FILES
@settings(max_examples=250, deadline=2000, suppress_health_check=[HealthCheck.too_slow])
@given(hostile_bytes())
def test_fuzz_only_typed_errors(data: bytes) -> None:
    try:
        decoded = decode_image(data, 16, DecodeLimits(max_pixels=4_000_000))
    except PermanentError as exc:
        assert exc.reason in {
            Reason.UNSUPPORTED_FORMAT,
            Reason.IMAGE_DECODE_FAILED,
            Reason.IMAGE_TOO_LARGE,
        }
    else:
        assert decoded.array.shape == (16, 16, 3)
