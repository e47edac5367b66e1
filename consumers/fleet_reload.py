"""Live fleet reload: watch the fleet file, load and check a changed one, offer it to inference.

The watcher thread looks at the fleet file every ``fleet_poll_s`` (a local file's mtime and
size, an ``s3://`` object's ETag). A changed file is read, loaded and run on a canary image
here, off the inference thread; a fleet that fails to load, fails the canary or needs another
input size or other tilings (the decoder makes images of the size, and cuts the tiles, it
started with; outcome ``input_size_changed``: restart the service to change them) is
refused: the old one keeps serving, ``tagfleet_fleet_reloads_total{outcome}`` and an error
log line say why. A fleet that passes first makes the store follow it
(``TagStore.follow_fleet``: a rollback's kept results current again, removed functions
unserved or purged), then is offered; the inference stage takes it between two batches
(:meth:`FleetReloader.take`), so every item runs through exactly one fleet and nothing in
flight is dropped or repeated.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

import numpy as np

from consumers.metrics import Metrics

log = logging.getLogger(__name__)


def export_fleet(metrics: Metrics, fleet: Any) -> None:
    """``tagfleet_fleet_function_info``: one series per serving function and shadow."""
    metrics.fleet_function.clear()
    for name, info in fleet.functions.items():
        metrics.fleet_function.labels(name, info.type, info.version, "serving").set(1)
    for name, info in getattr(fleet, "shadows", {}).items():
        metrics.fleet_function.labels(name, info.type, info.version, "shadow").set(1)
        for outcome in ("agree", "differ"):  # both series exist from the first image on
            metrics.shadow_agreement.labels(name, outcome)


def follow(store: Any, config: Any) -> None:
    """Make the store follow ``config`` (a :class:`models.fleet.FleetConfig`)."""
    from models.fleet import store_state

    stats = store.follow_fleet(*store_state(config))
    if stats.restored or stats.unserved or stats.purged:
        log.info(
            "store follows the fleet",
            extra={"restored": stats.restored, "unserved": stats.unserved, "purged": stats.purged},
        )


class FleetReloader:
    """Watches ``path`` and offers a checked new fleet; see the module docstring."""

    def __init__(
        self,
        *,
        path: str,
        load: Callable[[Any], Any],
        input_size: int,
        store: Any,
        metrics: Metrics,
        interval_s: float,
        tiled: dict[str, tuple[Any, ...]] | None = None,
    ) -> None:
        """``load(config)`` builds a fleet from a :class:`models.fleet.FleetConfig`;
        ``input_size`` and ``tiled`` (function -> its tilings, ``Fleet.tiled_functions``):
        what the service's decoder makes."""
        from models.storage import change_token

        self._path, self._load, self._input_size = path, load, input_size
        self._tiled = dict(tiled or {})
        self._store, self._metrics, self._interval_s = store, metrics, interval_s
        self._token = change_token(path)
        self._pending: Any = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="fleet-reload", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def take(self) -> Any:
        """The fleet to swap in now, once; ``None`` when there is none. Non-blocking."""
        with self._lock:
            fleet, self._pending = self._pending, None
        if fleet is not None:
            export_fleet(self._metrics, fleet)
            self._metrics.fleet_reloads.labels("applied").inc()
        return fleet

    def _run(self) -> None:
        from models.storage import change_token

        while not self._stop.wait(self._interval_s):
            try:
                token = change_token(self._path)
            except Exception as exc:  # noqa: BLE001 - the store of the file is down: next turn
                log.warning("cannot look at the fleet file", extra={"error": repr(exc)})
                continue
            if token is None or token == self._token:
                continue
            self._token = token
            self.check(self._path)

    def check(self, path: str) -> bool:
        """Load, check and offer the fleet at ``path``; False (and the old one serving) when
        it is refused."""
        from models.fleet import read_fleet_config

        try:
            config = read_fleet_config(path)
            fleet = self._load(config)
        except Exception as exc:  # noqa: BLE001 - any fault of the new fleet refuses it
            return self._refuse("load_failed", exc)
        if fleet.input_size != self._input_size:
            problem = f"input size {fleet.input_size}, the service decodes {self._input_size}"
            return self._refuse("input_size_changed", ValueError(problem))
        tiled = dict(getattr(fleet, "tiled_functions", {}))
        if tiled != self._tiled:
            problem = (
                f"tiled functions {_tiled(tiled)}, the service's decoder cuts {_tiled(self._tiled)}"
                " (restart the service to change them)"
            )
            return self._refuse("input_size_changed", ValueError(problem))
        size = fleet.input_size
        canary = np.full((size, size, 3), 127, dtype=np.uint8)
        try:
            predict = getattr(fleet, "predict_with_shadows", fleet.predict)
            predict([canary], [(size, size)], None)
        except Exception as exc:  # noqa: BLE001
            return self._refuse("canary_failed", exc)
        try:
            follow(self._store, config)
        except Exception as exc:  # noqa: BLE001 - the tags follow at the next change or start
            log.error("the store could not follow the new fleet", extra={"error": repr(exc)})
        with self._lock:
            self._pending = fleet
        log.info("new fleet loaded and checked", extra={"functions": sorted(fleet.functions)})
        return True

    def _refuse(self, outcome: str, exc: Exception) -> bool:
        self._metrics.fleet_reloads.labels(outcome).inc()
        log.error(
            "new fleet refused; the old one keeps serving",
            extra={"outcome": outcome, "error": f"{type(exc).__name__}: {exc}"[:2000]},
        )
        return False


def _tiled(tiled: dict[str, tuple[Any, ...]]) -> str:
    every = [f"{n}: {t.tile} px/{t.overlap:g}" for n, ts in sorted(tiled.items()) for t in ts]
    return ", ".join(every) or "none"
