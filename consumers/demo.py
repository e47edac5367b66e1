"""``tagfleet demo``: the main job end to end on the embedded defaults.

Local Kafka and S3 (started with ``infra/stack.sh up`` when not reachable), the SQLite store,
and a demo fleet trained here (once, about a minute) on generated pictures of coloured shapes:
``colour`` (classify: the colour of the shape) and ``colours`` (tags: every colour present).
Each run uses new topics, so it processes exactly its own events.
"""

from __future__ import annotations

import contextlib
import io
import os
import socket
import subprocess
import threading
import time
import urllib.parse
from pathlib import Path
from typing import Any

import numpy as np

from consumers.logs import configure_logging
from consumers.metrics import Metrics
from consumers.options import DemoOptions
from consumers.service import Readiness, serve
from consumers.settings import Settings
from models.settings import Runtime, from_values

BUCKET = "tagfleet-demo"
_S3_DEFAULTS = {
    "AWS_ENDPOINT_URL_S3": "http://127.0.0.1:15000",
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}


def run_demo(options: DemoOptions, runtime: Runtime) -> int:
    """The demo on the local stack: none of a deployment's ``TAGFLEET_*`` settings apply."""
    configure_logging("WARNING", "text")
    for name, value in _S3_DEFAULTS.items():
        os.environ.setdefault(name, value)
    workdir = Path(options.workdir).resolve()
    fleet_path = build_demo_fleet(workdir / "fleet")
    if options.build_fleet_only:
        print(f"demo fleet: {fleet_path}")
        return 0
    _ensure_stack(options.bootstrap_servers)
    assets = _upload_images(options.images)
    run = time.strftime("%Y%m%d%H%M%S")
    settings = from_values(
        Settings,
        bootstrap_servers=options.bootstrap_servers,
        topic=f"tagfleet-demo-{run}",
        results_topic=f"tagfleet-demo-{run}.tags",
        dlq_topic=f"tagfleet-demo-{run}.dlq",
        group_id=f"tagfleet-demo-{run}",
        store=f"sqlite:///{workdir / 'tags.db'}",
        fleet=str(fleet_path),
        metrics_port=0,
        log_level="WARNING",
        log_format="text",
        batch_size=8,
        device=runtime.device,
        cache_dir=runtime.cache_dir,
    )
    _create_topics(settings)
    published = _publish(settings, assets)
    print(f"published {published} events ({len(assets)} images + 1 malformed) to {settings.topic}")
    metrics, stop = Metrics(), threading.Event()
    watcher = threading.Thread(
        target=_stop_when_done, args=(metrics, published, stop, 300.0), daemon=True
    )
    watcher.start()
    code = serve(settings, metrics, Readiness(), stop)
    _print_tags(settings.store_url(), assets, metrics)
    return code


def build_demo_fleet(directory: Path) -> Path:
    """Train (once, then reuse) the demo's ``colour`` and ``colours`` functions."""
    from models import save_artifact
    from models.fleet import FleetConfig, FleetEntry, write_fleet_config

    path = directory / "fleet.yaml"
    if path.exists():
        return path
    print(f"building the demo fleet in {directory} (once) ...")
    entries = []
    for name, artifact in _demo_functions(directory).items():
        save_artifact(artifact, str(directory / name))
        entries.append(FleetEntry(name=name, artifact=name))
    write_fleet_config(path, FleetConfig(functions=entries))
    return path


def _demo_functions(directory: Path) -> dict[str, Any]:
    """``colour`` (classify) and ``colours`` (tags), trained with the recipes the learning
    tests validate, on generated pictures written under ``directory/data``."""
    import torch

    from models.recipes import demo_classify_spec, demo_tags_spec
    from models.synthetic import colour_folder, colours_jsonl
    from models.train import train

    torch.set_num_threads(1)  # tiny models train fastest on one thread (models/recipes.py)
    data = directory / "data"
    print("  training 'colour' (classify, 4 labels) ...")
    colour = train(
        str(colour_folder(data / "colour", 40, seed=1)), demo_classify_spec("colour", seed=1)
    )
    print(f"  held-out: {_metrics(colour)}")
    print("  training 'colours' (tags, 4 labels) ...")
    colours = train(
        str(colours_jsonl(data / "colours", 200, seed=3)), demo_tags_spec("colours", seed=3)
    )
    print(f"  held-out: {_metrics(colours)}")
    return {"colour": colour, "colours": colours}


def _metrics(artifact: Any) -> str:
    return ", ".join(
        f"{k} {v:.2f}" for k, v in artifact.manifest.metrics.items() if isinstance(v, float)
    )


def _demo_images(count: int) -> list[tuple[str, bytes, str]]:
    """``(key, bytes, truth)`` of generated photos, keys with spaces and non-ASCII on purpose."""
    from models.synthetic import COLOURS, SHAPES, scene

    rng = np.random.default_rng(2026)
    names = list(COLOURS)
    images = []
    for i in range(count):
        colours = [names[i % 4]] if i % 3 != 2 else [names[i % 4], names[(i + 1) % 4]]
        objects = [(SHAPES[(i + j) % len(SHAPES)], c) for j, c in enumerate(colours)]
        img, _ = scene(rng, objects, size=64, lo=0.3 if len(colours) > 1 else 0.45, hi=0.6)
        img = img.resize((320, 320))
        out = io.BytesIO()
        fmt = "JPEG" if i % 2 else "PNG"
        img.save(out, format=fmt, quality=92)
        label = "+".join(colours)
        key = f"uploads/{label} photo #{i}.{'jpg' if fmt == 'JPEG' else 'png'}"
        if i % 3 == 0:
            key = f"uploads/été/{label}-{i}.{fmt.lower()}"
        images.append((key, out.getvalue(), label))
    return images


def _upload_images(count: int) -> list[tuple[str, str]]:
    import boto3

    s3 = boto3.client("s3")
    with contextlib.suppress(s3.exceptions.BucketAlreadyOwnedByYou):
        s3.create_bucket(Bucket=BUCKET)
    assets = []
    for key, data, truth in _demo_images(count):
        s3.put_object(Bucket=BUCKET, Key=key, Body=data)
        assets.append((f"s3://{BUCKET}/{key}", truth))
    return assets


def _publish(settings: Settings, assets: list[tuple[str, str]]) -> int:
    import json

    from consumers.sinks import OutRecord, Producer

    records = []
    for i, (asset_id, _) in enumerate(assets):
        key = asset_id.split("/", 3)[3]
        if i % 2:
            value: dict[str, Any] = {
                "asset_id": asset_id,
                "uri": asset_id,
                "attributes": {"demo": True},
            }
        else:
            value = {
                "Records": [
                    {
                        "eventName": "ObjectCreated:Put",
                        "s3": {
                            "bucket": {"name": BUCKET},
                            "object": {"key": urllib.parse.quote_plus(key)},
                        },
                    }
                ]
            }
        records.append(OutRecord(settings.topic, asset_id.encode(), json.dumps(value).encode()))
    records.append(OutRecord(settings.topic, b"broken", b"{not json"))
    producer = Producer(settings.kafka_common())
    producer.send_all(records)
    producer.close()
    return len(records)


def _create_topics(settings: Settings) -> None:
    from kafka import KafkaAdminClient
    from kafka.admin import NewTopic

    admin = KafkaAdminClient(**settings.kafka_common())
    topics = (settings.topic, settings.results_topic, settings.dlq_topic)
    admin.create_topics([NewTopic(name, 2, 1) for name in topics])
    admin.close()


def _stop_when_done(
    metrics: Metrics, expected: int, stop: threading.Event, timeout_s: float
) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        done = sum(metrics.events.labels(o)._value.get() for o in ("stored", "dead_lettered"))  # noqa: SLF001
        if done >= expected:
            break
        time.sleep(0.2)
    stop.set()


def _print_tags(store_url: str, assets: list[tuple[str, str]], metrics: Metrics) -> None:
    from consumers.store import TagStore

    store = TagStore(store_url)
    print()
    print(f"{'asset':50} {'truth':14} {'colour (classify)':18} colours (tags)")
    for asset_id, truth in assets:
        rows = store.tags_for_asset(asset_id)
        colour = next((f"{t.label} {t.score:.2f}" for t in rows if t.function == "colour"), "-")
        colours = ", ".join(f"{t.label} {t.score:.2f}" for t in rows if t.function == "colours")
        print(f"{asset_id[:50]:50} {truth:14} {colour:18} {colours or '-'}")
    stored = metrics.events.labels("stored")._value.get()  # noqa: SLF001
    dead = metrics.events.labels("dead_lettered")._value.get()  # noqa: SLF001
    print(f"\nstored {stored:.0f}, dead-lettered {dead:.0f}; store: {store_url}")
    store.close()


def _ensure_stack(bootstrap: str) -> None:
    host, _, port = bootstrap.rpartition(":")
    s3 = urllib.parse.urlsplit(os.environ["AWS_ENDPOINT_URL_S3"])
    if _reachable(host, int(port)) and _reachable(s3.hostname or "127.0.0.1", s3.port or 80):
        return
    script = Path.cwd() / "infra" / "stack.sh"
    if not script.exists():
        raise SystemExit(
            f"Kafka at {bootstrap} or S3 at {os.environ['AWS_ENDPOINT_URL_S3']} is not reachable"
            " and infra/stack.sh is not here: run the demo from the repository root, or start them."
        )
    print("starting the local stack (infra/stack.sh up) ...")
    subprocess.run(["bash", str(script), "up"], check=True)


def _reachable(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False
