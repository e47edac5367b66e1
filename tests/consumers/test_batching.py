import queue
import threading
import time

from consumers.batching import collect_batch


def test_takes_a_full_batch_without_waiting_when_items_are_queued():
    q: queue.Queue[int] = queue.Queue()
    for i in range(10):
        q.put(i)
    assert collect_batch(q, max_size=4, max_wait_s=60, idle_timeout_s=60) == [0, 1, 2, 3]
    assert q.qsize() == 6


def test_returns_a_partial_batch_after_the_wait_when_idle():
    q: queue.Queue[int] = queue.Queue()
    q.put(1)
    assert collect_batch(q, max_size=8, max_wait_s=0.05, idle_timeout_s=1) == [1]


def test_returns_empty_when_nothing_arrives():
    q: queue.Queue[int] = queue.Queue()
    assert collect_batch(q, max_size=8, max_wait_s=0.01, idle_timeout_s=0.01) == []


def test_items_arriving_during_the_wait_join_the_batch():
    q: queue.Queue[int] = queue.Queue()
    q.put(0)

    def later() -> None:
        time.sleep(0.02)
        q.put(1)

    threading.Thread(target=later).start()
    assert collect_batch(q, max_size=2, max_wait_s=5, idle_timeout_s=1) == [0, 1]
