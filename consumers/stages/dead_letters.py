"""Dead-letter records: sent, acknowledged, never the reason a partition stops."""

from __future__ import annotations

import logging
import queue
import threading

from consumers.batching import collect_batch
from consumers.domain import (
    PermanentError,
)
from consumers.ports import OutRecord, RecordProducer, RecordRejected
from consumers.results import dlq_headers
from consumers.retry import GaveUp, retry_transient
from consumers.stages.base import Outlets, Stage
from consumers.work import WorkItem

log = logging.getLogger(__name__)


class DeadLetterer(Stage):
    """Sends dead-letter records (original key and value, reason headers) and waits for acks.

    A record the broker refuses for its size has its value dropped (the headers say so) and
    is sent again: a dead letter is never the reason a partition stops. An item marked
    ``aggregate`` is the one record of a message whose several records failed; its reasons
    were counted when each failed.
    """

    def __init__(
        self,
        *,
        producer: RecordProducer,
        topic: str,
        out: Outlets,
        abandon: threading.Event,
    ) -> None:
        """``abandon``: set at the end of shutdown; unsent records are abandoned."""
        self._producer, self._topic, self._finish = producer, topic, out.finish
        self._metrics, self._give_up = out.metrics, abandon.is_set
        self._inbox: queue.Queue[tuple[WorkItem, PermanentError]] = queue.Queue()
        self._spawn("dlq")

    def put(self, item: WorkItem, error: PermanentError) -> None:
        self._inbox.put((item, error))

    def _run(self) -> None:
        while not self._give_up():
            group = collect_batch(self._inbox, 256, 0.0, 0.1)
            if not group:
                continue
            records = [self._record(item, error) for item, error in group]
            try:
                self._send(records)
            except GaveUp:
                for item, _ in group:
                    self._finish(item, "abandoned")
                return
            for item, error in group:
                if not item.aggregate:
                    self._metrics.dlq.labels(error.reason.value).inc()
                log.info(
                    "dead-lettered",
                    extra={
                        "reason": error.reason.value,
                        "detail": error.message,
                        "asset_id": item.asset_id,
                        "offset": getattr(item.message.position, "offset", None),
                        "partition": getattr(item.message.position, "partition", None),
                    },
                )
                self._finish(item, "dead_lettered")

    def _send(self, records: list[OutRecord]) -> None:
        try:
            self._send_retrying(records)
        except RecordRejected as exc:  # the others were acknowledged: resend only these
            self._send_retrying([_without_value(records[i], str(exc)) for i in exc.refused])

    def _send_retrying(self, records: list[OutRecord]) -> None:
        retry_transient(
            lambda: self._producer.send_all(records),
            "dlq",
            self._give_up,
            on_error=lambda s, _e: self._metrics.transient_errors.labels(s).inc(),
        )

    def _record(self, item: WorkItem, error: PermanentError) -> OutRecord:
        message = item.message
        assert message.position is not None  # dead letters exist only for polled records
        headers = dlq_headers(error.reason, error.message, message.position, item.asset_id)
        headers += error.headers
        return OutRecord(self._topic, message.key, message.value, headers)


def _without_value(record: OutRecord, why: str) -> OutRecord:
    size = len(record.value or b"")
    note = [("tagfleet-value-dropped", f"{size} bytes; {why}"[:500].encode())]
    return OutRecord(record.topic, record.key, None, (record.headers or []) + note)
