"""Kafka producers for result events and dead-letter records.

Both are idempotent with ``acks=all``. ``send_all`` blocks until every record is acknowledged;
a send that fails (broker down, delivery timeout) raises :class:`TransientError` so the caller
retries instead of committing offsets past an unacknowledged record.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import Any

from kafka import KafkaProducer
from kafka.errors import (
    InvalidRecordError,
    KafkaError,
    MessageSizeTooLargeError,
    RecordListTooLargeError,
)

from consumers.domain import TransientError
from consumers.ports import OutRecord

__all__ = ["OutRecord", "Producer", "RecordRejected"]


# Errors that depend on the record itself: sending it again would fail the same way.
_REFUSED = (MessageSizeTooLargeError, RecordListTooLargeError, InvalidRecordError)


class RecordRejected(Exception):
    """The broker or the client refused a record for what it is (too large, invalid)."""


class Producer:
    """A thread-safe idempotent producer shared by the result and dead-letter sinks."""

    def __init__(self, kafka_config: dict[str, Any], delivery_timeout_ms: int = 30_000) -> None:
        self._producer = KafkaProducer(
            **kafka_config,
            acks="all",
            enable_idempotence=True,
            linger_ms=5,
            compression_type=None,
            delivery_timeout_ms=delivery_timeout_ms,
            request_timeout_ms=min(delivery_timeout_ms - 1000, 15_000),
            max_in_flight_requests_per_connection=5,
        )
        self._timeout_s = delivery_timeout_ms / 1000 + 5

    def send_all(self, records: Sequence[OutRecord]) -> None:
        """Send ``records`` and wait until each one is acknowledged by all in-sync replicas.

        Raises :class:`RecordRejected` when a record is refused for what it is (larger than
        the broker or client accepts, invalid), :class:`TransientError` for anything else.
        """
        try:
            futures = [
                self._producer.send(r.topic, value=r.value, key=r.key, headers=r.headers or [])
                for r in records
            ]
            for future in futures:
                future.get(timeout=self._timeout_s)
        except _REFUSED as exc:
            raise RecordRejected(f"Kafka refused a record: {exc!r}") from exc
        except KafkaError as exc:
            raise TransientError(f"Kafka did not acknowledge a record: {exc!r}") from exc

    def close(self, timeout_s: float = 10.0) -> None:
        with contextlib.suppress(KafkaError):
            self._producer.flush(timeout=timeout_s)
        self._producer.close(timeout=timeout_s)
