"""Helpers for service tests: a tiny fleet, generated images and events, a consumer process.

Everything here drives the real services of the local stack; nothing is faked.
"""

from __future__ import annotations

import io
import json
import os
import random
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from PIL import Image, ImageDraw

REPO = Path(__file__).resolve().parents[2]
COLOURS = {
    "red": (220, 30, 30),
    "green": (30, 180, 40),
    "blue": (30, 60, 220),
    "yellow": (230, 210, 20),
}
SHAPES = ("circle", "square", "triangle")


def build_test_fleet(directory: Path) -> Path:
    """A fleet.yaml with two zero-shot functions on the tiny backbone (deterministic weights)."""
    from models import save_artifact, zero_shot
    from models.backbones import CONFIG_DIR
    from models.fleet import FleetConfig, FleetEntry, write_fleet_config

    tiny = str(CONFIG_DIR / "tiny-vit.json")
    entries = []
    for name, kind, labels in (("shape", "classify", SHAPES), ("colours", "tags", tuple(COLOURS))):
        save_artifact(zero_shot(name, kind, labels, tiny), str(directory / name))
        entries.append(FleetEntry(name=name, artifact=name))
    path = directory / "fleet.yaml"
    write_fleet_config(path, FleetConfig(functions=entries))
    return path


def image_bytes(index: int, fmt: str = "PNG", size: tuple[int, int] = (96, 72)) -> bytes:
    """A small picture of a coloured shape, different for each ``index``."""
    colour = list(COLOURS.values())[index % len(COLOURS)]
    shape = SHAPES[(index // len(COLOURS)) % len(SHAPES)]
    img = Image.new("RGB", size, (240 - index % 50, 240, 235))
    draw = ImageDraw.Draw(img)
    w, h = size
    box = (w * 0.2 + index % 7, h * 0.2, w * 0.8, h * 0.8 - index % 5)
    if shape == "circle":
        draw.ellipse(box, fill=colour)
    elif shape == "square":
        draw.rectangle(box, fill=colour)
    else:
        draw.polygon(
            [(box[0], box[3]), (box[2], box[3]), ((box[0] + box[2]) / 2, box[1])], fill=colour
        )
    out = io.BytesIO()
    img.save(out, format=fmt)
    return out.getvalue()


def native_event(bucket: str, key: str, **extra: Any) -> tuple[bytes, bytes]:
    asset_id = f"s3://{bucket}/{key}"
    event = {"asset_id": asset_id, "uri": asset_id, **extra}
    return asset_id.encode(), json.dumps(event).encode()


def s3_notification(
    bucket: str, key: str, name: str = "ObjectCreated:Put", size: int = 0
) -> tuple[bytes, bytes]:
    """An AWS-style notification with the key URL-encoded (``+`` for space), as S3 sends it."""
    record = {
        "eventVersion": "2.1",
        "eventSource": "aws:s3",
        "eventName": name,
        "eventTime": "2026-11-29T10:00:00.000Z",
        "s3": {
            "bucket": {"name": bucket},
            "object": {"key": urllib.parse.quote_plus(key), "size": size, "eTag": "abc"},
        },
    }
    return f"s3://{bucket}/{key}".encode(), json.dumps({"Records": [record]}).encode()


def produce(
    bootstrap: str, topic: str, messages: Iterable[tuple[bytes | None, bytes | None]]
) -> int:
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
    count = 0
    for key, value in messages:
        producer.send(topic, key=key, value=value)
        count += 1
    producer.flush(30)
    producer.close()
    return count


def read_topic(bootstrap: str, topic: str, expected: int, timeout_s: float = 60) -> list[Any]:
    """Every record of ``topic`` from the beginning, waiting until ``expected`` have arrived."""
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, group_id=None)
    parts = [TopicPartition(topic, p) for p in (consumer.partitions_for_topic(topic) or [])]
    deadline = time.monotonic() + timeout_s
    while not parts and time.monotonic() < deadline:
        time.sleep(0.5)
        parts = [TopicPartition(topic, p) for p in (consumer.partitions_for_topic(topic) or [])]
    records: list[Any] = []
    if parts:
        consumer.assign(parts)
        consumer.seek_to_beginning(*parts)
        while time.monotonic() < deadline:
            for batch in consumer.poll(timeout_ms=500).values():
                records.extend(batch)
            ends = consumer.end_offsets(parts)
            if len(records) >= expected and all(consumer.position(tp) >= ends[tp] for tp in parts):
                break
    consumer.close()
    return records


def group_lag(admin: Any, bootstrap: str, group: str, topic: str) -> int | None:
    """Sum over partitions of end offset minus the group's committed offset (None: no commits)."""
    committed = admin.list_group_offsets(group).get(group, {})
    consumer = KafkaConsumer(bootstrap_servers=bootstrap)
    parts = [TopicPartition(topic, p) for p in (consumer.partitions_for_topic(topic) or [])]
    ends = consumer.end_offsets(parts)
    consumer.close()
    lag = 0
    for tp in parts:
        meta = committed.get(tp)
        if meta is None or meta.offset < 0:
            if ends[tp] > 0:
                return None
            continue
        lag += ends[tp] - meta.offset
    return lag


def wait_until(
    predicate: Callable[[], Any], timeout_s: float, interval_s: float = 0.5, what: str = ""
) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s}s waiting for {what or predicate}")
        time.sleep(interval_s)


class ConsumerProcess:
    """``tagfleet consume`` in a child process, with its JSON logs in a file."""

    def __init__(self, log_path: Path, env: dict[str, str], **flags: Any) -> None:
        self.log_path = log_path
        args = [sys.executable, "-m", "consumers.cli", "consume"]
        env = dict(env)
        if "store" in flags:  # a URL with a password is refused as a flag
            env["TAGFLEET_STORE"] = str(flags.pop("store"))
        for name, value in flags.items():
            args += [f"--{name.replace('_', '-')}", str(value)]
        self._log = open(log_path, "ab")  # noqa: SIM115 - closed in wait()
        self.proc = subprocess.Popen(
            args, cwd=REPO, env={**os.environ, **env}, stdout=self._log, stderr=subprocess.STDOUT
        )
        self.metrics_port = int(flags.get("metrics_port", 0))

    def get(self, path: str) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(
                f"http://127.0.0.1:{self.metrics_port}{path}", timeout=2
            ) as r:  # noqa: S310
                return r.status, r.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()
        except OSError:
            return 0, ""

    def kill(self) -> int:
        self.proc.kill()
        return self.wait(30)

    def terminate(self, timeout_s: float = 60) -> int:
        self.proc.terminate()
        return self.wait(timeout_s)

    def wait(self, timeout_s: float) -> int:
        try:
            return self.proc.wait(timeout_s)
        finally:
            self._log.close()

    def alive(self) -> bool:
        return self.proc.poll() is None

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace")

    def thread_dump(self) -> str:
        """Every thread's Python stack (py-spy), for the message of a test that found it stuck."""
        py_spy = Path(sys.executable).with_name("py-spy")
        if not self.alive() or not py_spy.exists():
            return "(no thread dump: process gone or py-spy missing)"
        done = subprocess.run(
            [str(py_spy), "dump", "--pid", str(self.proc.pid)],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        return done.stdout + done.stderr


KEYS = [
    "plain/{i}.png",
    "with space/photo {i}.png",
    "plus+sign/{i}+a.png",
    "ünïcødé/фото-{i}-写真.png",
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def env_for(stack: dict[str, str]) -> dict[str, str]:
    return {**stack, "TAGFLEET_LOG_LEVEL": "INFO"}


def upload_images(s3: Any, bucket: str, count: int) -> list[str]:
    keys = []
    for i in range(count):
        key = KEYS[i % len(KEYS)].format(i=i)
        s3.put_object(Bucket=bucket, Key=key, Body=image_bytes(i))
        keys.append(key)
    return keys


def mixed_events(bucket: str, keys: list[str]) -> list[tuple[bytes, bytes]]:
    rng = random.Random(7)
    return [
        native_event(bucket, k) if rng.random() < 0.5 else s3_notification(bucket, k) for k in keys
    ]
