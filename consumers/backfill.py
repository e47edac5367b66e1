"""``tagfleet tag`` (the pipeline without Kafka, for folders and s3:// prefixes) and
``tagfleet publish`` (one asset event per existing object, for the consumers to backfill)."""

from __future__ import annotations

import json
import queue
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tqdm import tqdm

from consumers.budget import ByteBudget
from consumers.decode import DecodedImage
from consumers.dedup import stored_reuse
from consumers.domain import AssetRequest, AssetResult, PermanentError, Reason
from consumers.metrics import Metrics
from consumers.options import PublishOptions
from consumers.ports import EmbeddingSink, Fleet, RecordProducer, Store, StoredReuse
from consumers.results import encode_event, rfc3339
from consumers.settings import KafkaSettings, StoreSettings
from consumers.stages import Inferencer, Outlets, Preparer, RetryPolicy, Storer
from consumers.work import Message, WorkItem
from models import s3uri
from models.options import Options

_IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".gif", ".tif", ".tiff", ".bmp"}


@dataclass(frozen=True, slots=True)
class TagSummary:
    """What ``tagfleet tag`` did: images tagged, and each failed one with its reason."""

    tagged: int
    failed: list[tuple[str, str, str]]  # (asset id, reason code, message)


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


def read_local(
    request: AssetRequest, max_bytes: int, reserve: Callable[[int], None] | None = None
) -> bytes:
    """The file's bytes; its size checked first and, when given, ``reserve(size)`` called
    before it is read (as the S3 fetcher does)."""
    path = Path(request.key)
    size = path.stat().st_size
    if size > max_bytes:
        raise PermanentError(Reason.OBJECT_TOO_LARGE, f"{path} is {size} bytes, over {max_bytes}")
    if reserve is not None:
        reserve(size)
    return path.read_bytes()


def tag_requests(
    requests: Sequence[AssetRequest],
    fleet: Fleet,
    store: Store,
    read: Callable[[AssetRequest, Callable[[int], None]], bytes],
    decode: Callable[[bytes], DecodedImage],
    *,
    batch_size: int = 32,
    workers: int = 8,
    progress: bool = True,
    retry: RetryPolicy | None = None,
    max_failures: int = 8,
    raw_bytes_limit: int = 256_000_000,
    producer: RecordProducer | None = None,
    results_topic: str = "",
    embeddings: EmbeddingSink | None = None,
    reuse: StoredReuse | None = None,
    dedup: bool = True,
) -> TagSummary:
    """Read, decode, infer and store ``requests`` through the consumer's own stages.

    The same code as the service from fetch to store: ``decode`` is the service's decoder
    (:func:`consumers.decoding.open_decoder`: limits, child processes, memory limits,
    timeouts), ``read(request, reserve)`` reserves each object's size in the byte budget, and
    the canary tells a bad image from a bad model; transient faults are retried within
    ``retry``; a bad batch costs its images, not the run. A fleet that fails on the canary
    too (a bad deploy) stops the run: ``RuntimeError`` names why, and what was stored stays.
    With ``producer`` and ``results_topic``, each stored asset's result event is published
    after its store write, as the service does.
    ``embeddings`` and ``reuse``: the service's embedding sink and content-hash dedup
    (``dedup`` False: none at all, not even within a batch).
    """
    failed: list[tuple[str, str, str]] = []
    tagged = 0
    fatal: list[str] = []
    lock = threading.Lock()
    in_flight = threading.BoundedSemaphore(max(4 * batch_size, 2 * workers))
    all_done = threading.Event()
    left = len(requests)
    bar = tqdm(total=len(requests), unit="img", disable=not progress, desc="tagging")

    def finish(item: WorkItem, outcome: str) -> None:
        nonlocal tagged, left
        with lock:
            tagged += outcome == "stored"
            left -= 1
            if left == 0:
                all_done.set()
        in_flight.release()
        bar.update(1)

    def fail(item: WorkItem, error: PermanentError) -> None:
        with lock:
            failed.append((str(item.asset_id), error.reason.value, error.message))
        finish(item, "failed")

    def stop(reason: str) -> None:
        fatal.append(reason)
        all_done.set()

    out = Outlets(fail=fail, finish=finish, metrics=Metrics())
    abandon, draining = threading.Event(), threading.Event()
    ready: queue.Queue[WorkItem] = queue.Queue(maxsize=2 * batch_size + workers)
    to_store: queue.Queue[tuple[WorkItem, AssetResult | None]] = queue.Queue()
    preparer = Preparer(
        fetch=read,
        decode=decode,
        ready=ready,
        out=out,
        fetch_workers=workers,
        decode_workers=workers,
        draining=draining,
        retry=retry or RetryPolicy(),
        raw_bytes=ByteBudget(raw_bytes_limit),
    )
    inferencer = Inferencer(
        fleet=fleet,
        ready=ready,
        to_store=to_store,
        out=out,
        fatal=stop,
        batch_size=batch_size,
        batch_wait_s=0.02,
        max_failures=max_failures,
        abandon=abandon,
        stored=stored_reuse(reuse, embeddings),
        dedup=dedup,
    )
    writer = Storer(
        store=store,
        producer=producer,
        results_topic=results_topic,
        inbox=to_store,
        out=out,
        abandon=abandon,
        embeddings=embeddings,
    )
    stages = (preparer, inferencer, writer)
    for stage in stages:
        stage.on_crash = stop
        stage.start()
    if not requests:
        all_done.set()
    try:
        for request in requests:
            while not in_flight.acquire(timeout=0.5):
                if fatal:
                    break
            if fatal:
                break
            preparer.submit(WorkItem(Message(None, None, None), request))
        all_done.wait()
    finally:
        draining.set()
        abandon.set()
        preparer.shutdown()
        bar.close()
    if fatal:
        raise RuntimeError(fatal[0])
    return TagSummary(tagged=tagged, failed=failed)


def backfill_selection(
    requests: list[AssetRequest],
    store: Any,
    *,
    functions: Sequence[str] = (),
    serving: Mapping[str, str | None] | None = None,
    changed: bool = False,
) -> list[AssetRequest]:
    """The backfill modes of ``tag`` and ``publish``: ``functions`` (a subset: each request
    asks for those only), ``serving`` (function -> serving version: ``--missing-only`` keeps
    the requests with a requested function not stored at its serving version) and
    ``changed`` (keeps those whose object's ETag differs from every stored result's, or with
    no stored result; a request without an ETag is kept)."""
    if functions:
        requests = [replace(r, functions=tuple(functions)) for r in requests]
    if serving is not None:
        wanted = {f: v for f, v in serving.items() if not functions or f in functions}
        current = store.current_versions([r.asset_id for r in requests])
        requests = [
            r
            for r in requests
            if any(current.get(r.asset_id, {}).get(f) != v for f, v in wanted.items())
        ]
    if changed:
        from consumers.store.selection import stored_etags

        etags = stored_etags(store.engine, [r.asset_id for r in requests], functions or None)
        requests = [r for r in requests if r.etag is None or etags.get(r.asset_id) != {r.etag}]
    return requests


def unknown_functions(functions: Sequence[str], fleet_functions: Sequence[str]) -> str | None:
    """A message naming the requested functions the fleet does not have (None: all known)."""
    unknown = sorted(set(functions) - set(fleet_functions))
    if not unknown:
        return None
    return f"functions {unknown} are not in the fleet (known: {sorted(fleet_functions)})"


def result_producer(kafka: KafkaSettings) -> RecordProducer:
    """The service's producer on ``kafka`` (its client and security settings)."""
    from consumers.confluent_sinks import ConfluentProducer
    from consumers.sinks import Producer

    client = ConfluentProducer if kafka.kafka_client == "confluent" else Producer
    return client(kafka.kafka_common())


def run_tag(sources: Sequence[str], options: Options) -> int:
    """``tagfleet tag``: the service's image limits, decoder and retries
    (:class:`TaggingSettings`, the same ``TAGFLEET_*`` variables), the store and the fleet the
    service uses, its own batch and worker options (``TAGFLEET_TAG_*``)."""
    from consumers.decoding import decode_limits, open_decoder
    from consumers.embeddings import open_embedding_sink
    from consumers.fetch import FetchSettings, S3Fetcher
    from consumers.options import TagOptions
    from consumers.settings import EmbeddingSettings, StoreSettings, TaggingSettings
    from consumers.store import TagStore
    from models import load_fleet
    from models.settings import FleetFile, Runtime, Serving

    tag, settings = options[TagOptions], options[TaggingSettings]
    runtime, serving = options[Runtime], options[Serving]
    fetcher = S3Fetcher(
        FetchSettings(max_object_bytes=settings.max_object_bytes, workers=tag.workers)
    )
    requests: list[AssetRequest] = []
    for source in sources:
        requests += list(
            fetcher.list_objects(source) if s3uri.is_s3(source) else local_requests(source)
        )
    fleet = load_fleet(
        options[FleetFile].fleet,
        device=runtime.device,
        compile=serving.compile,
        cache_dir=runtime.cache_dir,
        offline=runtime.offline,
    )
    store = TagStore(options[StoreSettings].store_url())
    if settings.migrate_on_start:
        store.upgrade()
    kept = options[EmbeddingSettings]
    embeddings = open_embedding_sink(kept.embedding_location())
    total = len(requests)
    problem = unknown_functions(tag.functions, list(fleet.functions))
    if problem:
        store.close()
        raise SystemExit(f"tagfleet tag: {problem}")
    versions = {name: info.version for name, info in fleet.functions.items()}
    requests = backfill_selection(
        requests,
        store,
        functions=tag.functions,
        serving=versions if tag.missing_only else None,
        changed=tag.changed,
    )
    producer: RecordProducer | None = None
    if tag.results and tag.results_topic:
        try:
            producer = result_producer(options[KafkaSettings])
        except Exception as exc:  # noqa: BLE001 - no broker: one line, not a traceback
            store.close()
            raise SystemExit(
                f"tagfleet tag: no Kafka for the result events ({exc}); --no-results stores only"
            ) from None

    def read(request: AssetRequest, reserve: Callable[[int], None]) -> bytes:
        if request.uri.startswith("s3://"):
            return fetcher.fetch(request, reserve)
        return read_local(request, settings.max_object_bytes, reserve)

    started = time.monotonic()
    try:
        limits = decode_limits(settings)
        with open_decoder(
            settings, fleet.input_size, limits, tiled=fleet.tiled_functions
        ) as decode:
            summary = tag_requests(
                requests,
                fleet,
                store,
                read,
                decode,
                batch_size=tag.batch_size,
                workers=tag.workers,
                progress=tag.progress and sys.stderr.isatty(),
                retry=RetryPolicy(settings.retry_max_attempts, settings.retry_budget_s),
                max_failures=settings.max_inference_failures,
                raw_bytes_limit=settings.max_raw_bytes_in_flight,
                producer=producer,
                results_topic=tag.results_topic,
                embeddings=embeddings,
                reuse=store.reusable_results if kept.reuse_results else None,
                dedup=kept.reuse_results,
            )
    except RuntimeError as exc:
        print(f"tagfleet tag: stopped: {exc}", file=sys.stderr)
        return 3
    finally:
        store.close()
        fetcher.close()
        if producer is not None:
            producer.close()
    elapsed = time.monotonic() - started
    print(
        f"tagged {summary.tagged} of {total} assets in {elapsed:.1f}s "
        f"({total - len(requests)} already current, {len(summary.failed)} failed)"
    )
    for asset_id, reason, message in summary.failed:
        print(f"  failed {asset_id}: {reason}: {message}", file=sys.stderr)
    return 1 if summary.failed and tag.strict else 0


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


def run_publish(
    prefix: str,
    options: PublishOptions,
    kafka: KafkaSettings,
    store_settings: StoreSettings | None = None,
    fleet_file: str | None = None,
) -> int:
    """``tagfleet publish``: one native asset event per object under ``prefix``, onto the
    backfill lane's topic (``--lane upload``: the topic of uploads) on the service's cluster
    (its security settings too)."""
    from consumers.fetch import FetchSettings, S3Fetcher
    from consumers.sinks import OutRecord

    if not prefix.startswith("s3://"):
        raise SystemExit("tagfleet publish: give an s3://bucket/prefix URI")
    functions = list(options.functions) or None
    requests = list(S3Fetcher(FetchSettings(workers=4)).list_objects(prefix))
    listed = len(requests)
    if options.missing_only or options.changed:
        requests = _published_selection(requests, options, store_settings, fleet_file)
    producer = result_producer(kafka)
    topic = kafka.topic if options.lane == "upload" else (kafka.backfill_lane() or kafka.topic)
    records = [
        OutRecord(topic, r.asset_id.encode(), encode_event(native_event(r, functions)))
        for r in requests
    ]
    for start in tqdm(range(0, len(records), 500), unit="batch", disable=not sys.stderr.isatty()):
        producer.send_all(records[start : start + 500])
    producer.close()
    print(
        json.dumps({"published": len(records), "listed": listed, "topic": topic, "prefix": prefix})
    )
    return 0


def _published_selection(
    requests: list[AssetRequest],
    options: PublishOptions,
    store_settings: StoreSettings | None,
    fleet_file: str | None,
) -> list[AssetRequest]:
    """``publish --missing-only`` / ``--changed``: the store's view (and the fleet's serving
    versions for the first) decides which objects are published."""
    from consumers.store import TagStore

    if store_settings is None or (options.missing_only and fleet_file is None):
        raise SystemExit("tagfleet publish: --missing-only needs --fleet; both need --store")
    serving = None
    if options.missing_only:
        from models import load_fleet

        assert fleet_file is not None
        fleet = load_fleet(fleet_file, device="cpu")
        problem = unknown_functions(options.functions, list(fleet.functions))
        if problem:
            raise SystemExit(f"tagfleet publish: {problem}")
        serving = {name: info.version for name, info in fleet.functions.items()}
    store = TagStore(store_settings.store_url())
    try:
        return backfill_selection(
            requests, store, functions=(), serving=serving, changed=options.changed
        )
    finally:
        store.close()
