"""The decode function a command uses, built from the settings: the service and
``tagfleet tag`` decode the same way (limits, child processes, memory limits, timeouts)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from functools import partial

from consumers.decode import DecodedImage, DecodeLimits, decode_image
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


@contextmanager
def open_decoder(
    settings: TaggingSettings,
    target: int,
    limits: DecodeLimits,
    log_as: tuple[str, str] = ("WARNING", "text"),
    tilings: Sequence[Tiling] = (),
) -> Iterator[Callable[[bytes], DecodedImage]]:
    """The decode function of ``settings.decode_mode``: a pool of child processes (closed on
    exit; they log at ``log_as``: level and format) or :func:`decode_image` in the caller's
    thread. ``tilings`` (the fleet's, :attr:`models.fleet.Fleet.tilings`): each image also
    comes with its tiles for each (the decode is then full-size, not draft-scaled)."""
    tilings = tuple(tilings)
    if settings.decode_mode == "thread":
        yield partial(decode_image, target=target, limits=limits, tilings=tilings)
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
        yield pool
