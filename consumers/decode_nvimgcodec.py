"""The ``nvimgcodec`` decode backend: NVIDIA nvImageCodec (``pip install '.[gpu-decode]'``).

On a CUDA device the JPEG is decoded by nvJPEG (the hardware decoder of A100/H100/H200, or its
CUDA path) and the resize to the model input runs with torch on the same device: the
:class:`DecodedImage`'s ``array`` is a CUDA ``uint8 (S, S, 3)`` tensor that the backbone reads
without a host round trip. Without CUDA (``TAGFLEET_DEVICE=cpu`` or no GPU) nvImageCodec's CPU
backend (libjpeg-turbo) decodes into host memory and Pillow resizes, as the parity tests do.

Every limit is checked from the header first, exactly as the Pillow backend does
(:func:`consumers.decode.open_checked`). nvImageCodec takes only what it is good at: JPEGs
in RGB or grey whose full-size RGB buffer fits ``max_decode_bytes`` (it has no DCT-scaled
decode, so it decodes at full size), read whole. Everything else (other formats, CMYK,
images read in tiles, a JPEG too large to decode at full size) and every image nvImageCodec
refuses goes to Pillow (:func:`consumers.decode.decode_image`), whose errors dead-letter the
image with the same reasons as ever.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Sequence
from typing import Any

import numpy as np
from PIL import Image

from consumers.decode import DecodedImage, DecodeLimits, decode_image, open_checked
from models.preprocess import preprocess_image
from models.tile_grid import Tiling

log = logging.getLogger(__name__)

_MODES = ("RGB", "L")  # what a JPEG's header says for YCbCr and grey (CMYK goes to Pillow)


def available() -> str | None:
    """``None`` when nvImageCodec can decode here (on its CPU backend at least), else why not."""
    try:
        from nvidia import nvimgcodec

        nvimgcodec.Decoder(
            device_id=nvimgcodec.NVIMGCODEC_DEVICE_CPU_ONLY,
            backends=[nvimgcodec.Backend(nvimgcodec.CPU_ONLY)],
        )
    except ImportError:
        return "nvImageCodec is not installed (pip install '.[gpu-decode]')"
    except RuntimeError as exc:
        return f"nvImageCodec has no CPU decoder here: {exc}"
    return None


class NvImageCodec:
    """``decode(data, tilings)``: one image, as :func:`consumers.decode.decode_image` returns it.

    ``device``: the models' torch device (``cuda``, ``cuda:N``, ``cpu``; ``None``: CUDA when
    available). One instance per process, called from the decode threads: each thread has its
    own nvImageCodec decoder."""

    def __init__(self, target: int, limits: DecodeLimits, device: str | None = None) -> None:
        try:
            from nvidia import nvimgcodec
        except ImportError:
            raise RuntimeError(
                "TAGFLEET_DECODE_BACKEND=nvimgcodec needs nvImageCodec: pip install '.[gpu-decode]'"
            ) from None
        self.target, self.limits = target, limits
        self.device = _cuda_device(device)
        self._nvimgcodec = nvimgcodec
        self._local = threading.local()
        self._params = nvimgcodec.DecodeParams(
            apply_exif_orientation=True, color_spec=nvimgcodec.ColorSpec.SRGB
        )
        self._decoder()  # fails here, at start-up, when it cannot decode at all
        self.fallbacks = 0  # images handed to Pillow after nvImageCodec refused them

    def _decoder(self) -> Any:
        """This thread's decoder (one CPU thread each: the decode threads are the parallelism)."""
        decoder = getattr(self._local, "decoder", None)
        if decoder is None:
            nv = self._nvimgcodec
            if self.device is None:
                decoder = nv.Decoder(
                    device_id=nv.NVIMGCODEC_DEVICE_CPU_ONLY,
                    max_num_cpu_threads=1,
                    backends=[nv.Backend(nv.CPU_ONLY)],
                )
            else:  # every backend: the hardware decoder, nvJPEG's CUDA path, the CPU last
                index = int(self.device.split(":")[1])
                decoder = nv.Decoder(device_id=index, max_num_cpu_threads=1)
            self._local.decoder = decoder
        return decoder

    def decode(self, data: bytes, tilings: Sequence[Tiling] = ()) -> DecodedImage:
        if tilings:  # the tiles are cut from Pillow's full-size image
            return decode_image(data, self.target, self.limits, tilings)
        image, width, height = open_checked(data, self.target, self.limits, draft=True, tilings=())
        if (
            image.format != "JPEG"
            or image.mode not in _MODES
            or width * height * 3 > self.limits.max_decode_bytes
        ):
            return decode_image(data, self.target, self.limits)
        try:
            decoded = self._decoder().decode(data, params=self._params)
        except Exception as exc:  # noqa: BLE001 - whatever it raises, Pillow decides
            log.debug("nvImageCodec refused an image", extra={"error": repr(exc)})
            decoded = None
        if decoded is None:
            self.fallbacks += 1
            return decode_image(data, self.target, self.limits)
        array, out_height, out_width = self._resize(decoded)
        return DecodedImage(array=array, width=out_width, height=out_height, format="JPEG")

    def _resize(self, decoded: Any) -> tuple[Any, int, int]:
        """The model input from nvImageCodec's (H, W, 3) image, and H and W."""
        height, width = int(decoded.shape[0]), int(decoded.shape[1])
        if self.device is None:
            pixels = np.asarray(decoded.cpu())
            if pixels.ndim == 2 or pixels.shape[-1] == 1:
                pixels = np.repeat(pixels.reshape(height, width, 1), 3, axis=2)
            return preprocess_image(Image.fromarray(pixels), self.target), height, width
        return resize_on_device(decoded, self.target, self.device), height, width


def resize_on_device(decoded: Any, target: int, device: str) -> Any:
    """An image (nvImageCodec's CUDA image, taken through DLPack, or any array: H x W x C uint8)
    resized to ``target`` on ``device`` with torch (bilinear, antialiased: Pillow's filter),
    a uint8 (S, S, 3) tensor."""
    import torch
    import torch.nn.functional as F

    if hasattr(decoded, "__cuda_array_interface__"):  # DLPack: ordered on torch's stream
        pixels = torch.from_dlpack(decoded).to(device)
    else:
        pixels = torch.as_tensor(decoded, device=device)
    if pixels.ndim == 2:
        pixels = pixels.unsqueeze(-1)
    if pixels.shape[-1] == 1:
        pixels = pixels.expand(-1, -1, 3)
    x = pixels.permute(2, 0, 1).unsqueeze(0).float()
    if x.shape[-2:] != (target, target):
        x = F.interpolate(
            x, size=(target, target), mode="bilinear", antialias=True, align_corners=False
        )
    return x.round_().clamp_(0, 255).to(torch.uint8)[0].permute(1, 2, 0).contiguous()


def _cuda_device(device: str | None) -> str | None:
    """``cuda:N`` when the models run on a CUDA device (``None``: CUDA when available)."""
    if device is not None and not device.startswith("cuda"):
        return None
    import torch

    if not torch.cuda.is_available():
        return None
    if device is None or device == "cuda":
        return f"cuda:{torch.cuda.current_device()}"
    if not re.fullmatch(r"cuda:\d+", device):
        raise ValueError(f"not a CUDA device: {device}")
    return device
