"""``tagfleet tag`` (the pipeline without Kafka, for folders and s3:// prefixes) and
``tagfleet publish`` (one asset event per existing object, for the consumers to backfill)."""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tqdm import tqdm

from consumers.decode import DecodeLimits, decode_image
from consumers.domain import AssetRequest, PermanentError, Reason
from consumers.results import build_result, encode_event, rfc3339

_IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".gif", ".tif", ".tiff", ".bmp"}


@dataclass(frozen=True, slots=True)
class TagSummary:
    tagged: int
    skipped: int
    failed: list[tuple[str, str]]


def local_requests(source: str) -> Iterator[AssetRequest]:
    """One request per image file under ``source`` (a file or a folder, recursive, sorted)."""
    root = Path(source).expanduser().resolve()
    if not root.exists():
        raise SystemExit(
            f"tagfleet tag: {source} does not exist (give a file, a folder or s3://bucket/prefix)"
        )
    paths = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
    for path in paths:
        if path.suffix.lower() in _IMAGE_SUFFIXES or root.is_file():
            uri = f"file://{path}"  # not percent-encoded, like the decoded keys of s3:// ids
            yield AssetRequest(
                asset_id=uri, uri=uri, bucket="", key=str(path), size=path.stat().st_size
            )


def read_local(request: AssetRequest, max_bytes: int) -> bytes:
    path = Path(request.key)
    size = path.stat().st_size
    if size > max_bytes:
        raise PermanentError(Reason.OBJECT_TOO_LARGE, f"{path} is {size} bytes, over {max_bytes}")
    return path.read_bytes()


def tag_requests(
    requests: Sequence[AssetRequest],
    fleet: Any,
    store: Any,
    read: Any,
    batch_size: int = 32,
    workers: int = 8,
    limits: DecodeLimits | None = None,
    progress: bool = True,
) -> TagSummary:
    """Read, decode, infer and store ``requests``; returns counts and per-asset failures."""
    limits = limits or DecodeLimits()
    failed: list[tuple[str, str]] = []
    tagged = 0

    def prepare(request: AssetRequest) -> tuple[AssetRequest, Any]:
        try:
            return request, decode_image(read(request), fleet.input_size, limits)
        except PermanentError as exc:
            return request, exc

    bar = tqdm(total=len(requests), unit="img", disable=not progress, desc="tagging")
    with ThreadPoolExecutor(workers) as pool:
        for start in range(0, len(requests), batch_size):
            prepared = list(pool.map(prepare, requests[start : start + batch_size]))
            good = [(r, d) for r, d in prepared if not isinstance(d, PermanentError)]
            failed += [
                (r.asset_id, d.reason.value) for r, d in prepared if isinstance(d, PermanentError)
            ]
            if good:
                predictions = fleet.predict(
                    [d.array for _, d in good], [(d.width, d.height) for _, d in good]
                )
                now = datetime.now(UTC)
                store.save(
                    [
                        build_result(r, d, p, None, now)
                        for (r, d), p in zip(good, predictions, strict=True)
                    ]
                )
                tagged += len(good)
            bar.update(len(prepared))
    bar.close()
    return TagSummary(tagged=tagged, skipped=0, failed=failed)


def missing_only(requests: list[AssetRequest], fleet: Any, store: Any) -> list[AssetRequest]:
    """Drop requests whose every fleet function is already stored at the current version."""
    wanted = {name: info.version for name, info in fleet.functions.items()}
    current = store.current_versions([r.asset_id for r in requests])
    return [r for r in requests if current.get(r.asset_id) != wanted]


def run_tag(args: argparse.Namespace) -> int:
    from consumers.fetch import FetchSettings, S3Fetcher
    from consumers.store import TagStore
    from models import load_fleet

    fetcher = S3Fetcher(FetchSettings(workers=args.workers))
    requests: list[AssetRequest] = []
    for source in args.sources:
        requests += list(
            fetcher.list_objects(source) if source.startswith("s3://") else local_requests(source)
        )
    fleet = load_fleet(args.fleet)
    store = TagStore(args.store)
    store.upgrade()
    total = len(requests)
    if args.missing_only:
        requests = missing_only(requests, fleet, store)

    def read(request: AssetRequest) -> bytes:
        return (
            fetcher.fetch(request)
            if request.uri.startswith("s3://")
            else read_local(request, 50_000_000)
        )

    started = time.monotonic()
    summary = tag_requests(
        requests,
        fleet,
        store,
        read,
        args.batch_size,
        args.workers,
        progress=not args.no_progress and sys.stderr.isatty(),
    )
    elapsed = time.monotonic() - started
    print(
        f"tagged {summary.tagged} of {total} assets in {elapsed:.1f}s "
        f"({total - len(requests)} already current, {len(summary.failed)} failed)"
    )
    for asset_id, reason in summary.failed:
        print(f"  failed {asset_id}: {reason}", file=sys.stderr)
    store.close()
    return 1 if summary.failed else 0


def native_event(request: AssetRequest, functions: list[str] | None = None) -> dict[str, Any]:
    event: dict[str, Any] = {
        "asset_id": request.asset_id,
        "uri": request.uri,
        "event_time": rfc3339(datetime.now(UTC)),
    }
    if request.etag:
        event["etag"] = request.etag
    if functions:
        event["functions"] = functions
    return event


def run_publish(args: argparse.Namespace) -> int:
    from consumers.fetch import FetchSettings, S3Fetcher
    from consumers.settings import Settings
    from consumers.sinks import OutRecord, Producer

    if not args.prefix.startswith("s3://"):
        raise SystemExit("tagfleet publish: give an s3://bucket/prefix URI")
    functions = [f.strip() for f in args.functions.split(",")] if args.functions else None
    requests = list(S3Fetcher(FetchSettings(workers=4)).list_objects(args.prefix))
    producer = Producer(Settings(bootstrap_servers=args.bootstrap_servers).kafka_common())
    records = [
        OutRecord(args.topic, r.asset_id.encode(), encode_event(native_event(r, functions)))
        for r in requests
    ]
    for start in tqdm(range(0, len(records), 500), unit="batch", disable=not sys.stderr.isatty()):
        producer.send_all(records[start : start + 500])
    producer.close()
    print(json.dumps({"published": len(records), "topic": args.topic, "prefix": args.prefix}))
    return 0
