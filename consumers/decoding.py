"""The decode function a command uses, built from the settings: the service and
``tagfleet tag`` decode the same way (limits, child processes, memory limits, timeouts)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager

from consumers.decode import DecodedImage, DecodeLimits, decode_image
from consumers.decode_nvimgcodec import NvImageCodec
from consumers.decode_processes import DecodeProcesses
from consumers.settings import TaggingSettings
from models.tile_grid import Tiling

log = logging.getLogger(__name__)


def decode_limits(settings: TaggingSettings) -> DecodeLimits:
    """What the decoder accepts, from the settings."""
    return DecodeLimits(
        max_pixels=settings.max_pixels,
        formats=settings.image_formats,
        max_decode_bytes=settings.max_decode_bytes,
        max_tiles=settings.max_tiles,
    )


class Decoder:
    """``for_functions(data, functions)``: the image, with the tiles of the tiled functions
    among ``functions`` (``None``: every function of the fleet) and none for the others, so an
    event that asks only for functions read whole is decoded draft-scaled as ever (the prepare
    stage calls it with the event's functions); ``decode(data)``: for every function.

    ``tiled``: name -> the tilings that function reads (:attr:`Fleet.tiled_functions`);
    ``cut(data, tilings)``: the decode that cuts ``tilings`` (a subset of every tiling in
    ``tiled``; ``None``: all of them)."""

    def __init__(
        self,
        tiled: Mapping[str, tuple[Tiling, ...]],
        cut: Callable[[bytes, Sequence[Tiling] | None], DecodedImage],
    ) -> None:
        self._tiled, self._cut = dict(tiled), cut
        self.tilings = _every(tiled)

    def __call__(self, data: bytes) -> DecodedImage:
        return self._cut(data, None)

    def for_functions(self, data: bytes, functions: Sequence[str] | None) -> DecodedImage:
        if functions is None:
            return self._cut(data, None)
        wanted = {t for name in functions for t in self._tiled.get(name, ())}
        return self._cut(data, [t for t in self.tilings if t in wanted])


def _every(tiled: Mapping[str, tuple[Tiling, ...]]) -> tuple[Tiling, ...]:
    """Every tiling of ``tiled``, once, in a fixed order."""
    return tuple(
        sorted({t for ts in tiled.values() for t in ts}, key=lambda t: (t.tile, t.overlap))
    )


@contextmanager
def open_decoder(
    settings: TaggingSettings,
    target: int,
    limits: DecodeLimits,
    log_as: tuple[str, str] = ("WARNING", "text"),
    tiled: Mapping[str, tuple[Tiling, ...]] | None = None,
) -> Iterator[Decoder]:
    """The :class:`Decoder` of ``settings.decode_backend`` and ``settings.decode_mode``:
    nvImageCodec in the caller's threads (:class:`NvImageCodec`, on the models' device, the
    settings' ``device`` when they have one), or a pool of child processes (closed on
    exit; they log at ``log_as``: level and format) or :func:`decode_image` in the caller's
    thread. ``tiled`` (the fleet's :attr:`models.fleet.Fleet.tiled_functions`): an image whose
    event asks for a tiled function also comes with its tiles for that function's tilings
    (the decode is then full-size, not draft-scaled)."""
    tiled = dict(tiled or {})
    tilings = _every(tiled)
    if settings.decode_backend == "nvimgcodec":
        codec = NvImageCodec(target, limits, device=getattr(settings, "device", None))
        log.info("nvImageCodec decodes", extra={"device": codec.device or "cpu"})

        def nvimgcodec(data: bytes, wanted: Sequence[Tiling] | None) -> DecodedImage:
            return codec.decode(data, tilings if wanted is None else tuple(wanted))

        yield Decoder(tiled, nvimgcodec)
        return
    if settings.decode_mode == "thread":

        def here(data: bytes, wanted: Sequence[Tiling] | None) -> DecodedImage:
            cut = tilings if wanted is None else tuple(wanted)
            return decode_image(data, target, limits, cut)

        yield Decoder(tiled, here)
        return
    size = settings.decode_parallelism()
    with DecodeProcesses(
        size,
        target,
        limits,
        timeout_s=settings.decode_timeout_s,
        log=log_as,
        memory_bytes=settings.decode_process_memory(),
        tilings=tilings,
    ) as pool:
        log.info(
            "decode processes started",
            extra={
                "processes": size,
                "memory_bytes_each": settings.decode_process_memory(),
                "tilings": [f"{t.tile}:{t.overlap:g}" for t in tilings],
            },
        )
        yield Decoder(tiled, pool)
