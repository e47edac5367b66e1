"""The review page's images: fetched from S3 by the API and sent as a small JPEG, so the
bucket is never made public and the browser never holds S3 credentials."""

from __future__ import annotations

import io
from functools import lru_cache
from typing import Any

from fastapi import HTTPException
from PIL import Image

_MAX_BYTES = 50_000_000
_FORMATS = ["JPEG", "PNG", "WEBP", "GIF"]
_SIDE = 512


@lru_cache(maxsize=1)
def _client() -> Any:
    import boto3

    return boto3.client("s3")  # endpoint and credentials from boto3's own chain


def thumbnail(uri: str) -> bytes:
    """A JPEG of at most 512 px a side; 404 when the object is gone, 422 when unusable."""
    bucket, _, key = uri.removeprefix("s3://").partition("/")
    if not uri.startswith("s3://") or not bucket or not key:
        raise HTTPException(422, "this item's image is not an s3:// object")
    try:
        body = _client().get_object(Bucket=bucket, Key=key, Range=f"bytes=0-{_MAX_BYTES}")
        data = body["Body"].read(_MAX_BYTES + 1)
    except Exception as exc:  # botocore's errors: missing, forbidden, unreachable
        raise HTTPException(404, "the image cannot be read") from exc
    if len(data) > _MAX_BYTES:
        raise HTTPException(422, "the image is too large to preview")
    try:
        with Image.open(io.BytesIO(data), formats=_FORMATS) as opened:
            opened.draft("RGB", (_SIDE, _SIDE))
            img = opened.convert("RGB")
        img.thumbnail((_SIDE, _SIDE))
        out = io.BytesIO()
        img.save(out, "JPEG", quality=85)
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        raise HTTPException(422, "the image cannot be decoded") from exc
    return out.getvalue()
