"""Priority lanes end to end on the real stack (Kafka, S3, PostgreSQL), on both Kafka clients:
with the backfill topic full of events, an upload event is served before the backfill lane
drains, and the backfill lane still drains, every event stored once and committed. Order and
progress only, no timing (the latency figures are benchmarks.priority_lanes')."""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from harness import (
    ConsumerProcess,
    env_for,
    free_port,
    group_lag,
    native_event,
    produce,
    read_topic,
    upload_images,
    wait_until,
)

pytestmark = pytest.mark.integration

BACKFILL = 200


@pytest.mark.parametrize("client", ["kafka-python", "confluent"])
def test_an_upload_is_served_before_a_full_backfill_lane_drains(
    stack,
    kafka_bootstrap,
    kafka_admin,
    new_topic,
    new_bucket,
    s3,
    pg_url,
    fleet_path,
    tmp_path,
    client,
):
    bucket = new_bucket()
    keys = upload_images(s3, bucket, 41)
    library, upload = keys[:40], keys[40]
    uploads, backfill = new_topic(partitions=2), new_topic(partitions=2)
    results, dlq = new_topic(partitions=1), new_topic(partitions=1)  # one partition: one order
    # the library cycled: the same objects again and again, each event its own work
    produce(
        kafka_bootstrap, backfill, [native_event(bucket, library[i % 40]) for i in range(BACKFILL)]
    )
    group = f"g-{uploads}"
    consumer = ConsumerProcess(
        tmp_path / "consumer.log",
        env_for(stack),
        bootstrap_servers=kafka_bootstrap,
        topic=uploads,
        backfill_topic=backfill,
        group_id=group,
        results_topic=results,
        dlq_topic=dlq,
        store=pg_url,
        fleet=fleet_path,
        metrics_port=free_port(),
        kafka_client=client,
        batch_size=8,
        backfill_max_in_flight=8,
    )
    try:
        # the backfill lane is being served: some results are out
        wait_until(
            lambda: len(read_topic(kafka_bootstrap, results, expected=1, timeout_s=2)) > 0,
            120,
            what="backfill started",
        )
        produce(kafka_bootstrap, uploads, [native_event(bucket, upload)])
        wait_until(
            lambda: (
                group_lag(kafka_admin, kafka_bootstrap, group, backfill) == 0
                and group_lag(kafka_admin, kafka_bootstrap, group, uploads) == 0
            ),
            240,
            what="both lanes drained",
        )
    finally:
        code = consumer.terminate()
    assert code == 0, consumer.logs()[-3000:]
    records = read_topic(kafka_bootstrap, results, expected=BACKFILL + 1)
    order = [r.key.decode() for r in records]
    assert len(order) == BACKFILL + 1  # every event once: nothing lost to the handed-back records
    served_at = order.index(f"s3://{bucket}/{upload}")
    after = len(order) - 1 - served_at
    # the upload came ahead of most of the backfill queued before it
    assert after >= BACKFILL // 2, (served_at, after)
    engine = sa.create_engine(pg_url)
    with engine.connect() as conn:
        stored = conn.execute(sa.text("select count(*) from assets")).scalar_one()
    engine.dispose()
    assert stored == 41
    assert read_topic(kafka_bootstrap, dlq, expected=0, timeout_s=3) == []
