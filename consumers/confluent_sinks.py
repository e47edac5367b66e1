"""The result and dead-letter producer over confluent-kafka (librdkafka): the
:class:`RecordProducer` port, as :class:`consumers.sinks.Producer` gives it over kafka-python.

Idempotent with ``acks=all``; ``send_all`` blocks until every record is acknowledged. Delivery
reports are librdkafka callbacks, run by whichever thread calls ``poll()`` on the producer:
the store and dead-letter stages share one producer and each polls while it waits, so a report
may be run by the other stage's thread. Each call therefore keeps its own outcomes (the
callbacks close over them) and waits for its own records only, not for a ``flush()`` of
everyone's.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Message, Producer

from consumers.confluent_config import librdkafka_config
from consumers.domain import TransientError
from consumers.ports import OutRecord, RecordRejected

log = logging.getLogger(__name__)

# Errors that depend on the record itself: sending it again would fail the same way.
_REFUSED = frozenset(
    {
        KafkaError.MSG_SIZE_TOO_LARGE,
        KafkaError.RECORD_LIST_TOO_LARGE,
        KafkaError.INVALID_RECORD,
        KafkaError.INVALID_MSG_SIZE,
    }
)


class ConfluentProducer:
    """A thread-safe idempotent producer shared by the result and dead-letter sinks."""

    def __init__(self, kafka_config: dict[str, Any], delivery_timeout_ms: int = 30_000) -> None:
        self._producer = Producer(
            {
                **librdkafka_config(kafka_config),
                "acks": "all",
                "enable.idempotence": True,
                "linger.ms": 5,
                "compression.type": "none",
                "delivery.timeout.ms": delivery_timeout_ms,
                "request.timeout.ms": min(delivery_timeout_ms - 1000, 15_000),
                "max.in.flight.requests.per.connection": 5,
                # kafka-python's max_request_size: the same records refused by either client
                "message.max.bytes": 1_048_576,
                "logger": logging.getLogger("confluent_kafka"),
                "error_cb": self._on_error,
            }
        )
        self._timeout_s = delivery_timeout_ms / 1000 + 5

    @staticmethod
    def _on_error(error: KafkaError) -> None:
        log.warning("kafka client error", extra={"error": str(error), "code": error.name()})

    def send_all(self, records: Sequence[OutRecord]) -> None:
        """Send ``records`` and wait until each one is acknowledged by all in-sync replicas.

        Raises :class:`TransientError` when any record failed for a reason that may pass (all
        of them may then be sent again: at least once), else :class:`RecordRejected` naming
        the records refused for what they are (larger than the broker or client accepts,
        invalid) when only those failed.
        """
        lock = threading.Lock()
        outcomes: dict[int, KafkaError | None] = {}
        refused: list[int] = []
        errors: list[KafkaError] = []
        deadline = time.monotonic() + self._timeout_s

        def report(index: int) -> Any:
            def delivered(error: KafkaError | None, _message: Message) -> None:
                with lock:
                    outcomes[index] = error

            return delivered

        sent: list[int] = []
        for index, record in enumerate(records):  # all first: one batch, not a round trip each
            error = self._produce(record, report(index), deadline)
            if error is None:
                sent.append(index)
            elif error.code() in _REFUSED:  # the client's own size check
                refused.append(index)
            else:
                errors.append(error)
        while time.monotonic() < deadline:
            with lock:
                if len(outcomes) == len(sent):
                    break
            self._producer.poll(0.05)
        for index in sent:
            with lock:
                outcome = outcomes.get(index, KafkaError(KafkaError._MSG_TIMED_OUT))
            if outcome is None:
                continue
            if outcome.code() in _REFUSED:
                refused.append(index)
            else:
                errors.append(outcome)
        if errors:
            raise TransientError(f"Kafka did not acknowledge a record: {errors[0]!r}")
        if refused:
            raise RecordRejected(f"Kafka refused {len(refused)} record(s)", sorted(refused))

    def _produce(self, record: OutRecord, delivered: Any, deadline: float) -> KafkaError | None:
        """Queue one record; waits (serving reports) while librdkafka's queue is full."""
        headers: list[tuple[str, str | bytes | None]] = list(record.headers or [])
        while True:
            try:
                self._producer.produce(
                    record.topic,
                    value=record.value,
                    key=record.key,
                    headers=headers,
                    on_delivery=delivered,
                )
                return None
            except BufferError:
                if time.monotonic() >= deadline:
                    return KafkaError(KafkaError._QUEUE_FULL)
                self._producer.poll(0.1)
            except KafkaException as exc:
                error = exc.args[0] if exc.args else None
                return error if isinstance(error, KafkaError) else KafkaError(KafkaError._FAIL)

    def close(self, timeout_s: float = 10.0) -> None:
        self._producer.flush(timeout_s)
