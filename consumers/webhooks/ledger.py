"""What ``tagfleet webhook redrive`` has delivered: a record per dead letter, so each is sent
once however often the command runs.

The ledger is a compacted topic beside the webhook dead-letter topic (``<dlq>.redrives``,
like ``tagfleet dlq redrive``'s: no table, nothing to migrate, it lives and is kept where the
dead letters are). Each record is keyed by the dead letter's position
(``topic:partition:offset``) and says which endpoint got it and when. An entry is written
after the endpoint answered 2xx: if the command dies between the two, a rerun sends that one
again (at least once, never lost).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from consumers.dlq import TopicMissing, ensure_compacted_topic, read_all


def ledger_topic(dlq_topic: str) -> str:
    return dlq_topic + ".redrives"


def position(record: Any) -> str:
    """Where a dead letter is: its ledger key."""
    return f"{record.topic}:{record.partition}:{record.offset}"


def delivered(kafka: dict[str, Any], topic: str) -> set[str]:
    """The positions the ledger holds (none when it does not exist yet)."""
    try:
        records = read_all(kafka, topic)
    except TopicMissing:
        return set()
    return {r.key.decode() for r in records if r.key is not None and r.value}


def entry(where: str, endpoint_id: str) -> tuple[bytes, bytes]:
    """The ledger record (key, value) of a dead letter delivered to ``endpoint_id`` now."""
    value = {
        "dead_letter": where,
        "endpoint": endpoint_id,
        "delivered_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    return where.encode(), json.dumps(value).encode()


def ensure(kafka: dict[str, Any], topic: str) -> None:
    """Create the ledger topic (compacted, one partition) unless it exists."""
    ensure_compacted_topic(kafka, topic)
