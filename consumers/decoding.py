"""The decode function a command uses, built from the settings: the service and
``tagfleet tag`` decode the same way (limits, child processes, memory limits, timeouts)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial

from consumers.decode import DecodedImage, DecodeLimits, decode_image
from consumers.decode_processes import DecodeProcesses
from consumers.settings import TaggingSettings

log = logging.getLogger(__name__)


def decode_limits(settings: TaggingSettings) -> DecodeLimits:
    """What the decoder accepts, from the settings."""
    return DecodeLimits(
        max_pixels=settings.max_pixels,
        formats=settings.image_formats,
        max_decode_bytes=settings.max_decode_bytes,
    )


@contextmanager
def open_decoder(
    settings: TaggingSettings,
    target: int,
    limits: DecodeLimits,
    log_as: tuple[str, str] = ("WARNING", "text"),
) -> Iterator[Callable[[bytes], DecodedImage]]:
    """The decode function of ``settings.decode_mode``: a pool of child processes (closed on
    exit; they log at ``log_as``: level and format) or :func:`decode_image` in the caller's
    thread."""
    if settings.decode_mode == "thread":
        yield partial(decode_image, target=target, limits=limits)
        return
    size = settings.decode_parallelism()
    with DecodeProcesses(
        size,
        target,
        limits,
        timeout_s=settings.decode_timeout_s,
        log=log_as,
        memory_bytes=settings.decode_process_memory(),
    ) as pool:
        log.info(
            "decode processes started",
            extra={"processes": size, "memory_bytes_each": settings.decode_process_memory()},
        )
        yield pool
