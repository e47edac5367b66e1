"""What an event's text may hold before it reaches S3, the store or a log line.

Pure. PostgreSQL refuses NUL in text, its primary-key index refuses rows over about 2.7 kB,
S3 refuses keys over 1,024 UTF-8 bytes and some servers (and path-normalising proxies) resolve
``.``/``..`` key segments. A field limit counted in characters lets a 4-byte character through
four times over, so every limit here is in UTF-8 bytes.
"""

from __future__ import annotations

import re

MAX_KEY_BYTES = 1024  # S3's own limit on object keys
MAX_ID_BYTES = 1100  # s3:// + a 63-byte bucket + / + a 1,024-byte key fits
MAX_SHORT_BYTES = 256  # etags, tenants, content types, function names

# C0 and C1 control characters and DEL: never part of an id, a key or a label.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def text_problem(value: str, max_bytes: int) -> str | None:
    """Why ``value`` may not be used (None when it may): control characters, lone surrogates,
    more than ``max_bytes`` UTF-8 bytes."""
    found = _CONTROL.search(value)
    if found:
        return f"contains the control character {found.group()!r} at {found.start()}"
    try:
        size = len(value.encode("utf-8"))
    except UnicodeEncodeError as exc:
        return f"contains a lone surrogate at {exc.start}"
    if size > max_bytes:
        return f"is {size} UTF-8 bytes, over the limit of {max_bytes}"
    return None


def key_problem(key: str) -> str | None:
    """Why an S3 object key may not be fetched: :func:`text_problem` at 1,024 bytes, or a
    ``.``/``..`` segment (a 400 from many servers, a path a proxy would resolve)."""
    problem = text_problem(key, MAX_KEY_BYTES)
    if problem:
        return problem
    if any(segment in (".", "..") for segment in re.split(r"[/\\]", key)):
        return "has a '.' or '..' segment"  # backslashes too: some proxies read them as /
    return None
