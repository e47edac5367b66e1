"""``tagfleet consume``: wire the adapters from settings, serve health, run, stop on SIGTERM."""

from __future__ import annotations

import logging
import threading
from contextlib import ExitStack
from typing import TYPE_CHECKING, Any

from confluent_kafka import KafkaException
from kafka.errors import KafkaError

from consumers import shutdown
from consumers.cpus import cap_torch_threads
from consumers.decoding import decode_limits, open_decoder
from consumers.fleet_reload import FleetReloader, export_fleet, follow
from consumers.hardening import make_undumpable
from consumers.health import HealthServer
from consumers.kafka_fixes import UnsupportedKafkaClient, install_join_fix
from consumers.logs import configure_logging
from consumers.metrics import Metrics
from consumers.pipeline import EXIT_FATAL, Parts, Pipeline
from consumers.ports import RecordProducer, Source
from consumers.readiness import Readiness
from consumers.review.flagging import ReviewPolicy
from consumers.review.queue import ReviewQueue
from consumers.settings import Settings
from consumers.sinks import Producer
from consumers.source import KafkaSource

if TYPE_CHECKING:
    from consumers.store import TagStore

log = logging.getLogger(__name__)


def run_service(settings: Settings) -> int:
    """Run the service until SIGTERM/SIGINT (exit 0 after a drain) or a fatal fault (exit 3)."""
    configure_logging(settings.log_level, settings.log_format)
    make_undumpable()  # before any decode process starts: they cannot read our secrets
    metrics = Metrics()
    readiness = Readiness()
    readiness.export(metrics.ready)
    health = None
    if settings.metrics_port:
        health = HealthServer(
            settings.metrics_host,
            settings.metrics_port,
            metrics.registry,
            readiness=readiness.ready,
            liveness=readiness.alive,
        )
        health.start()
        log.info(
            "health server listening", extra={"host": settings.metrics_host, "port": health.port}
        )
    stop = shutdown.STOP
    shutdown.install_signal_handlers()
    try:
        return serve(settings, metrics, readiness, stop)
    finally:
        if health is not None:
            health.stop()


def serve(settings: Settings, metrics: Metrics, readiness: Readiness, stop: threading.Event) -> int:
    """Build the adapters and run the pipeline on this thread until ``stop`` is set."""
    try:
        install_join_fix()  # before anything slow: refuse a kafka-python we did not fix
    except UnsupportedKafkaClient as exc:
        log.critical(str(exc))
        return EXIT_FATAL
    from consumers.embeddings import open_embedding_sink
    from consumers.fetch import FetchSettings, S3Fetcher
    from consumers.store import TagStore
    from models import load_fleet
    from models.fleet import read_fleet_config

    try:  # before the fleet's minutes of loading: a store it cannot write stops it now
        embeddings = open_embedding_sink(settings.embedding_location(), probe=True)
    except Exception as exc:  # noqa: BLE001 - one line, not a traceback
        log.critical(
            f"cannot write the embedding store {settings.embeddings}: {type(exc).__name__}:"
            f" {exc} (set TAGFLEET_EMBEDDINGS to a writable folder or s3:// prefix, or"
            " TAGFLEET_STORE_EMBEDDINGS=false)"
        )
        return EXIT_FATAL
    store = TagStore(settings.store_url())
    readiness.store = store
    if settings.migrate_on_start:
        store.upgrade()
        readiness.store_reached()  # the migrations just talked to it

    def load(config: object = None) -> Any:
        return load_fleet(
            settings.fleet,
            device=settings.device,
            compile=settings.compile,
            cache_dir=settings.cache_dir,
            config=config,  # type: ignore[arg-type]
            offline=settings.offline,
        )

    try:  # a local file or an s3:// object
        config = read_fleet_config(settings.fleet)
        fleet = load(config if config.functions else None)
    except Exception as exc:  # noqa: BLE001 - one line, not a traceback
        log.critical(f"cannot load the fleet {settings.fleet}: {type(exc).__name__}: {exc}")
        return EXIT_FATAL
    try:
        follow(store, config)  # a rollback or a removal made while no service ran
    except Exception as exc:  # noqa: BLE001 - no schema yet, or the store is down: next change
        log.error("the store could not follow the fleet", extra={"error": repr(exc)})
    cap_torch_threads(settings.cpus())
    export_fleet(metrics, fleet)
    readiness.fleet_loaded = True
    log.info(
        "fleet loaded",
        extra={
            "functions": sorted(fleet.functions),
            "input_size": fleet.input_size,
            "tilings": [f"{t.tile}:{t.overlap:g}" for t in fleet.tilings],
        },
    )
    fetcher = S3Fetcher(
        FetchSettings(max_object_bytes=settings.max_object_bytes, workers=settings.fetch_workers)
    )
    limits = decode_limits(settings)
    with ExitStack() as resources:
        resources.callback(store.close)
        try:
            decode = resources.enter_context(
                open_decoder(
                    settings,
                    fleet.input_size,
                    limits,
                    (settings.log_level, settings.log_format),
                    tiled=fleet.tiled_functions,
                )
            )
        except RuntimeError as exc:  # the decode processes did not start
            log.critical(str(exc))
            return EXIT_FATAL
        try:
            producer, source = _connect_kafka(settings)
        except (KafkaError, KafkaException) as exc:
            log.critical(_kafka_unreachable(settings, exc))
            return EXIT_FATAL
        resources.callback(producer.close)
        reloader = None
        if settings.fleet_poll_s > 0:
            reloader = FleetReloader(
                path=settings.fleet,
                load=load,
                input_size=fleet.input_size,
                tiled=fleet.tiled_functions,
                store=store,
                metrics=metrics,
                interval_s=settings.fleet_poll_s,
            )
            reloader.start()
            resources.callback(reloader.stop)
        readiness.source = source
        parts = Parts(
            new_source=lambda: _new_source(settings, readiness),
            source=source,
            fleet=fleet,
            store=store,
            producer=producer,
            fetch=fetcher.fetch,
            object_readable=fetcher.readable,
            review=_review_queue(settings, store, producer),
            decode=decode,
            reload=None if reloader is None else reloader.take,
            embeddings=embeddings,
            reuse=store.reusable_results if settings.reuse_results else None,
            dedup=settings.reuse_results,
        )
        pipeline = Pipeline(settings, parts, metrics)
        readiness.pipeline = pipeline

        def stop_pipeline_when_asked() -> None:
            stop.wait()
            pipeline.stopping.set()

        watcher = threading.Thread(target=stop_pipeline_when_asked, daemon=True)
        watcher.start()
        log.info("consuming", extra={"topic": settings.topic, "group_id": settings.group_id})
        code = pipeline.run()
    if code == EXIT_FATAL:
        log.critical("stopped after a fatal fault", extra={"reason": pipeline.fatal_reason})
    else:
        log.info("stopped cleanly")
    return code


def _connect_kafka(settings: Settings) -> tuple[RecordProducer, Source]:
    """The producer and the group consumer of ``kafka_client``; raises when no broker answers."""
    producer: RecordProducer
    if settings.kafka_client == "confluent":
        from consumers.confluent_sinks import ConfluentProducer

        producer = ConfluentProducer(settings.kafka_common())
    else:
        producer = Producer(settings.kafka_common())
    try:
        return producer, _source(settings)
    except BaseException:
        producer.close(timeout_s=1.0)
        raise


_SECURITY_SETTINGS = {
    "PLAINTEXT": "",
    "SSL": ", TAGFLEET_SSL_CAFILE, TAGFLEET_SSL_CERTFILE, TAGFLEET_SSL_KEYFILE",
    "SASL_PLAINTEXT": ", TAGFLEET_SASL_MECHANISM, TAGFLEET_SASL_PLAIN_USERNAME/_PASSWORD",
    "SASL_SSL": ", TAGFLEET_SASL_MECHANISM, TAGFLEET_SASL_PLAIN_USERNAME/_PASSWORD,"
    " TAGFLEET_SSL_CAFILE, TAGFLEET_SSL_CERTFILE, TAGFLEET_SSL_KEYFILE",
}


def _kafka_unreachable(settings: Settings, exc: Exception) -> str:
    """One line: where it tried, what failed and which settings to check (never a secret)."""
    from consumers.source import tls_problem

    tls = tls_problem(settings)  # over SSL: a wrong CA or host name said in this line
    return (
        f"cannot connect to Kafka at {settings.bootstrap_servers} over"
        f" {settings.security_protocol} ({exc}{'; ' + tls if tls else ''}); check"
        f" TAGFLEET_BOOTSTRAP_SERVERS, TAGFLEET_SECURITY_PROTOCOL"
        f"{_SECURITY_SETTINGS[settings.security_protocol]} (the client's log lines above say"
        " why each connection failed)"
    )


def _source(settings: Settings) -> Source:
    if settings.kafka_client == "confluent":
        from consumers.confluent_source import ConfluentSource

        return ConfluentSource(settings)
    return KafkaSource(settings)


def _new_source(settings: Settings, readiness: Readiness) -> Source:
    source = _source(settings)
    readiness.source = source
    return source


def _review_queue(
    settings: Settings, store: TagStore, producer: RecordProducer
) -> ReviewQueue | None:
    """The review hook when ``--review`` is on (docs/review.md)."""
    if not settings.review:
        return None
    return ReviewQueue(
        engine=store.engine,
        producer=producer,
        topic=settings.review_topic,
        fmt=settings.review_format,
        policy=ReviewPolicy(
            margin=settings.review_margin,
            band=settings.review_band,
            spot_rate=settings.review_spot_rate,
        ),
        max_per_label_hour=settings.review_max_per_label_hour,
        max_per_hour=settings.review_max_per_hour,
    )
