"""The one parser of ``s3://bucket/key`` URIs, shared by ``models/`` and the service.

Syntax only: the scheme, a bucket name S3 accepts, and everything after the first ``/`` as the
key, literally (a key is not URL-decoded). What a caller then allows (an allow-list, keys a
proxy would resolve) is its own policy: :func:`consumers.events.split_s3_uri`.
"""

from __future__ import annotations

import re

SCHEME = "s3"
# S3's rules for bucket names (3 to 63 lower-case letters, digits, dots, hyphens; ends
# alphanumeric), with the underscore of older and S3-compatible servers' names.
BUCKET_NAME = re.compile(r"[a-z0-9][a-z0-9.\-_]{1,61}[a-z0-9]")


def is_s3(uri: object) -> bool:
    """True when ``uri`` is an ``s3://`` URI (any case of the scheme)."""
    return str(uri)[:5].lower() == SCHEME + "://"


def is_bucket_name(name: str) -> bool:
    return BUCKET_NAME.fullmatch(name) is not None


def split(uri: str, *, key_required: bool = True) -> tuple[str, str]:
    """``s3://bucket/a/b`` -> ``("bucket", "a/b")``.

    ``ValueError`` for another scheme, a bucket S3 would not accept, or (``key_required``) no
    key; with ``key_required=False`` ``s3://bucket`` and ``s3://bucket/prefix`` are a bucket
    and a (possibly empty) prefix.
    """
    scheme, sep, rest = str(uri).partition("://")
    if not sep or scheme.lower() != SCHEME:
        raise ValueError(f"not an s3:// URI: {uri!r}")
    bucket, _, key = rest.partition("/")
    if not is_bucket_name(bucket):
        raise ValueError(f"not an S3 bucket name: {bucket!r} in {uri!r}")
    if key_required and not key:
        raise ValueError(f"no object key in {uri!r}")
    return bucket, key
