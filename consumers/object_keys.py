"""Which object a notification record names: S3 servers disagree on how they write its key.

AWS and MinIO URL-encode the key (a space as ``+``, MinIO with Go's ``QueryEscape``);
VersityGW sends it raw. Read one way, ``a+b.jpg`` is the object ``a b.jpg``; read the other,
``a+b.jpg``. Pure: no I/O. The rule (docs/events.md, "Object keys"):

1. a key holding a character URL-encoding never leaves as it is (a space, a non-ASCII
   character, ``#``, ``&``, ``?``, a ``%`` not followed by two hex digits, ...) is raw;
2. else a record with VersityGW's marks (``userIdentity.PrincipalId`` with a capital P, a
   bucket ARN of the form ``arn:aws:s3:::/bucket/key``) is read raw, and the decoded reading
   is its alternative;
3. else (AWS, MinIO) the key is decoded, and the raw reading is its alternative.

The fetch stage tries the alternative when the first reading answers 404
(``tagfleet_key_readings_total{reading="alternative"}``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import unquote_plus

# What a URL-encoded key can hold: unreserved characters, the path separator, escapes, '+'.
_ENCODED = re.compile(r"(?:[A-Za-z0-9\-._~/+*!'(),=:@$;]|%[0-9A-Fa-f]{2})*")


def key_readings(key: str, raw_by_source: bool) -> tuple[str, str | None]:
    """``(key to try first, the other reading or None)``; ``raw_by_source``: the record bears
    VersityGW's marks (:func:`from_versitygw`)."""
    if not _ENCODED.fullmatch(key):
        return key, None
    try:
        decoded = unquote_plus(key, errors="strict")
    except UnicodeDecodeError:
        return key, None  # no decoded reading exists: the key is raw
    if decoded == key:
        return key, None
    if raw_by_source:
        return key, decoded
    return decoded, key


def from_versitygw(user_identity: Mapping[str, Any] | None, bucket_arn: str | None) -> bool:
    """Whether a notification record bears VersityGW's marks (observed on v1.8.0)."""
    if user_identity is not None and "PrincipalId" in user_identity:
        return True
    return bucket_arn is not None and bucket_arn.startswith("arn:aws:s3:::/")
