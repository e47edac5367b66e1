"""The one S3 URI parser."""

from __future__ import annotations

import pytest

from models import s3uri


def test_bucket_and_key_split_at_the_first_slash_and_the_key_stays_literal() -> None:
    assert s3uri.split("s3://photos/a/b%20c+d.jpg") == ("photos", "a/b%20c+d.jpg")
    assert s3uri.split("S3://photos/x") == ("photos", "x")
    assert s3uri.split("s3://photos", key_required=False) == ("photos", "")
    assert s3uri.split("s3://photos/pre/", key_required=False) == ("photos", "pre/")


@pytest.mark.parametrize(
    "uri",
    ["photos/a.jpg", "http://photos/a.jpg", "s3:///a.jpg", "s3://Photos/a.jpg", "s3://ab/a.jpg"],
)
def test_what_is_not_an_s3_object_is_refused(uri: str) -> None:
    with pytest.raises(ValueError):
        s3uri.split(uri)


def test_an_object_uri_needs_a_key() -> None:
    with pytest.raises(ValueError, match="no object key"):
        s3uri.split("s3://photos/")
