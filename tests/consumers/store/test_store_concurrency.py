"""Two consumers (separate engines and connections) saving the same assets at once, e.g.
after a rebalance: no duplicates, no failures, and every replay skipped by one of them."""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

import sqlalchemy as sa
from store_factories import classify, detect, make_result, tags_fn

from consumers.store import SaveStats, TagStore

ROUNDS = 30
T = TypeVar("T")


def _race(url: str, work: Callable[[TagStore, int, int], T]) -> list[list[T]]:
    """Run work(store, worker, round) in two threads, each with its own store, in lock step."""
    stores = [TagStore(url) for _ in range(2)]
    stores[0].upgrade()
    barrier = threading.Barrier(2)

    def worker(index: int) -> list[T]:
        out = []
        for n in range(ROUNDS):
            barrier.wait(timeout=60)
            out.append(work(stores[index], index, n))
        return out

    try:
        with ThreadPoolExecutor(2) as pool:
            return [f.result() for f in [pool.submit(worker, i) for i in range(2)]]
    finally:
        for store in stores:
            store.close()


def _duplicates(url: str) -> list[tuple[object, ...]]:
    engine = sa.create_engine(url, poolclass=sa.NullPool)
    try:
        with engine.connect() as conn:
            return list(
                conn.exec_driver_sql(
                    "SELECT asset_id, function, label, ordinal, count(*) FROM tags "
                    "GROUP BY asset_id, function, label, ordinal HAVING count(*) > 1"
                )
            )
    finally:
        engine.dispose()


def test_same_result_saved_by_two_consumers_at_once(store_url: str) -> None:
    def work(store: TagStore, _worker: int, n: int) -> SaveStats:
        return store.save([make_result(f"s3://bucket/{n}.jpg")])

    first, second = _race(store_url, work)

    check = TagStore(store_url)
    for n, (a, b) in enumerate(zip(first, second, strict=True)):
        # Exactly one of them wrote each function; the other found it stored and skipped it.
        assert a.replaced_functions + b.replaced_functions == 3, (n, a, b)
        assert a.unchanged_functions + b.unchanged_functions == 3, (n, a, b)
        assert len(check.tags_for_asset(f"s3://bucket/{n}.jpg")) == 5
    check.close()
    assert _duplicates(store_url) == []


def test_overlapping_batches_in_opposite_orders_do_not_deadlock(store_url: str) -> None:
    """Different versions, overlapping assets listed in opposite orders: rows are locked in
    key order, so neither transaction waits for the other in a cycle."""

    def work(store: TagStore, worker: int, n: int) -> SaveStats:
        version = f"v{n}-{worker}"
        batch = [
            make_result(
                f"s3://bucket/{i}.jpg",
                {"make": classify(version), "colour": tags_fn(version), "logos": detect(version)},
            )
            for i in range(8)
        ]
        return store.save(batch if worker == 0 else batch[::-1])

    _race(store_url, work)

    check = TagStore(store_url)
    versions = check.current_versions([f"s3://bucket/{i}.jpg" for i in range(8)])
    for i in range(8):
        tags = check.tags_for_asset(f"s3://bucket/{i}.jpg")
        # Whoever won, each function's tags belong to its stored version and only to it.
        for function, version in versions[f"s3://bucket/{i}.jpg"].items():
            assert {t.model_version for t in tags if t.function == function} == {version}
        assert len(tags) == 5
    check.close()
    assert _duplicates(store_url) == []
