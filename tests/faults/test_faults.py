"""Scenarios 1 and 3 to 8 of the fault suite (issue 5) on the real stack, counted by the ledger.

Outages touch the shared stack: Kafka is stopped for a few seconds, PostgreSQL for 30 s, and
moto's S3 server is paused (SIGSTOP) for 30 s, since stopping it would lose every bucket.
"""

from __future__ import annotations

import json
import threading
import time

import pytest
from harness import wait_until
from scenario import CLIENTS

pytestmark = [pytest.mark.faults, pytest.mark.slow]

OUTAGE_S = 30
SLOW = "predict=sleep:0.5"  # about 30 images/s: the fault lands while work is left


def _assert_clean(figures) -> None:
    assert (figures.lost, figures.duplicates) == (0, 0), figures.line()


def _assert_both_lanes(figures) -> None:
    """Both lanes carried work and lost none of it (``Scenario.use_backfill_lane``)."""
    lanes = figures.extra
    assert lanes["upload_stored"] > 0 and lanes["backfill_stored"] > 0, figures.line()
    assert (lanes["upload_lost"], lanes["backfill_lost"]) == (0, 0), figures.line()


def _assert_embeddings(scenario, figures) -> None:
    """One embedding per stored live asset per backbone, no second copy after the replays,
    none of a removed asset (``Scenario.keep_embeddings``)."""
    assert scenario.embeddings is not None
    faults = scenario.ledger.embedding_faults(scenario.embeddings, scenario.backbones())
    assert not faults, f"{faults}\n{figures.line()}"
    assert figures.extra.get("removed_but_current", 0) == 0, figures.line()


@pytest.mark.parametrize("kafka_client", CLIENTS)
def test_1_sigkill_at_failpoints_loses_nothing(scenario, kafka_client):
    n = 2000
    # on kafka-python: half the events on the backfill lane (both lanes through the kills), and
    # the embedding store checked after the replays; a few assets removed at the end
    lanes = kafka_client == "kafka-python"
    if lanes:
        scenario.use_backfill_lane(backfill_share=0.5)
        # the lane's bound above its default 4 (the lane is still paused and its records handed
        # back while uploads are in flight): the backfill drains faster, 111 s instead of 177
        scenario.flags["backfill_max_in_flight"] = 16
        scenario.keep_embeddings()
        removable = scenario.produce_removable(4)
    scenario.produce(n)
    rounds = [
        "fetch=kill@300",
        "after_infer=kill@20",
        "after_store=kill@12",
        "fetch=kill@200",
        "after_store=kill@6",
        "after_infer=kill@10",
    ]
    recover = []
    for spec in rounds:
        before = scenario.ledger.stored_count()
        consumer = scenario.start(failpoints=spec)
        started = time.monotonic()
        # a kill at the 200th fetch may land before this consumer's first store (a loaded
        # machine, the first batch's warm-up): then there is no progress to wait for
        wait_until(
            lambda c=consumer, b=before: scenario.ledger.stored_count() > b or not c.alive(),
            180,
            0.2,
            what="progress or the kill",
        )
        if scenario.ledger.stored_count() > before:
            recover.append(time.monotonic() - started)
        assert consumer.wait(180) == -9, scenario.tail()
        assert '"message": "failpoint"' in consumer.logs(), scenario.tail()
    assert scenario.ledger.stored_count() < n, "the kills must happen mid-run"
    final = scenario.start()
    scenario.wait_lag_zero(400)
    if lanes:  # the removals after their creates were stored (and replayed)
        scenario.remove(removable)
        scenario.wait_lag_zero(120)
    assert final.terminate() == 0, scenario.tail()
    figures = scenario.ledger.figures(
        scenario.label("1 sigkill x6"), scenario.logs, max(recover, default=None), kills=len(rounds)
    )
    _assert_clean(figures)
    assert figures.redeliveries > 0, "a kill after the store write must redeliver"
    if lanes:
        _assert_both_lanes(figures)
        _assert_embeddings(scenario, figures)


def _outage(scenario, down, up, hold_s: float, n: int = 1500, **flags):
    scenario.produce(n)
    consumer = scenario.start(failpoints=SLOW, **flags)
    scenario.wait_stored(150, 180)
    before = scenario.ledger.stored_count()
    down()
    time.sleep(hold_s)
    alive_during = consumer.alive()
    up()
    assert before < n, "the fault must land mid-run"
    recover = scenario.time_to_progress(240, before)
    scenario.wait_lag_zero(300)
    assert consumer.alive(), scenario.tail()
    assert consumer.terminate() == 0, scenario.tail()
    return alive_during, recover


@pytest.mark.parametrize("kafka_client", CLIENTS)
def test_3_kafka_broker_restart(scenario, stack_control):
    alive, recover = _outage(
        scenario, lambda: stack_control.stop("kafka"), lambda: stack_control.start("kafka"), 5
    )
    figures = scenario.ledger.figures(scenario.label("3 kafka restart"), scenario.logs, recover)
    _assert_clean(figures)
    assert alive and figures.dead_lettered == 0


def test_4_postgres_down_30s(scenario, stack_control):
    alive, recover = _outage(
        scenario,
        lambda: stack_control.stop("postgres"),
        lambda: stack_control.start("postgres"),
        OUTAGE_S,
    )
    figures = scenario.ledger.figures("4 postgres down 30s", scenario.logs, recover)
    _assert_clean(figures)
    assert alive, "the consumer must pause and retry, not crash"
    assert figures.dead_lettered == 0
    assert figures.extra.get("transient_logged", 0) > 0


def test_5_s3_unresponsive_30s(scenario, stack_control):
    alive, recover = _outage(
        scenario, lambda: stack_control.pause("s3"), lambda: stack_control.resume("s3"), OUTAGE_S
    )
    figures = scenario.ledger.figures("5 s3 paused 30s", scenario.logs, recover)
    _assert_clean(figures)
    assert alive and figures.dead_lettered == 0


@pytest.mark.parametrize("kafka_client", CLIENTS)
def test_6_members_join_and_leave_while_saturated(scenario, kafka_client):
    n = 2000
    flags: dict[str, int] = dict(max_in_flight=64, max_poll_records=32, max_poll_interval_ms=20_000)
    # on confluent (scenario 1 has kafka-python): half the events on the backfill lane, whose
    # partitions are paused and resumed across every join and leave, and the embedding store,
    # written by two members at once during the rebalances
    lanes = kafka_client == "confluent"
    if lanes:
        scenario.use_backfill_lane(backfill_share=0.5)
        scenario.keep_embeddings()
        flags["backfill_max_in_flight"] = 32  # saturated: both lanes' work in the stages
    scenario.produce(n)
    steady = scenario.start(failpoints=SLOW, **flags)
    scenario.wait_stored(50, 180)
    peaks: list[float] = []
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            status, text = steady.get("/metrics")
            for line in text.splitlines():
                if line.startswith("tagfleet_in_flight "):
                    peaks.append(float(line.split()[1]))
            time.sleep(0.2)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    churn = 0
    deadline = time.monotonic() + 240  # a guard: each cycle is a start-up, a join, a leave
    while churn < 6 and time.monotonic() < deadline:
        other = scenario.start(failpoints=SLOW, **flags)
        # joins (ready: fleet loaded, group joined), stays a few seconds, leaves
        wait_until(lambda o=other: o.get("/readyz")[0] == 200, 120, 0.2, what="joined")
        time.sleep(2 + churn % 3)
        if churn % 2:
            other.kill()
        else:
            other.terminate(60)
        churn += 1
    try:
        wait_until(lambda: scenario.lag() == 0, 300, what="lag 0 after the churn")
    except AssertionError:
        status, body = steady.get("/healthz")
        gauges = [
            line
            for line in steady.get("/metrics")[1].splitlines()
            if line.startswith(("tagfleet_in_flight", "tagfleet_paused", "tagfleet_rewound"))
        ]
        pytest.fail(
            f"the steady consumer is stuck; /healthz {status} {body}\n{gauges}\n"
            f"{steady.thread_dump()}\n{scenario.tail()}"
        )
    finally:
        stop.set()
        sampler.join()
    assert steady.terminate() == 0, scenario.tail()
    figures = scenario.ledger.figures(
        scenario.label("6 join/leave churn"),
        scenario.logs,
        None,
        members_churned=churn,
        peak_in_flight=max(peaks),
    )
    _assert_clean(figures)
    assert churn >= 5
    assert max(peaks) <= 64 + 32, "over-fetched beyond max_in_flight + max_poll_records"
    if lanes:
        _assert_both_lanes(figures)
        _assert_embeddings(scenario, figures)


def test_7_batch_slower_than_max_poll_interval(scenario):
    scenario.produce(300)
    consumer = scenario.start(
        failpoints="predict=sleep:15@4x1", max_poll_interval_ms=5000, session_timeout_ms=6000
    )
    wait_until(lambda: '"failpoint"' in consumer.logs(), 180, what="the slow batch")
    during = [consumer.get("/healthz")[0] for _ in range(5) if not time.sleep(2)]
    scenario.wait_lag_zero(300)
    assert consumer.terminate() == 0, scenario.tail()
    after = consumer.logs().split('"message": "failpoint"', 1)[1]
    figures = scenario.ledger.figures(
        "7 batch > max_poll_interval",
        scenario.logs,
        None,
        rebalances_after=after.count("rebalance"),
    )
    _assert_clean(figures)
    assert set(during) == {200}, "the consume loop keeps turning during a slow batch"
    assert '"rebalance"' not in after, "the member was evicted during the slow batch"


def test_8_bad_deploy_stops_instead_of_dead_lettering(scenario):
    scenario.produce(200)
    broken = scenario.start(failpoints="predict=raise")
    code = broken.wait(240)
    log = broken.logs()
    assert code == 3, scenario.tail()
    fatal = [json.loads(line) for line in log.splitlines() if '"CRITICAL"' in line]
    assert fatal, scenario.tail()
    assert scenario.ledger.stored_count() == 0
    fixed = scenario.start()
    recover = scenario.time_to_progress(180)
    scenario.wait_lag_zero(300)
    assert fixed.terminate() == 0, scenario.tail()
    figures = scenario.ledger.figures("8 bad deploy", scenario.logs, recover, exit_code=code)
    _assert_clean(figures)
    assert figures.dead_lettered == 0, "a broken model must not dead-letter the topic"
