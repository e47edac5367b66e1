"""What ``/readyz``, ``/healthz`` and the ``tagfleet_ready`` gauge report, from the service's
own state.

Readiness gates on what is this pod's own business: its fleet is loaded, it has joined the
group once, it has reached the store once, it is not stopping. It does not follow a shared
dependency afterwards: a database (or broker) outage would otherwise make every pod NotReady
at the same moment, which blocks node drains (the PodDisruptionBudget has no disruption left)
and rollouts while changing nothing about the work, since the pipeline already pauses its
partitions and retries. Such an outage shows in ``tagfleet_paused_partitions``,
``tagfleet_transient_errors_total`` and the alerts instead. See docs/deploy.md, "Probes".

Liveness fails until the fleet is loaded (the startup probe waits for it), and afterwards
only for a state a restart can cure: a stuck consume loop, a fatal fault, a member stuck in
a rebalance or no longer fetching a partition, partitions with lag and nothing completed, an
inference batch hung in the model.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import TYPE_CHECKING, Any

from consumers.settings import Settings

if TYPE_CHECKING:
    from consumers.pipeline import Pipeline
    from consumers.ports import Source

log = logging.getLogger(__name__)

_STUCK_LOOP_S = 60.0
_STORE_PING_EVERY_S = 5.0


class Readiness:
    """The state the probes and the ready gauge report; set by ``serve`` as start-up proceeds.

    ``ready()`` and ``alive()`` never block for long: the store is pinged only until it has
    answered once, at most every 5 s. Safe to call from any thread.
    """

    def __init__(self) -> None:
        self.fleet_loaded = False
        self.source: Source | None = None
        self.store: Any = None
        self.pipeline: Pipeline | None = None
        self._store_reached = False
        self._store_checked = 0.0
        self._pinger: threading.Thread | None = None
        self._lock = threading.Lock()

    def ready(self) -> dict[str, bool]:
        return {
            "fleet_loaded": self.fleet_loaded,
            "joined_group": bool(self.source and self.source.joined),
            "store_reached_once": self._store_reached_once(),
            "not_stopping": not (self.pipeline and self.pipeline.stopping.is_set()),
        }

    def is_ready(self) -> bool:
        return all(self.ready().values())

    def export(self, gauge: Any) -> None:
        """Make ``gauge`` (``tagfleet_ready``) read this state at every scrape, so it is true
        whoever asks: no request to ``/readyz`` is needed."""
        gauge.set_function(lambda: 1.0 if self.is_ready() else 0.0)

    def alive(self) -> dict[str, bool]:
        pipeline = self.pipeline
        loop_ok = pipeline is None or time.monotonic() - pipeline.loop_heartbeat < _STUCK_LOOP_S
        return {
            "fleet_loaded": self.fleet_loaded,
            "consume_loop": loop_ok,
            "not_fatal": not (pipeline and pipeline.fatal_reason),
            "not_stuck_rebalancing": pipeline is None
            or pipeline.rebalancing_s() < _rebalance_limit_s(pipeline.settings),
            "not_stalled_fetching": pipeline is None
            or pipeline.fetch_stalled_s() < pipeline.settings.liveness_stall_s,
            "making_progress": pipeline is None
            or pipeline.idle_with_lag_s() < pipeline.settings.liveness_stall_s,
            "inference_not_hung": pipeline is None
            or pipeline.inference_stuck_s() < pipeline.settings.max_inference_s,
        }

    def _store_reached_once(self) -> bool:
        if self._store_reached or self.store is None:
            return self._store_reached
        # The ping runs on its own thread: a database that does not answer must not hold a
        # probe or /metrics (the ready gauge reads this) past Prometheus's scrape timeout.
        with self._lock:
            pinging = self._pinger is not None and self._pinger.is_alive()
            due = not pinging and time.monotonic() - self._store_checked > _STORE_PING_EVERY_S
            if due:
                self._store_checked = time.monotonic()
                self._pinger = threading.Thread(
                    target=self._ping_store, name="store-ping", daemon=True
                )
        if due and self._pinger is not None:
            self._pinger.start()
        return self._store_reached

    def store_reached(self) -> None:
        """Record that the store answered (the start-up migrations did): no ping needed."""
        self._store_reached = True

    def _ping_store(self) -> None:
        try:
            self.store.ping()
            self._store_reached = True
        except Exception:  # noqa: BLE001 - not reached yet, whatever the reason
            log.info("store not reached yet", exc_info=True)


def _rebalance_limit_s(settings: Settings) -> float:
    """How long a (re)join may take before the member counts as stuck: the broker's rebalance
    timeout (kafka-python sends ``max_poll_interval_ms``) plus one session, plus a margin."""
    return (settings.max_poll_interval_ms + settings.session_timeout_ms) / 1000 + 30
