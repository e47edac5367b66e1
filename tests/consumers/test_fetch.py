"""S3Fetcher against moto's S3 server (the local stack), plus the error mapping."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError

from consumers.domain import AssetRequest, PermanentError, Reason, TransientError
from consumers.fetch import FetchSettings, S3Fetcher, classify_s3_error, split_prefix

FAST = FetchSettings(
    workers=4, attempts=3, botocore_attempts=2, connect_timeout_s=1, read_timeout_s=5
)


def request(bucket: str, key: str) -> AssetRequest:
    uri = f"s3://{bucket}/{key}"
    return AssetRequest(asset_id=uri, uri=uri, bucket=bucket, key=key)


def client_error(code: str, status: int, operation: str = "GetObject") -> ClientError:
    return ClientError(
        {"Error": {"Code": code, "Message": "m"}, "ResponseMetadata": {"HTTPStatusCode": status}},
        operation,
    )


@pytest.fixture
def bucket(s3: Any, new_bucket: Callable[..., str]) -> str:
    name = new_bucket("fetch")
    for key, body in {
        "a.jpg": b"x" * 1000,
        "big.jpg": b"y" * 1001,
        "empty.jpg": b"",
        "dir/with space+plus é.png": b"z",
    }.items():
        s3.put_object(Bucket=name, Key=key, Body=body)
    return name


@pytest.fixture
def fetcher() -> Any:
    with S3Fetcher(FetchSettings(max_object_bytes=1000, workers=4)) as instance:
        yield instance


def reason(fetcher: S3Fetcher, req: AssetRequest) -> Reason:
    with pytest.raises(PermanentError) as info:
        fetcher.fetch(req)
    return info.value.reason


def test_fetch_and_connection_pool_matches_workers(fetcher: S3Fetcher, bucket: str) -> None:
    assert fetcher.fetch(request(bucket, "a.jpg")) == b"x" * 1000
    assert fetcher.fetch(request(bucket, "dir/with space+plus é.png")) == b"z"
    assert fetcher._client.meta.config.max_pool_connections == 4
    assert fetcher._client.meta.config.retries["mode"] == "standard"


def test_size_is_checked_before_the_body_is_read(fetcher: S3Fetcher, bucket: str) -> None:
    sent: list[tuple[str, str | None]] = []
    fetcher._client.meta.events.register(
        "before-send.s3",
        lambda request, **_: sent.append((request.method, request.headers.get("Range"))),
    )
    assert reason(fetcher, request(bucket, "big.jpg")) is Reason.OBJECT_TOO_LARGE
    assert sent == [("GET", b"bytes=0-999")]


def test_zero_byte_object_gives_no_bytes(fetcher: S3Fetcher, bucket: str) -> None:
    assert fetcher.fetch(request(bucket, "empty.jpg")) == b""


def test_missing_key_and_bucket(fetcher: S3Fetcher, bucket: str) -> None:
    assert reason(fetcher, request(bucket, "nope.jpg")) is Reason.OBJECT_NOT_FOUND
    assert reason(fetcher, request(f"{bucket}-gone", "a.jpg")) is Reason.OBJECT_NOT_FOUND


def test_bucket_s3_cannot_address(fetcher: S3Fetcher) -> None:
    assert reason(fetcher, request("no such bucket", "a.jpg")) is Reason.UNSUPPORTED_URI


def test_fetch_many_in_parallel(fetcher: S3Fetcher, s3: Any, bucket: str) -> None:
    keys = [f"many/{i}.jpg" for i in range(25)]
    for key in keys:
        s3.put_object(Bucket=bucket, Key=key, Body=key.encode())
    requests = [request(bucket, key) for key in keys] + [request(bucket, "missing.jpg")]
    results = dict((req.key, out) for req, out in fetcher.fetch_many(iter(requests)))
    assert {key: results[key] for key in keys} == {key: key.encode() for key in keys}
    error = results["missing.jpg"]
    assert isinstance(error, PermanentError) and error.reason is Reason.OBJECT_NOT_FOUND


def test_list_objects_pages_and_skips_folder_markers(
    fetcher: S3Fetcher, s3: Any, bucket: str
) -> None:
    s3.put_object(Bucket=bucket, Key="dir/", Body=b"")
    listed = list(fetcher.list_objects(f"s3://{bucket}/", page_size=2))
    assert sorted(r.key for r in listed) == [
        "a.jpg",
        "big.jpg",
        "dir/with space+plus é.png",
        "empty.jpg",
    ]
    [one] = fetcher.list_objects(f"s3://{bucket}/dir")
    assert one.asset_id == f"s3://{bucket}/dir/with space+plus é.png"
    assert one.size == 1 and one.etag and '"' not in one.etag


def test_split_prefix() -> None:
    assert split_prefix("s3://photos") == ("photos", "")
    assert split_prefix("s3://photos/p/q") == ("photos", "p/q")
    assert split_prefix("S3://photos/p") == ("photos", "p")
    for bad in ("file:///etc", "photos/p", "s3:///p", "s3://Not_A_Bucket!/p"):
        with pytest.raises(ValueError):
            split_prefix(bad)


def test_connection_refused_is_transient_after_bounded_retries(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", f"http://127.0.0.1:{free_port()}")
    sleeps: list[float] = []
    started = time.monotonic()
    with S3Fetcher(FAST, sleep=sleeps.append) as fetcher, pytest.raises(TransientError):
        fetcher.fetch(request("photos", "a.jpg"))
    assert len(sleeps) == FAST.attempts - 1
    assert time.monotonic() - started < 10


class Flaky:
    """A real client whose first ``failures`` GETs fail with ``error``."""

    def __init__(self, real: Any, error: Exception, failures: int) -> None:
        self.real, self.error, self.failures, self.calls = real, error, failures, 0
        self.meta = real.meta

    def get_object(self, **kwargs: Any) -> Any:
        self.calls += 1
        if self.calls <= self.failures:
            raise self.error
        return self.real.get_object(**kwargs)

    def close(self) -> None:
        self.real.close()


def test_transient_server_errors_are_retried(fetcher: S3Fetcher, bucket: str) -> None:
    flaky = Flaky(fetcher._client, client_error("SlowDown", 503), failures=2)
    with S3Fetcher(FAST, client=flaky, sleep=lambda _: None) as retrying:
        assert retrying.fetch(request(bucket, "a.jpg")) == b"x" * 1000
    assert flaky.calls == 3
    flaky = Flaky(fetcher._client, client_error("InternalError", 500), failures=5)
    with (
        S3Fetcher(FAST, client=flaky, sleep=lambda _: None) as retrying,
        pytest.raises(TransientError),
    ):
        retrying.fetch(request(bucket, "a.jpg"))
    assert flaky.calls == FAST.attempts


@pytest.mark.parametrize(
    ("code", "status", "expected"),
    [
        ("AccessDenied", 403, Reason.ACCESS_DENIED),
        ("403", 403, Reason.ACCESS_DENIED),
        ("InvalidObjectState", 403, Reason.ACCESS_DENIED),
        ("NoSuchKey", 404, Reason.OBJECT_NOT_FOUND),
        ("NoSuchBucket", 404, Reason.OBJECT_NOT_FOUND),
        ("404", 404, Reason.OBJECT_NOT_FOUND),
        ("InvalidAccessKeyId", 403, TransientError),
        ("SignatureDoesNotMatch", 403, TransientError),
        ("ExpiredToken", 400, TransientError),
        ("SlowDown", 503, TransientError),
        ("InternalError", 500, TransientError),
        ("RequestTimeout", 400, TransientError),
        ("Throttling", 400, TransientError),
        ("Unauthorized", 401, TransientError),
        ("TooManyRequests", 429, TransientError),
        ("RequestTimeout", 408, TransientError),
        ("ServiceUnavailable", 503, TransientError),
        # every other 4xx is the request's fault: retrying it would never end
        ("KeyTooLongError", 400, Reason.FETCH_REJECTED),
        ("InvalidArgument", 400, Reason.FETCH_REJECTED),
        ("BadRequest", 400, Reason.FETCH_REJECTED),
        ("MethodNotAllowed", 405, Reason.FETCH_REJECTED),
        ("UnknownTeapot", 418, Reason.FETCH_REJECTED),
    ],
)
def test_client_error_mapping(code: str, status: int, expected: Any) -> None:
    error = classify_s3_error(client_error(code, status), "s3://b/k")
    if isinstance(expected, Reason):
        assert isinstance(error, PermanentError) and error.reason is expected
    else:
        assert isinstance(error, TransientError)


def test_a_key_the_server_refuses_is_rejected_not_retried(fetcher: S3Fetcher, bucket: str) -> None:
    """Through the parser's guard (a test of the fetcher alone): the real server's 4xx for a
    key over S3's 1,024-byte limit ends at once as ``fetch_rejected`` or ``object_not_found``,
    never as a transient error retried for ever."""
    request = AssetRequest(asset_id="x", uri=f"s3://{bucket}/x", bucket=bucket, key="k" * 1500)
    with pytest.raises(PermanentError) as info:
        fetcher.fetch(request)
    assert info.value.reason in (Reason.FETCH_REJECTED, Reason.OBJECT_NOT_FOUND)


def test_reserve_is_called_with_the_size_before_the_body_is_read(
    fetcher: S3Fetcher, s3: Any, bucket: str
) -> None:
    s3.put_object(Bucket=bucket, Key="sized", Body=b"z" * 234)
    request = AssetRequest(asset_id="s", uri=f"s3://{bucket}/sized", bucket=bucket, key="sized")
    sizes: list[int] = []
    assert fetcher.fetch(request, sizes.append) == b"z" * 234
    assert sizes == [234]


def test_readable_is_false_when_the_object_is_gone(
    fetcher: S3Fetcher, s3: Any, bucket: str
) -> None:
    s3.put_object(Bucket=bucket, Key="here", Body=b"x")
    assert fetcher.readable(bucket, "here") is True
    assert fetcher.readable(bucket, "not-here") is False


class _HeadClient:
    """A client whose HEAD answers what a test needs (AWS's 403 for a missing key without
    s3:ListBucket cannot be had from moto)."""

    def __init__(self, code: str, status: int) -> None:
        self.code, self.status = code, status

    def head_object(self, **_: Any) -> None:
        raise client_error(self.code, self.status)

    def close(self) -> None:
        pass


@pytest.mark.parametrize(
    ("code", "status", "outcome"),
    [
        ("403", 403, False),  # AWS: a missing key, the role lacks s3:ListBucket
        ("AccessDenied", 403, False),  # an object the service may not read has no tags to keep
        ("404", 404, False),
        ("BadRequest", 400, PermanentError),
        ("InternalError", 500, TransientError),
    ],
)
def test_readable_from_the_heads_answer(code: str, status: int, outcome: Any) -> None:
    with S3Fetcher(FAST, client=_HeadClient(code, status), sleep=lambda _s: None) as fetcher:
        if isinstance(outcome, bool):
            assert fetcher.readable("b", "k") is outcome
        else:
            with pytest.raises(outcome):
                fetcher.readable("b", "k")


def test_unknown_exceptions_are_not_classified() -> None:
    assert classify_s3_error(KeyError("x"), "s3://b/k") is None
    assert isinstance(classify_s3_error(ConnectionResetError(), "s3://b/k"), TransientError)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def locked_s3() -> Iterator[dict[str, str]]:
    """A moto server enforcing IAM (after 4 unauthenticated set-up calls) and a reader with no
    policy: the environment under which GetObject answers a real 403 AccessDenied."""
    port = free_port()
    env = dict(os.environ, INITIAL_NO_AUTH_ACTION_COUNT="4")
    server = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), 0.2).close()
                break
            except OSError:
                time.sleep(0.1)
        url = f"http://127.0.0.1:{port}"
        admin = {
            "endpoint_url": url,
            "region_name": "us-east-1",
            "aws_access_key_id": "testing",
            "aws_secret_access_key": "testing",
        }
        boto3.client("s3", **admin).create_bucket(Bucket="locked")
        boto3.client("s3", **admin).put_object(Bucket="locked", Key="a.jpg", Body=b"x")
        iam = boto3.client("iam", **admin)
        iam.create_user(UserName="reader")
        key = iam.create_access_key(UserName="reader")["AccessKey"]
        yield {
            "AWS_ENDPOINT_URL_S3": url,
            "AWS_ACCESS_KEY_ID": key["AccessKeyId"],
            "AWS_SECRET_ACCESS_KEY": key["SecretAccessKey"],
        }
    finally:
        server.terminate()
        server.wait(10)


@pytest.mark.integration
def test_access_denied_by_the_server(
    locked_s3: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in locked_s3.items():
        monkeypatch.setenv(name, value)
    with S3Fetcher(FAST, sleep=lambda _: None) as fetcher:
        gets: list[str] = []
        fetcher._client.meta.events.register(
            "before-send.s3", lambda request, **_: gets.append(request.url)
        )
        assert reason(fetcher, request("locked", "a.jpg")) is Reason.ACCESS_DENIED
    assert len(gets) == 1
