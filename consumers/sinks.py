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
from consumers.ports import OutRecord, RecordRejected

__all__ = ["OutRecord", "Producer", "RecordRejected"]


# Errors that depend on the record itself: sending it again would fail the same way.
_REFUSED = (MessageSizeTooLargeError, RecordListTooLargeError, InvalidRecordError)


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

        Raises :class:`TransientError` when any record failed for a reason that may pass (all
        of them may then be sent again: at least once), else :class:`RecordRejected` naming
        the records refused for what they are (larger than the broker or client accepts,
        invalid) when only those failed.
        """
        refused: list[int] = []
        errors: list[KafkaError] = []
        futures: list[tuple[int, Any]] = []
        for index, record in enumerate(records):  # send all first: one batch, not a round trip each
            try:
                futures.append(
                    (
                        index,
                        self._producer.send(
                            record.topic,
                            value=record.value,
                            key=record.key,
                            headers=record.headers or [],
                        ),
                    )
                )
            except _REFUSED:  # the client's own size check
                refused.append(index)
            except KafkaError as exc:
                errors.append(exc)
        for index, future in futures:
            error = self._wait(future)
            if isinstance(error, _REFUSED):
                refused.append(index)
            elif error is not None:
                errors.append(error)
        if errors:
            raise TransientError(f"Kafka did not acknowledge a record: {errors[0]!r}")
        if refused:
            raise RecordRejected(f"Kafka refused {len(refused)} record(s)", sorted(refused))

    def _wait(self, future: Any) -> KafkaError | None:
        try:
            future.get(timeout=self._timeout_s)
        except KafkaError as exc:
            return exc
        return None

    def close(self, timeout_s: float = 10.0) -> None:
        with contextlib.suppress(KafkaError):
            self._producer.flush(timeout=timeout_s)
        self._producer.close(timeout=timeout_s)
