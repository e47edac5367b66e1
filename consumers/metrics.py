"""Prometheus metrics of the service (names in docs/architecture.md), on their own registry."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
_E2E_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120, 300, 900, 3600)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
_SCORE_BUCKETS = tuple(i / 10 for i in range(1, 11))


class Metrics:
    """Every metric the service exports; one instance per service, on ``registry``."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.events = Counter("tagfleet_events", "Events by outcome.", ["outcome"], registry=r)
        self.dlq = Counter(
            "tagfleet_dlq", "Dead-lettered events by reason.", ["reason"], registry=r
        )
        self.key_readings = Counter(
            "tagfleet_key_readings",
            "Objects found by the first reading of a notification's key, or by its other"
            " reading after a 404 (servers disagree on URL-encoding keys).",
            ["reading"],
            registry=r,
        )
        for reading in ("first", "alternative"):
            self.key_readings.labels(reading)
        self.ignored_records = Counter(
            "tagfleet_ignored_records",
            "Notification records that are not objects to tag or remove (test events,"
            " reads, restores, replication, lifecycle transitions), by kind.",
            ["kind"],
            registry=r,
        )
        self.stage_seconds = Histogram(
            "tagfleet_stage_seconds",
            "Time spent per stage.",
            ["stage"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.end_to_end = Histogram(
            "tagfleet_end_to_end_seconds",
            "Event time to result stored.",
            buckets=_E2E_BUCKETS,
            registry=r,
        )
        self.batch_size = Histogram(
            "tagfleet_batch_size", "Images per inference batch.", buckets=_BATCH_BUCKETS, registry=r
        )
        self.in_flight = Gauge(
            "tagfleet_in_flight", "Messages between poll and commit.", registry=r
        )
        self.consumer_lag = Gauge(
            "tagfleet_consumer_lag",
            "High watermark minus committed offset.",
            ["topic", "partition", "lane"],
            registry=r,
        )
        self.lane_latency = Histogram(
            "tagfleet_lane_latency_seconds",
            "Kafka record time to its message done (stored, removed or dead-lettered), per"
            " priority lane (upload, backfill).",
            ["lane"],
            buckets=_E2E_BUCKETS,
            registry=r,
        )
        self.predictions = Counter(
            "tagfleet_predictions",
            "Labels predicted per function.",
            ["function", "label"],
            registry=r,
        )
        self.prediction_score = Histogram(
            "tagfleet_prediction_score",
            "Scores of predicted labels.",
            ["function"],
            buckets=_SCORE_BUCKETS,
            registry=r,
        )
        self.transient_errors = Counter(
            "tagfleet_transient_errors", "Retried transient faults by stage.", ["stage"], registry=r
        )
        self.paused_partitions = Gauge(
            "tagfleet_paused_partitions", "Partitions paused for backpressure.", registry=r
        )
        self.stalled_partitions = Gauge(
            "tagfleet_stalled_partitions",
            "Assigned partitions with records waiting that no poll has returned for"
            " partition_stall_s of unpaused time (paused for backpressure is"
            " tagfleet_paused_partitions, not this).",
            registry=r,
        )
        self.inference_batch_seconds = Gauge(
            "tagfleet_inference_batch_seconds",
            "Seconds the running inference batch has been in the model (0 when none runs).",
            registry=r,
        )
        self.rewound_records = Counter(
            "tagfleet_rewound_records",
            "Records a poll returned while every partition was meant to be paused (a partition"
            " assigned inside that poll), sought back and fetched again later.",
            registry=r,
        )
        self.ready = Gauge("tagfleet_ready", "1 when the service is ready.", registry=r)
        self.fleet_function = Gauge(
            "tagfleet_fleet_function_info",
            "Functions the fleet serves now, and their shadow candidates (role), by version;"
            " follows a live reload.",
            ["function", "type", "version", "role"],
            registry=r,
        )
        self.fleet_reloads = Counter(
            "tagfleet_fleet_reloads",
            "Changed fleet files picked up by the live reload, by outcome: applied, or refused"
            " (load_failed, canary_failed, input_size_changed: another input size or other"
            " tilings than the decoder's) with the old fleet serving on.",
            ["outcome"],
            registry=r,
        )
        self.shadow_agreement = Counter(
            "tagfleet_shadow_agreement",
            "Images a shadow candidate ran on, by whether its decision (classify label, tags,"
            " detected labels) agrees with the serving version's.",
            ["function", "outcome"],
            registry=r,
        )
        self.inference_failures = Counter(
            "tagfleet_inference_failures", "Images the fleet failed on.", registry=r
        )
        self.inference_reused = Counter(
            "tagfleet_inference_reused",
            "Images not inferred because results for the same bytes (content hash) and function"
            " versions were reused, by where they came from: the same batch, a recent batch, the"
            " store.",
            ["source"],
            registry=r,
        )
        for source in ("batch", "recent", "store"):
            self.inference_reused.labels(source)
        for outcome in ("stored", "removed", "dead_lettered", "removal_ignored", "stale"):
            self.events.labels(outcome)
        for outcome in ("applied", "load_failed", "canary_failed", "input_size_changed"):
            self.fleet_reloads.labels(outcome)
        for stage in ("fetch", "decode", "infer", "store", "embeddings", "publish"):
            self.stage_seconds.labels(stage)

    def observe_prediction(self, function: str, result: dict) -> None:
        """Count the labels a function predicted for one image and record their scores."""
        kind = result.get("type")
        if kind == "classify":
            picked = [(result["label"], result["score"])]
        elif kind == "tags":
            picked = [(t["label"], t["score"]) for t in result.get("tags", [])]
        else:
            picked = [(o["label"], o["score"]) for o in result.get("objects", [])]
        for label, score in picked:
            self.predictions.labels(function, label).inc()
            self.prediction_score.labels(function).observe(score)
