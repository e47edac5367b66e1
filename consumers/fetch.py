"""S3 (or MinIO) object fetcher: bounded parallel GETs, size limit first, typed errors.

The endpoint, region and credentials come from boto3's own chain (``AWS_ENDPOINT_URL_S3``,
``AWS_ENDPOINT_URL``, ``AWS_DEFAULT_REGION``, ...).

Retry budget: every S3 call is tried by botocore up to ``botocore_attempts`` times (``standard``
mode: connection errors, timeouts, 5xx and throttling, with its own jittered backoff of at most
``2 ** (try - 1)`` seconds), and that call is repeated up to ``attempts`` times here, sleeping a
full-jitter backoff (``backoff_base_s * 2 ** (n - 1)``, capped at ``backoff_cap_s``) in between.
With the defaults that is at most 3 x 3 = 9 requests and about 10 s of sleeping (plus the
connect and read timeouts of the requests that hang) before :class:`TransientError` is raised.
The caller retries that within its own per-item budget (``consumers.stages.Preparer``).

Errors are classified from the HTTP status: a 4xx is the request's fault and permanent, except
the cases S3 documents as passing (expired or not yet valid credentials and other 401/403s
caused by our configuration, any 401, 408 request timeout, 429 and 503 SlowDown throttling); 5xx,
timeouts and connection errors are transient.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import Any, TypeVar

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError, ParamValidationError
from urllib3.exceptions import HTTPError as Urllib3Error

from consumers.domain import AssetRequest, PermanentError, Reason, TransientError
from consumers.retry import backoff_s
from models import s3uri

T = TypeVar("T")
_NOT_FOUND = frozenset({"NoSuchKey", "NoSuchBucket", "NoSuchVersion", "NotFound", "404"})
_DENIED = frozenset({"AccessDenied", "AllAccessDisabled", "InvalidObjectState", "403"})
# 403s and redirects caused by our own configuration, not by the object: retry, never DLQ.
_SERVICE_FAULTS = frozenset(
    {
        "InvalidAccessKeyId",
        "SignatureDoesNotMatch",
        "ExpiredToken",
        "InvalidToken",
        "TokenRefreshRequired",
        "RequestTimeTooSkewed",
        "AuthorizationHeaderMalformed",
        "PermanentRedirect",
        "301",
    }
)
_EMPTY_RANGE = frozenset({"InvalidRange", "416"})
_TRANSIENT_STATUS = frozenset({408, 429})
_THROTTLED = frozenset({"SlowDown", "Throttling", "ThrottlingException", "RequestTimeout"})


@dataclass(frozen=True, slots=True)
class FetchSettings:
    """Limits and retry policy of :class:`S3Fetcher` (see the module docstring for the budget)."""

    max_object_bytes: int = 50_000_000
    workers: int = 16
    connect_timeout_s: float = 5.0
    read_timeout_s: float = 30.0
    botocore_attempts: int = 3
    attempts: int = 3
    backoff_base_s: float = 0.2
    backoff_cap_s: float = 5.0


class S3Fetcher:
    """Fetches objects with one boto3 client and a thread pool of ``settings.workers``.

    The client's connection pool has as many connections as the pool has threads. Use as a
    context manager, or call :meth:`close`.
    """

    def __init__(
        self,
        settings: FetchSettings | None = None,
        *,
        client: Any = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.settings = settings or FetchSettings()
        self._client = client or make_s3_client(self.settings)
        self._pool = ThreadPoolExecutor(self.settings.workers, thread_name_prefix="s3-fetch")
        self._sleep = sleep

    def fetch(self, request: AssetRequest, reserve: Callable[[int], None] | None = None) -> bytes:
        """The bytes of ``request``'s object (``b""`` for a zero-byte object). Blocks.

        One ranged GET: the size (from ``Content-Range``) is checked before the body is read,
        and ``reserve(size)``, when given, is called then (it may block: that is how the
        caller bounds the bytes it holds); each attempt that reaches the body calls it once.
        Raises :class:`PermanentError` ``object_too_large``, ``object_not_found`` (404,
        NoSuchKey, NoSuchBucket), ``access_denied`` (403 AccessDenied), ``fetch_rejected``
        (any other 4xx: a key too long, a malformed request), ``unsupported_uri`` (a bucket or
        key S3 cannot address), and :class:`TransientError` once the retry budget is spent on
        5xx, throttling, timeouts, connection or credential errors.
        """
        return self._retrying(lambda: self._get(request.bucket, request.key, reserve), request.uri)

    def readable(self, bucket: str, key: str) -> bool:
        """Whether the service can still read the object (a HEAD answers 200). Blocks.

        False for a 404, and for a 403 too: without ``s3:ListBucket`` AWS answers a HEAD of a
        missing key with 403, and an object the service may not read has no tags of its to
        keep. Raises :class:`TransientError` once the retry budget is spent (5xx, throttling,
        credentials) and :class:`PermanentError` for other refusals (another 4xx).
        """
        uri = f"s3://{bucket}/{key}"

        def head() -> bool:
            try:
                self._client.head_object(Bucket=bucket, Key=key)
            except ClientError as exc:
                error = classify_s3_error(exc, uri)
                if isinstance(error, PermanentError) and error.reason in (
                    Reason.OBJECT_NOT_FOUND,
                    Reason.ACCESS_DENIED,
                ):
                    return False
                raise
            return True

        return self._retrying(head, uri)

    def fetch_many(
        self, requests: Iterable[AssetRequest]
    ) -> Iterator[tuple[AssetRequest, bytes | Exception]]:
        """Fetch in parallel; yield each request with its bytes or its error, as they finish.

        At most ``2 * workers`` fetches are queued at once, so ``requests`` may be unbounded.
        Errors are those of :meth:`fetch`, yielded, not raised. Closing the iterator early
        cancels what has not started.
        """
        window = 2 * self.settings.workers
        pending: dict[Future[bytes], AssetRequest] = {}
        try:
            for request in requests:
                pending[self._pool.submit(self.fetch, request)] = request
                if len(pending) >= window:
                    yield from _completed(pending)
            while pending:
                yield from _completed(pending)
        finally:
            for future in pending:
                future.cancel()

    def list_objects(self, uri_prefix: str, page_size: int = 1000) -> Iterator[AssetRequest]:
        """One request per object under ``s3://bucket[/prefix]`` (folder markers skipped).

        Pages are fetched lazily, each with the retry policy of :meth:`fetch`. Raises
        ``ValueError`` for a URI that is not ``s3://``, :class:`PermanentError` or
        :class:`TransientError` as :meth:`fetch` does.
        """
        bucket, prefix = split_prefix(uri_prefix)
        token: str | None = None
        while True:
            extra = {"ContinuationToken": token} if token else {}
            list_page = functools.partial(
                self._client.list_objects_v2,
                Bucket=bucket,
                Prefix=prefix,
                MaxKeys=page_size,
                **extra,
            )
            page = self._retrying(list_page, uri_prefix)
            for item in page.get("Contents", []):
                if item["Key"].endswith("/") and item.get("Size", 0) == 0:
                    continue
                uri = f"s3://{bucket}/{item['Key']}"
                yield AssetRequest(
                    asset_id=uri,
                    uri=uri,
                    bucket=bucket,
                    key=item["Key"],
                    etag=item.get("ETag", "").strip('"') or None,
                    size=item.get("Size"),
                )
            token = page.get("NextContinuationToken")
            if not page.get("IsTruncated") or not token:
                return

    def close(self) -> None:
        """Cancel queued fetches, wait for running ones, close the connection pool."""
        self._pool.shutdown(wait=True, cancel_futures=True)
        self._client.close()

    def __enter__(self) -> S3Fetcher:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _get(self, bucket: str, key: str, reserve: Callable[[int], None] | None = None) -> bytes:
        limit = self.settings.max_object_bytes
        try:
            response = self._client.get_object(Bucket=bucket, Key=key, Range=f"bytes=0-{limit - 1}")
        except ClientError as exc:
            if _code(exc) in _EMPTY_RANGE:
                return b""
            raise
        body = response["Body"]
        size = _total_size(response)
        if size > limit:
            body.close()
            raise PermanentError(
                Reason.OBJECT_TOO_LARGE, f"object is {size} bytes, over the limit of {limit}"
            )
        if reserve is not None:
            try:
                reserve(size)
            except BaseException:
                body.close()
                raise
        data = body.read()
        return Fetched(
            data,
            etag=str(response.get("ETag", "")).strip('"') or None,
            sha256=_checksum_sha256(response, len(data)),
        )

    def _retrying(self, call: Callable[[], T], uri: str) -> T:
        attempt = 1
        while True:
            try:
                return call()
            except PermanentError:
                raise
            except Exception as exc:
                error = classify_s3_error(exc, uri)
                if error is None:
                    raise
                if isinstance(error, PermanentError) or attempt >= self.settings.attempts:
                    raise error from (None if error is exc else exc)
            delay = backoff_s(attempt, self.settings.backoff_base_s, self.settings.backoff_cap_s)
            self._sleep(delay)
            attempt += 1


class Fetched(bytes):
    """An object's bytes and the ETag S3 sent with them: the result carries this one, not
    the event's (an overwrite between the event and the GET makes the event's stale).
    ``sha256``: the bytes' SHA-256 (hex), S3's own ``ChecksumSHA256`` of the whole object
    when it sent one, else computed here (content-hash dedup)."""

    etag: str | None
    sha256: str

    def __new__(cls, data: bytes, etag: str | None = None, sha256: str | None = None) -> Fetched:
        fetched = super().__new__(cls, data)
        fetched.etag = etag
        fetched.sha256 = sha256 or hashlib.sha256(data).hexdigest()
        return fetched


def _checksum_sha256(response: dict[str, Any], length: int) -> str | None:
    """S3's ``ChecksumSHA256`` as hex when it is the whole object's (not a multipart
    object's checksum of part checksums, not of a range shorter than the object)."""
    checksum = response.get("ChecksumSHA256")
    if not checksum or "-" in str(checksum) or response.get("ChecksumType") == "COMPOSITE":
        return None
    if _total_size(response) != length:
        return None
    try:
        raw = base64.b64decode(str(checksum), validate=True)
    except ValueError:
        return None
    return raw.hex() if len(raw) == 32 else None


def make_s3_client(settings: FetchSettings) -> Any:
    """A boto3 S3 client with a pool of ``settings.workers`` connections and standard retries."""
    config = Config(
        max_pool_connections=settings.workers,
        connect_timeout=settings.connect_timeout_s,
        read_timeout=settings.read_timeout_s,
        retries={"mode": "standard", "max_attempts": settings.botocore_attempts},
    )
    return boto3.session.Session().client("s3", config=config)


def classify_s3_error(exc: BaseException, uri: str) -> PermanentError | TransientError | None:
    """The typed error for what boto3 raised while reading ``uri``; None if it is not S3's."""
    if isinstance(exc, PermanentError | TransientError):
        return exc
    if isinstance(exc, ClientError):
        code = _code(exc)
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        message = f"{uri}: {code} {exc.response.get('Error', {}).get('Message', '')}".strip()
        if code in _SERVICE_FAULTS or status == 401:
            return TransientError(f"S3 configuration or credentials: {message}")
        if code in _NOT_FOUND or status == 404:
            return PermanentError(Reason.OBJECT_NOT_FOUND, message)
        if code in _DENIED or status == 403:
            return PermanentError(Reason.ACCESS_DENIED, message)
        if code in _THROTTLED or status in _TRANSIENT_STATUS:
            return TransientError(f"S3 throttling or timeout (HTTP {status}): {message}")
        if isinstance(status, int) and 400 <= status < 500:
            return PermanentError(Reason.FETCH_REJECTED, f"HTTP {status}: {message}")
        return TransientError(f"S3 error (HTTP {status}): {message}")
    if isinstance(exc, ParamValidationError):
        return PermanentError(Reason.UNSUPPORTED_URI, f"{uri}: {exc}")
    if isinstance(exc, BotoCoreError | Urllib3Error | OSError):
        return TransientError(f"{uri}: {type(exc).__name__}: {exc}")
    return None


def split_prefix(uri_prefix: str) -> tuple[str, str]:
    """``(bucket, prefix)`` of ``s3://bucket[/prefix]``; ``ValueError`` for anything else."""
    return s3uri.split(uri_prefix, key_required=False)


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def _total_size(response: dict[str, Any]) -> int:
    content_range = response.get("ContentRange") or ""
    total = content_range.rpartition("/")[2]
    return int(total) if total.isdigit() else int(response.get("ContentLength", 0))


def _completed(
    pending: dict[Future[bytes], AssetRequest],
) -> Iterator[tuple[AssetRequest, bytes | Exception]]:
    done, _ = wait(pending, return_when=FIRST_COMPLETED)
    for future in done:
        request = pending.pop(future)
        error = future.exception()
        yield request, error if isinstance(error, Exception) else future.result()
