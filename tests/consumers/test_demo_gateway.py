"""The demo's follower (consumers.demo_gateway.follow): pure logic on the service's metrics."""

from __future__ import annotations

import threading

from consumers.demo_gateway import follow
from consumers.metrics import Metrics


def test_the_removal_follows_the_tags_and_the_demo_stops_once_it_is_applied() -> None:
    metrics, stop, calls = Metrics(), threading.Event(), []

    def remove_one() -> None:
        calls.append("remove")
        metrics.events.labels("removed").inc()

    follower = threading.Thread(target=follow, args=(metrics, 2, remove_one, stop, 30.0))
    follower.start()
    metrics.events.labels("stored").inc(2)
    assert not stop.wait(0.5) and calls == []  # the malformed event is not dead-lettered yet
    metrics.events.labels("dead_lettered").inc()
    follower.join(10)
    assert stop.is_set() and calls == ["remove"]


def test_the_demo_stops_after_its_timeout() -> None:
    stop = threading.Event()
    follow(Metrics(), 5, lambda: None, stop, 0.3)
    assert stop.is_set()
