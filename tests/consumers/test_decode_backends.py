"""Decode backends: nvImageCodec (its CPU backend here) against Pillow, the default.

Tolerances, in 8-bit levels of the model input: nvImageCodec decodes JPEGs at full size (it has
no DCT-scaled decode) and resizes, Pillow decodes draft-scaled (1/2 to 1/8) and resizes, so
their inputs differ by at most a mean of 2 levels (2/255) and 16 at any pixel (measured: 1.8
and 11 on the checkerboards, 0.44 and 6 on photo-like JPEGs); the full-size decode itself is
libjpeg-turbo's in both, identical to the level. The fleet's outputs on either input agree to
0.05 in every probability and score, and their labels (and tags) are the same.
"""

from __future__ import annotations

import io
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from benchmarks.assets import render
from consumers.decode import DecodeLimits, decode_image, decode_image_full
from consumers.decode_nvimgcodec import NvImageCodec, available, resize_on_device
from consumers.decoding import open_decoder
from consumers.domain import PermanentError, Reason
from consumers.settings import TaggingSettings
from models.backbones import Backbone
from models.preprocess import preprocess_image
from models.tile_grid import Tiling
from tests.models.golden_fleet import golden_fleet, golden_images

MEAN_LEVELS, MAX_LEVELS, OUTPUT_ABS = 2.0, 16, 0.05
TARGET = 64
LIMITS = DecodeLimits()
missing = available()
needs_codec = pytest.mark.skipif(missing is not None, reason=str(missing))


def _jpeg(image: Image.Image, **save: Any) -> bytes:
    out = io.BytesIO()
    image.save(out, "JPEG", quality=90, **save)
    return out.getvalue()


@pytest.fixture(scope="module")
def jpegs() -> list[bytes]:
    """The golden images as 640x480 JPEGs (drafted 1/8 by Pillow) and two photo-like 1080p
    JPEGs of the benchmark's mix (drafted 1/8 too)."""
    images, _ = golden_images()
    big = [Image.fromarray(a).resize((640, 480), Image.Resampling.NEAREST) for a in images]
    return [_jpeg(image) for image in big] + [render(i, "jpeg1080p") for i in (0, 1)]


@pytest.fixture(scope="module")
def codec() -> NvImageCodec:
    if missing is not None:
        pytest.skip(missing)
    return NvImageCodec(TARGET, LIMITS, device="cpu")


def _diff(a: np.ndarray, b: np.ndarray) -> tuple[float, int]:
    d = np.abs(a.astype(np.int16) - b.astype(np.int16))
    return float(d.mean()), int(d.max())


@needs_codec
def test_nvimgcodec_input_matches_pillow_draft_and_resize(
    codec: NvImageCodec, jpegs: list[bytes]
) -> None:
    for data in jpegs:
        pillow, nv = decode_image(data, TARGET, LIMITS), codec.decode(data)
        assert nv.array.shape == pillow.array.shape == (TARGET, TARGET, 3)
        assert nv.array.dtype == np.uint8
        assert (nv.width, nv.height, nv.format) == (pillow.width, pillow.height, "JPEG")
        mean, worst = _diff(nv.array, pillow.array)
        assert mean <= MEAN_LEVELS and worst <= MAX_LEVELS, (mean, worst)
        # the full-size decode is libjpeg-turbo's in both: identical
        assert _diff(nv.array, decode_image_full(data, TARGET, LIMITS).array) == (0.0, 0)
    assert codec.fallbacks == 0


@needs_codec
def test_fleet_outputs_unchanged_with_nvimgcodec(codec: NvImageCodec, jpegs: list[bytes]) -> None:
    fleet = golden_fleet()
    fleet_target = fleet.input_size
    nv_codec = NvImageCodec(fleet_target, LIMITS, device="cpu")
    pillow = [decode_image(d, fleet_target, LIMITS) for d in jpegs]
    nv = [nv_codec.decode(d) for d in jpegs]
    sizes = [(d.width, d.height) for d in pillow]
    expected = fleet.predict([d.array for d in pillow], sizes)
    actual = fleet.predict([d.array for d in nv], sizes)
    _close(actual, expected)


def _close(actual: Any, expected: Any, path: str = "") -> None:
    """Equal labels and structure; floats within OUTPUT_ABS."""
    if isinstance(expected, dict):
        assert isinstance(actual, dict) and set(actual) == set(expected), path
        for key in expected:
            _close(actual[key], expected[key], f"{path}.{key}")
    elif isinstance(expected, list):
        assert isinstance(actual, list) and len(actual) == len(expected), path
        for i, (a, e) in enumerate(zip(actual, expected, strict=True)):
            _close(a, e, f"{path}[{i}]")
    elif isinstance(expected, float):
        assert actual == pytest.approx(expected, abs=OUTPUT_ABS), path
    else:
        assert actual == expected, path


@needs_codec
def test_exif_orientation_and_grey(codec: NvImageCodec) -> None:
    base = Image.fromarray(np.tile(np.arange(200, dtype=np.uint8), (100, 1))).convert("RGB")
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise on display
    rotated = _jpeg(base, exif=exif)
    grey = _jpeg(base.convert("L"))
    for data in (rotated, grey):
        pillow, nv = decode_image(data, TARGET, LIMITS), codec.decode(data)
        assert (nv.width, nv.height) == (pillow.width, pillow.height)
        mean, worst = _diff(nv.array, pillow.array)
        assert mean <= MEAN_LEVELS and worst <= MAX_LEVELS, (mean, worst)
    assert codec.decode(rotated).width == 100


@needs_codec
def test_what_nvimgcodec_does_not_take_goes_to_pillow_with_the_same_reasons(
    codec: NvImageCodec, jpegs: list[bytes]
) -> None:
    png = io.BytesIO()
    Image.fromarray(golden_images()[0][0]).save(png, "PNG")
    same = codec.decode(png.getvalue())
    assert same.format == "PNG"
    assert np.array_equal(same.array, decode_image(png.getvalue(), TARGET, LIMITS).array)
    cases = {
        b"": Reason.EMPTY_OBJECT,
        b"not an image at all": Reason.UNSUPPORTED_FORMAT,
        jpegs[0][:200]: Reason.IMAGE_DECODE_FAILED,  # truncated after the header
        jpegs[0][:2] + b"\x00" * 50: Reason.UNSUPPORTED_FORMAT,
    }
    for data, reason in cases.items():
        with pytest.raises(PermanentError) as pillow_error:
            decode_image(data, TARGET, LIMITS)
        with pytest.raises(PermanentError) as nv_error:
            codec.decode(data)
        assert nv_error.value.reason == pillow_error.value.reason == reason
    small = NvImageCodec(TARGET, DecodeLimits(max_pixels=1000), device="cpu")
    with pytest.raises(PermanentError) as too_large:  # from the header, before any decode
        small.decode(jpegs[0])
    assert too_large.value.reason == Reason.IMAGE_TOO_LARGE


@needs_codec
def test_decoder_of_the_setting_cuts_tiles_with_pillow(jpegs: list[bytes]) -> None:
    settings = TaggingSettings(decode_backend="nvimgcodec")
    tiling = Tiling(tile=256, overlap=0.0)
    with open_decoder(settings, TARGET, LIMITS, tiled={"detect": (tiling,)}) as decode:
        whole = decode.for_functions(jpegs[0], ["shape"])
        tiled = decode.for_functions(jpegs[0], ["detect"])
    assert whole.tiles == () and len(tiled.tiles) == 1
    pillow = decode_image(jpegs[0], TARGET, LIMITS, [tiling])
    assert np.array_equal(tiled.tiles[0].array, pillow.tiles[0].array)


@needs_codec
@pytest.mark.skipif(
    not torch.cuda.is_available(), reason="no CUDA device (the GPU session runs it)"
)
def test_on_a_gpu_the_input_stays_there_and_matches_pillow(jpegs: list[bytes]) -> None:
    codec = NvImageCodec(TARGET, LIMITS, device="cuda")
    assert codec.device is not None
    for data in jpegs:
        pillow, nv = decode_image(data, TARGET, LIMITS), codec.decode(data)
        assert isinstance(nv.array, torch.Tensor) and nv.array.is_cuda
        assert tuple(nv.array.shape) == (TARGET, TARGET, 3) and nv.array.dtype == torch.uint8
        assert (nv.width, nv.height) == (pillow.width, pillow.height)
        mean, worst = _diff(nv.array.cpu().numpy(), pillow.array)
        assert mean <= MEAN_LEVELS and worst <= MAX_LEVELS, (mean, worst)


def test_the_device_resize_matches_pillows_resize() -> None:
    """The GPU path's resize (torch, bilinear antialiased), run here on the CPU."""
    for data in (render(0, "jpeg1080p"), render(3, "jpeg1080p")):
        full = np.array(Image.open(io.BytesIO(data)).convert("RGB"))
        resized = resize_on_device(full, TARGET, "cpu")
        assert isinstance(resized, torch.Tensor) and resized.dtype == torch.uint8
        mean, worst = _diff(resized.numpy(), preprocess_image(Image.fromarray(full), TARGET))
        assert mean <= MEAN_LEVELS and worst <= MAX_LEVELS, (mean, worst)


def test_device_resident_inputs_give_the_same_outputs() -> None:
    """Images handed over as tensors (what a GPU decode leaves) predict as numpy ones do."""
    fleet = golden_fleet()
    images, sizes = golden_images()
    expected = fleet.predict(images, sizes)
    tensors: Any = [torch.from_numpy(a) for a in images]
    assert fleet.predict(tensors, sizes) == expected


def test_no_pinned_memory_on_the_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    backbone = next(iter(golden_fleet().backbones.values()))
    assert isinstance(backbone, Backbone) and backbone.device.type == "cpu"
    images = np.stack(golden_images()[0])
    before = backbone.to_pixels(images)

    def refuse(*_: Any, **__: Any) -> None:
        raise AssertionError("pin_memory on the CPU")

    monkeypatch.setattr(torch.Tensor, "pin_memory", refuse)
    assert torch.equal(backbone.to_pixels(images), before)
