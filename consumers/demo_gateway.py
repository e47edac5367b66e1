"""The demo's S3 server: VersityGW, publishing its own bucket notifications to the demo's topic.

``tagfleet demo`` uploads its pictures to a gateway and writes no event of its own but one
malformed one: the tags appear because the S3 server says what was uploaded. Each run starts a
gateway of its own (``infra/versitygw.sh`` with its own port, state directory and events
topic, the stack's Kafka and the stack's cached binary), so a run reads exactly its own
notifications, from the gateway's start-up ``s3:TestEvent`` on, whatever else uses the stack's
gateway; it is stopped and its state removed when the demo ends.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from consumers.metrics import Metrics

_ACCESS = os.environ.get("TAGFLEET_GW_ACCESS_KEY", "tagfleet-gw")
_SECRET = os.environ.get("TAGFLEET_GW_SECRET_KEY", "tagfleet-gw-secret")


@dataclass
class DemoGateway:
    """A running VersityGW of one demo run. :meth:`start` blocks until it answers."""

    script: Path
    topic: str
    bootstrap: str
    port: int = 0
    state: Path = field(default_factory=Path)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @classmethod
    def start(cls, repo: Path, topic: str, bootstrap: str) -> DemoGateway:
        """Start a gateway publishing to ``topic`` (created with 2 partitions) on the Kafka at
        ``bootstrap``; its state lives under the stack's directory (a filesystem with the
        user xattrs the posix backend needs). Raises ``RuntimeError`` when it cannot start."""
        stack_dir = Path(os.environ.get("TAGFLEET_STACK_DIR", repo / "var" / "stack"))
        gateway = cls(
            script=repo / "infra" / "versitygw.sh",
            topic=topic,
            bootstrap=bootstrap,
            port=_free_port(),
            state=stack_dir / "versitygw-demo" / topic,
        )
        gateway._run("start")
        return gateway

    def use(self) -> None:
        """Point boto3's own chain (the demo's uploads and the service's fetches) at it."""
        os.environ["AWS_ENDPOINT_URL_S3"] = self.endpoint
        os.environ["AWS_ACCESS_KEY_ID"] = _ACCESS
        os.environ["AWS_SECRET_ACCESS_KEY"] = _SECRET

    def stop(self) -> None:
        """Stop it and remove its state (the events topic stays, as the demo's other ones)."""
        try:
            self._run("stop")
        finally:
            shutil.rmtree(self.state, ignore_errors=True)

    def _run(self, command: str) -> None:
        env = {
            **os.environ,
            "TAGFLEET_STACK_DIR": str(self.state),
            "TAGFLEET_GW_PORT": str(self.port),
            "TAGFLEET_GW_EVENTS_TOPIC": self.topic,
            "TAGFLEET_GW_EVENTS_PARTITIONS": "2",
            "TAGFLEET_KAFKA_PORT": self.bootstrap.rpartition(":")[2],
            "TAGFLEET_GW_ACCESS_KEY": _ACCESS,
            "TAGFLEET_GW_SECRET_KEY": _SECRET,
        }
        done = subprocess.run(  # noqa: S603 - our own script, fixed arguments
            ["bash", str(self.script), command],
            env=env,
            capture_output=True,
            text=True,
            timeout=900,
            check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(
                f"infra/versitygw.sh {command} exited {done.returncode}:\n"
                f"{done.stdout[-2000:]}{done.stderr[-2000:]}"
            )


def follow(
    metrics: Metrics,
    uploaded: int,
    remove_one: Callable[[], None],
    stop: threading.Event,
    timeout_s: float,
) -> None:
    """Wait until the ``uploaded`` pictures are stored and the malformed event dead-lettered,
    then call ``remove_one`` (which deletes a picture and shows its tags) once the removal is
    applied, then set ``stop``; set it anyway after ``timeout_s``."""

    def count(outcome: str) -> float:
        return float(metrics.events.labels(outcome)._value.get())  # noqa: SLF001

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and not stop.is_set():
        if count("stored") >= uploaded and count("dead_lettered") >= 1:
            remove_one()
            while time.monotonic() < deadline and count("removed") < 1:
                time.sleep(0.2)
            break
        time.sleep(0.2)
    stop.set()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
