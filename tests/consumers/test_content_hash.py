"""The content hash of fetched bytes (issue 19 item 5): computed, or S3's own whole-object
ChecksumSHA256 when it sent one."""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Callable
from typing import Any

import pytest

from consumers.domain import AssetRequest
from consumers.fetch import Fetched, FetchSettings, S3Fetcher, _checksum_sha256
from consumers.stages.prepare import content_hash

DATA = b"\xff\xd8 not really a jpeg, but bytes all the same"
HEX = hashlib.sha256(DATA).hexdigest()


def test_fetched_bytes_carry_their_sha256() -> None:
    assert Fetched(DATA).sha256 == HEX
    assert Fetched(DATA, sha256="ab" * 32).sha256 == "ab" * 32
    assert content_hash(Fetched(DATA)) == HEX
    assert content_hash(DATA) == HEX  # bytes read another way (tagfleet tag's local files)


def _response(**fields: Any) -> dict[str, Any]:
    return {"ContentLength": len(DATA), **fields}


def test_s3s_checksum_is_taken_only_when_it_is_the_whole_objects() -> None:
    own = base64.b64encode(hashlib.sha256(DATA).digest()).decode()
    assert _checksum_sha256(_response(ChecksumSHA256=own), len(DATA)) == HEX
    assert _checksum_sha256(_response(), len(DATA)) is None
    # a multipart object's checksum of its parts' checksums
    assert _checksum_sha256(_response(ChecksumSHA256=own + "-3"), len(DATA)) is None
    assert _checksum_sha256(_response(ChecksumSHA256=own, ChecksumType="COMPOSITE"), 10) is None
    # a range shorter than the object
    ranged = _response(ChecksumSHA256=own, ContentRange=f"bytes 0-9/{len(DATA)}")
    assert _checksum_sha256(ranged, 10) is None
    assert _checksum_sha256(_response(ChecksumSHA256="not base64!"), len(DATA)) is None


@pytest.mark.integration
def test_the_fetcher_hashes_what_it_fetched(s3: Any, new_bucket: Callable[..., str]) -> None:
    bucket = new_bucket("hash")
    s3.put_object(Bucket=bucket, Key="plain.jpg", Body=DATA)
    s3.put_object(Bucket=bucket, Key="checked.jpg", Body=DATA, ChecksumAlgorithm="SHA256")
    s3.put_object(Bucket=bucket, Key="other.jpg", Body=DATA + b"!")
    with S3Fetcher(FetchSettings(max_object_bytes=1000, workers=2)) as fetcher:
        got = {
            key: fetcher.fetch(
                AssetRequest(f"s3://{bucket}/{key}", f"s3://{bucket}/{key}", bucket, key)
            )
            for key in ("plain.jpg", "checked.jpg", "other.jpg")
        }
    assert got["plain.jpg"].sha256 == got["checked.jpg"].sha256 == HEX  # type: ignore[attr-defined]
    assert got["other.jpg"].sha256 == hashlib.sha256(DATA + b"!").hexdigest()  # type: ignore[attr-defined]
