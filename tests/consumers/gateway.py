"""A VersityGW of a test's own (infra/versitygw.sh): its own state, port and events topic.

The stack's gateway publishes every test's uploads to one topic (``gw-events``); a test that
must read everything its uploads published, from the gateway's start on, starts its own.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from pathlib import Path
from typing import Any

from harness import REPO, free_port

GW_SCRIPT = REPO / "infra" / "versitygw.sh"


def gateway_client(endpoint: str, access: str, secret: str) -> Any:
    """A boto3 S3 client on a gateway (path-style addressing, few retries)."""
    import boto3
    from botocore.config import Config

    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id=access,
        aws_secret_access_key=secret,
        config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 2}),
    )


class PrivateGateway:
    """``infra/versitygw.sh start`` with its own state directory, port and events topic
    (``partitions`` partitions); :meth:`stop` stops it and removes its state."""

    def __init__(self, stack: dict[str, str], partitions: int = 4) -> None:
        # beside the stack's own state: a filesystem known to hold the posix backend's xattrs
        stack_dir = Path(os.environ.get("TAGFLEET_STACK_DIR", REPO / "var" / "stack"))
        self.state = stack_dir / "versitygw-tests" / uuid.uuid4().hex[:12]
        self.topic = f"gw-events-{uuid.uuid4().hex[:12]}"
        self.endpoint = f"http://127.0.0.1:{free_port()}"
        self.access = stack["TAGFLEET_GW_ACCESS_KEY"]
        self.secret = stack["TAGFLEET_GW_SECRET_KEY"]
        self._env = {
            **os.environ,
            "TAGFLEET_STACK_DIR": str(self.state),
            "TAGFLEET_GW_PORT": self.endpoint.rsplit(":", 1)[1],
            "TAGFLEET_GW_EVENTS_TOPIC": self.topic,
            "TAGFLEET_GW_EVENTS_PARTITIONS": str(partitions),
            "TAGFLEET_GW_ACCESS_KEY": self.access,
            "TAGFLEET_GW_SECRET_KEY": self.secret,
        }
        self.client = gateway_client(self.endpoint, self.access, self.secret)

    def s3_env(self) -> dict[str, str]:
        """The environment that points a tagfleet process (boto3's own chain) at it."""
        return {
            "AWS_ENDPOINT_URL_S3": self.endpoint,
            "AWS_ACCESS_KEY_ID": self.access,
            "AWS_SECRET_ACCESS_KEY": self.secret,
            "AWS_DEFAULT_REGION": "us-east-1",
        }

    def _run(self, command: str) -> None:
        result = subprocess.run(
            [str(GW_SCRIPT), command],
            env=self._env,
            capture_output=True,
            text=True,
            timeout=900,
            check=False,
        )
        if result.returncode != 0:
            raise RuntimeError(
                f"infra/versitygw.sh {command} exited {result.returncode}:\n"
                f"{result.stdout}\n{result.stderr}"
            )

    def start(self) -> PrivateGateway:
        self._run("start")
        return self

    def restart(self) -> None:
        """Stop and start it again (its state kept): its sequencer counter starts again at 1."""
        self._run("restart")

    def stop(self, admin: Any) -> None:
        try:
            self._run("stop")
        finally:
            shutil.rmtree(self.state, ignore_errors=True)
            try:
                admin.delete_topics([self.topic], timeout_ms=30_000, raise_errors=False)
            except Exception as exc:  # cleanup must not mask the outcome of the test
                print(f"gateway: could not delete {self.topic}: {exc!r}")
