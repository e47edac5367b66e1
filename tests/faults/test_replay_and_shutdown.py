"""Scenarios 2 (SIGTERM mid-batch, repeated) and 9 (replay from the earliest offset)."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import pytest
import sqlalchemy as sa
from kafka import KafkaConsumer, TopicPartition
from kafka.structs import OffsetAndMetadata
from scenario import CLIENTS

pytestmark = [pytest.mark.faults, pytest.mark.slow]

GRACE_S = 30  # Kubernetes' default terminationGracePeriodSeconds


@pytest.mark.parametrize("kafka_client", CLIENTS)
def test_sigterm_mid_batch_redelivers_nothing_and_exits_0(scenario):
    n = 1000
    scenario.produce(n)
    shutdowns = []
    for _ in range(4):
        consumer = scenario.start(
            failpoints="predict=sleep:0.5", max_in_flight=64, max_poll_records=32
        )
        # mid-run, once this consumer is busy: it has stored 40 results of its own
        scenario.wait_stored(scenario.ledger.stored_count() + 40, 120)
        started = time.monotonic()
        code = consumer.terminate(timeout_s=GRACE_S + 30)
        shutdowns.append(time.monotonic() - started)
        assert code == 0, scenario.tail()
        assert scenario.ledger.stored_count() < n, "the SIGTERM must land mid-run"
    final = scenario.start()
    scenario.wait_lag_zero(300)
    assert final.terminate() == 0, scenario.tail()
    figures = scenario.ledger.figures(
        scenario.label("2 sigterm x4"), scenario.logs, None, slowest_exit_s=round(max(shutdowns), 1)
    )
    assert (figures.lost, figures.duplicates) == (0, 0)
    assert figures.redeliveries == 0, "a clean shutdown must commit everything it finished"
    assert max(shutdowns) < GRACE_S


def _snapshot(url: str) -> tuple[Sequence[Any], Sequence[Any]]:
    engine = sa.create_engine(url, poolclass=sa.NullPool)
    try:
        with engine.connect() as conn:
            results = conn.execute(
                sa.text(
                    "select asset_id, function, model_version, etag, result::text, processed_at,"
                    " stored_at, source_offset from function_results order by 1, 2"
                )
            ).all()
            tags = conn.execute(
                sa.text(
                    "select asset_id, function, label, ordinal, score, model_version, created_at,"
                    " source_offset from tags order by 1, 2, 3, 4"
                )
            ).all()
        return results, tags
    finally:
        engine.dispose()


def _row_changes(url: str) -> int:
    """Rows inserted, updated or deleted in the store's tables, as PostgreSQL counts them."""
    engine = sa.create_engine(url, poolclass=sa.NullPool)
    try:
        with engine.connect() as conn:
            return int(
                conn.execute(
                    sa.text(
                        "select coalesce(sum(n_tup_ins + n_tup_upd + n_tup_del), 0)"
                        " from pg_stat_user_tables"
                        " where relname in ('assets', 'function_results', 'tags')"
                    )
                ).scalar_one()
            )
    finally:
        engine.dispose()


def _reset_to_earliest(bootstrap: str, group: str, topic: str) -> None:
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
    try:
        parts = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic)]
        consumer.assign(parts)
        starts = consumer.beginning_offsets(parts)
        consumer.commit({tp: OffsetAndMetadata(starts[tp], "", -1) for tp in parts})
    finally:
        consumer.close(autocommit=False)


@pytest.mark.parametrize("kafka_client", CLIENTS)
def test_replay_from_earliest_changes_no_row(scenario):
    n = 400
    scenario.produce(n)
    first = scenario.start()
    scenario.wait_lag_zero(240)
    assert first.terminate() == 0, scenario.tail()
    before = _snapshot(scenario.ledger.store_url)
    time.sleep(1.5)  # let PostgreSQL flush the first run's row counters
    changes_before = _row_changes(scenario.ledger.store_url)
    _reset_to_earliest(scenario.kafka, scenario.group, scenario.topic)
    assert scenario.lag() == n
    replay = scenario.start()
    recover = scenario.time_to_progress_by_lag(n, 240)
    scenario.wait_lag_zero(240)
    assert replay.terminate() == 0, scenario.tail()
    time.sleep(1.5)
    changed = _row_changes(scenario.ledger.store_url) - changes_before
    figures = scenario.ledger.figures(
        scenario.label("9 replay"), scenario.logs, recover, rows_changed=changed
    )
    assert (figures.lost, figures.duplicates) == (0, 0)
    # every event delivered again (at least once more: a stuck group join retried with a new
    # consumer redelivers some a third time, which is allowed at least once)
    assert figures.redeliveries >= figures.produced and figures.max_attempts >= 2
    assert _snapshot(scenario.ledger.store_url) == before
    assert changed == 0
