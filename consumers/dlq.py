"""``tagfleet dlq list`` and ``tagfleet dlq redrive``: the dead-letter topic read back from
Kafka and redriven onto the topics its events came from (what may go back:
:mod:`consumers.dead_letter_review`).

Both read the dead-letter topic from its beginning to its end at the start of the command,
without a consumer group (nothing is committed; the service's group is not touched). A
redrive is sent with ``acks=all`` and recorded in the ledger topic after its event is on the
broker: if the command dies between the two, a rerun sends that event again, which the
service's idempotent store absorbs (at least once, never lost).
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import NewTopic
from kafka.errors import KafkaError, TopicAlreadyExistsError

from consumers.dead_letter_review import (
    LedgerEntry,
    dead_letter,
    plan_redrive,
    reasons_table,
    redrive_headers,
    summarise,
)
from consumers.options import DlqListOptions, DlqRedriveOptions
from consumers.settings import DlqSettings, KafkaSettings


def ledger_topic(dlq_topic: str) -> str:
    """Where redrives are recorded: one compacted topic beside the dead-letter topic."""
    return dlq_topic + ".redrives"


class TopicMissing(Exception):
    """The topic does not exist on the cluster."""


def read_all(kafka: dict[str, Any], topic: str, stall_s: float = 60.0) -> list[Any]:
    """Every record of ``topic`` up to its end offsets at the start. :class:`TopicMissing`
    when it does not exist; ``TimeoutError`` when no record arrives for ``stall_s`` before the
    end is reached."""
    with _consumer(kafka) as consumer:
        partitions = consumer.partitions_for_topic(topic)
        if not partitions:
            raise TopicMissing(topic)
        parts = [TopicPartition(topic, p) for p in sorted(partitions)]
        consumer.assign(parts)
        consumer.seek_to_beginning(*parts)
        ends = consumer.end_offsets(parts)
        records: list[Any] = []
        last_progress = time.monotonic()
        while any(consumer.position(tp) < ends[tp] for tp in parts):
            if time.monotonic() - last_progress > stall_s:
                raise TimeoutError(f"{topic}: no record for {stall_s:.0f}s before its end")
            for batch in consumer.poll(timeout_ms=500).values():
                last_progress = time.monotonic()
                records += [r for r in batch if r.offset < ends[TopicPartition(topic, r.partition)]]
        return records


def _ledger(kafka: dict[str, Any], topic: str) -> list[Any]:
    try:
        return read_all(kafka, topic)
    except TopicMissing:
        return []  # nothing redriven yet


def run_list(options: DlqListOptions, kafka: KafkaSettings, dlq: DlqSettings) -> int:
    with _refusals("list"):
        letters = [dead_letter(r) for r in read_all(kafka.kafka_common(), dlq.dlq_topic)]
    if options.reason:
        letters = [letter for letter in letters if letter.reason == options.reason]
    summaries = summarise(letters, options.samples)
    if options.json_output:
        print(json.dumps({"topic": dlq.dlq_topic, "reasons": [s.as_json() for s in summaries]}))
    else:
        print(f"{dlq.dlq_topic}:")
        print(reasons_table(summaries))
    return 0


def run_redrive(options: DlqRedriveOptions, kafka: KafkaSettings, dlq: DlqSettings) -> int:
    """Send back the dead letters of one reason; exit 1 when some were refused."""
    common = kafka.kafka_common()
    ledger = ledger_topic(dlq.dlq_topic)
    with _refusals("redrive"):
        letters = [dead_letter(r) for r in read_all(common, dlq.dlq_topic)]
        entries = [LedgerEntry.decode(r.value) for r in _ledger(common, ledger) if r.value]
    since_ms = int(options.since.timestamp() * 1000) if options.since else None
    plan = plan_redrive(
        letters, entries, options.reason.value, since_ms, options.force, kafka.topic
    )
    for letter, why in plan.refused:
        print(f"refused {letter.where} ({letter.asset_id or '-'}): {why}", file=sys.stderr)
    if options.dry_run:
        for redrive in plan.send:
            print(f"would send {redrive.letter.where} -> {redrive.topic}")
    elif plan.send:
        _ensure_ledger(common, ledger)
        producer = KafkaProducer(**common, acks="all", retries=5, linger_ms=5)
        unrecorded: list[str] = []
        try:
            for redrive in plan.send:
                meta = producer.send(
                    redrive.topic,
                    key=redrive.letter.key,
                    value=redrive.letter.value,
                    headers=redrive_headers(redrive),
                ).get(timeout=30)
                entry = LedgerEntry(
                    redrive.letter.where,
                    f"{meta.topic}:{meta.partition}:{meta.offset}",
                    redrive.redrives,
                )
                try:  # unrecorded, a later run would send it again: say so
                    producer.send(ledger, key=entry.dead_letter.encode(), value=entry.encode()).get(
                        timeout=30
                    )
                except KafkaError as exc:
                    unrecorded.append(f"{entry.dead_letter} ({exc})")
        finally:
            producer.close(timeout=10)
        if unrecorded:
            print(
                f"tagfleet dlq redrive: sent but not recorded in {ledger} (a later run would"
                f" send them again): {', '.join(unrecorded)}",
                file=sys.stderr,
            )
            return 1
    verb = "would redrive" if options.dry_run else "redriven"
    print(
        json.dumps(
            {
                "reason": options.reason.value,
                verb.replace(" ", "_"): len(plan.send),
                "refused": len(plan.refused),
                "ledger": ledger,
            }
        )
    )
    return 1 if plan.refused else 0


@contextmanager
def _refusals(command: str) -> Iterator[None]:
    """A missing topic or a cluster that stops answering: one line and an exit code."""
    try:
        yield
    except TopicMissing as exc:
        raise SystemExit(
            f"tagfleet dlq {command}: error: topic {exc} does not exist (check TAGFLEET_DLQ_TOPIC)"
        ) from None
    except (TimeoutError, KafkaError) as exc:
        raise SystemExit(f"tagfleet dlq {command}: error: {exc}") from None


@contextmanager
def _consumer(kafka: dict[str, Any]) -> Iterator[KafkaConsumer]:
    consumer = KafkaConsumer(**kafka, group_id=None, enable_auto_commit=False)
    try:
        yield consumer
    finally:
        consumer.close()


def ensure_compacted_topic(kafka: dict[str, Any], topic: str) -> None:
    """Create ``topic`` (compacted, one partition: a ledger) unless it exists; a refusal (no
    right to create topics, the broker away) is the ``KafkaError`` raised."""
    admin = KafkaAdminClient(**kafka)
    try:
        admin.create_topics(
            [
                NewTopic(
                    topic,
                    num_partitions=1,
                    replication_factor=-1,
                    topic_configs={"cleanup.policy": "compact"},
                )
            ]
        )
    except TopicAlreadyExistsError:
        pass
    finally:
        admin.close()


def _ensure_ledger(kafka: dict[str, Any], topic: str) -> None:
    try:
        ensure_compacted_topic(kafka, topic)
    except KafkaError as exc:  # e.g. no right to create topics: say what is missing
        raise SystemExit(
            f"tagfleet dlq redrive: cannot create the ledger topic {topic}: {exc}"
        ) from None
