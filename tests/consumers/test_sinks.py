"""The producer against the real broker: a record refused for its size is named, the others
are acknowledged; nothing is retried for ever."""

from __future__ import annotations

import pytest
from harness import read_topic

from consumers.sinks import OutRecord, Producer, RecordRejected


def test_a_refused_record_is_named_and_the_others_are_acknowledged(
    kafka_bootstrap: str, new_topic
) -> None:
    topic = new_topic(partitions=1)
    producer = Producer({"bootstrap_servers": [kafka_bootstrap]})
    records = [
        OutRecord(topic, b"a", b"small"),
        OutRecord(topic, b"b", b"x" * 2_000_000),  # over the 1 MB request limit
        OutRecord(topic, b"c", b"small too"),
    ]
    try:
        with pytest.raises(RecordRejected) as info:
            producer.send_all(records)
        assert info.value.refused == (1,)
    finally:
        producer.close()
    got = read_topic(kafka_bootstrap, topic, expected=2, timeout_s=30)
    assert sorted(r.key for r in got) == [b"a", b"c"]
