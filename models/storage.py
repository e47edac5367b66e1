"""Byte-level access to local paths and ``s3://`` URIs, the one place ``models/`` talks to S3.

Local paths and ``s3://bucket/key`` URIs are accepted everywhere a location is. S3 goes through
boto3's default chain, so the endpoint comes from ``AWS_ENDPOINT_URL_S3`` / ``AWS_ENDPOINT_URL``.
Errors are raised as they come (``FileNotFoundError`` for a missing local file or S3 key).
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Any

from models import s3uri


def is_s3(uri: str | Path) -> bool:
    """True when ``uri`` is an ``s3://`` URI."""
    return s3uri.is_s3(uri)


def split_s3(uri: str) -> tuple[str, str]:
    """``s3://bucket/a/b`` -> ``("bucket", "a/b")`` (:func:`models.s3uri.split`; the key may be
    empty: a prefix)."""
    return s3uri.split(uri, key_required=False)


def join(base: str | Path, name: str) -> str:
    """Join a file name onto a local directory or an ``s3://`` prefix."""
    if is_s3(base):
        return str(base).rstrip("/") + "/" + name
    return str(Path(base) / name)


def _client() -> Any:
    # keyed by the endpoint so that tests (and processes) that change it get a fresh client
    return _client_for(os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL"))


@lru_cache(maxsize=4)
def _client_for(endpoint: str | None) -> Any:
    import boto3

    return boto3.client("s3")


def read_bytes(uri: str | Path) -> bytes:
    """Return the content of a local file or S3 object; ``FileNotFoundError`` when absent."""
    if not is_s3(uri):
        return Path(uri).read_bytes()
    bucket, key = split_s3(str(uri))
    client = _client()
    try:
        return client.get_object(Bucket=bucket, Key=key)["Body"].read()
    except client.exceptions.NoSuchKey as exc:
        raise FileNotFoundError(f"{uri} does not exist") from exc


def write_bytes(uri: str | Path, data: bytes) -> None:
    """Write ``data`` to a local file (creating parents) or an S3 object."""
    if not is_s3(uri):
        path = Path(uri)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        return
    bucket, key = split_s3(str(uri))
    _client().put_object(Bucket=bucket, Key=key, Body=data)


def write_atomic(uri: str | Path, data: bytes) -> None:
    """Write ``data`` so that a reader sees the old content or the new, never a part: a local
    file through a temporary file and a rename, an S3 object by one PUT (atomic in S3)."""
    if is_s3(uri):
        write_bytes(uri, data)
        return
    path = Path(uri)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def change_token(uri: str | Path) -> str | None:
    """What changes when the file or object changes: a local file's mtime and size, an S3
    object's ETag; ``None`` when it does not exist."""
    if not is_s3(uri):
        try:
            stat = Path(uri).stat()
        except FileNotFoundError:
            return None
        return f"{stat.st_mtime_ns}:{stat.st_size}"
    try:
        return str(read_head(str(uri)).get("ETag", ""))
    except FileNotFoundError:
        return None


def exists(uri: str | Path) -> bool:
    """True when a local path or S3 object exists."""
    if not is_s3(uri):
        return Path(uri).exists()
    try:
        read_head(str(uri))
    except FileNotFoundError:
        return False
    return True


def read_head(uri: str) -> dict[str, Any]:
    """HEAD an S3 object; ``FileNotFoundError`` when absent."""
    import botocore.exceptions

    bucket, key = split_s3(uri)
    try:
        return _client().head_object(Bucket=bucket, Key=key)
    except botocore.exceptions.ClientError as exc:
        if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
            raise FileNotFoundError(f"{uri} does not exist") from exc
        raise


def list_files(prefix: str | Path) -> list[str]:
    """All files below a local directory or S3 prefix, as full paths/URIs, sorted."""
    if not is_s3(prefix):
        return sorted(str(p) for p in Path(prefix).rglob("*") if p.is_file())
    bucket, key = split_s3(str(prefix))
    key = key.rstrip("/") + "/" if key else ""
    out: list[str] = []
    for page in _client().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=key):
        out.extend(f"s3://{bucket}/{obj['Key']}" for obj in page.get("Contents", []))
    return sorted(out)
