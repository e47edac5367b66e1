"""Logging set-up: JSON lines by default (one object per record), plain text on request."""

from __future__ import annotations

import logging
import sys

from pythonjsonlogger.json import JsonFormatter


def configure_logging(level: str = "INFO", fmt: str = "json") -> None:
    """Send every log record, and every Python warning (Pillow's decompression-bomb warning),
    to stderr, as JSON objects unless ``fmt`` is ``"text"``."""
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(
            JsonFormatter(
                "%(asctime)s %(levelname)s %(name)s %(message)s",
                rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
            )
        )
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    logging.captureWarnings(True)
    logging.getLogger("kafka").setLevel(max(logging.WARNING, root.level))
    logging.getLogger("botocore").setLevel(max(logging.WARNING, root.level))
