"""``tagfleet demo``: the main job end to end on the embedded defaults.

Local Kafka (the stack is started with ``infra/stack.sh up`` when it is not reachable), an S3
server that publishes its own bucket notifications (VersityGW, one per run:
:mod:`consumers.demo_gateway`), the SQLite store, and a demo fleet trained here (once, about a
minute) on generated pictures of coloured shapes: ``colour`` (classify: the colour of the
shape) and ``colours`` (tags: every colour present). The demo uploads its pictures and writes
no event but one malformed one; the tags appear from the gateway's notifications. Then it
deletes one picture and shows its tags gone. Each run uses new topics and its own gateway, so
it processes exactly its own events.
"""

from __future__ import annotations

import contextlib
import io
import os
import socket
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from consumers.demo_gateway import DemoGateway, follow
from consumers.logs import configure_logging
from consumers.metrics import Metrics
from consumers.options import DemoOptions
from consumers.service import Readiness, serve
from consumers.settings import Settings
from models.settings import Runtime, from_values

BUCKET = "tagfleet-demo"
_S3_DEFAULTS = {"AWS_DEFAULT_REGION": "us-east-1"}  # endpoint and keys: the demo's gateway


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
    run = time.strftime("%Y%m%d%H%M%S")
    topic = f"tagfleet-demo-{run}"
    gateway = DemoGateway.start(Path.cwd(), topic, options.bootstrap_servers)
    try:
        gateway.use()
        return _tag_uploads(options, runtime, gateway, workdir, fleet_path)
    finally:
        gateway.stop()


def _tag_uploads(
    options: DemoOptions, runtime: Runtime, gateway: DemoGateway, workdir: Path, fleet_path: Path
) -> int:
    """Upload the pictures to ``gateway``, serve its notifications until they are tagged, then
    delete one picture and show its tags gone."""
    run = gateway.topic.removeprefix("tagfleet-demo-")
    assets = _upload_images(options.images)
    settings = from_values(
        Settings,
        bootstrap_servers=options.bootstrap_servers,
        topic=gateway.topic,
        results_topic=f"tagfleet-demo-{run}.tags",
        dlq_topic=f"tagfleet-demo-{run}.dlq",
        group_id=f"tagfleet-demo-{run}",
        store=f"sqlite:///{workdir / 'tags.db'}",
        embeddings=str(workdir / "embeddings"),
        fleet=str(fleet_path),
        metrics_port=0,
        log_level="WARNING",
        log_format="text",
        batch_size=8,
        device=runtime.device,
        cache_dir=runtime.cache_dir,
        offline=runtime.offline,
    )
    _create_topics(settings)
    _publish_malformed(settings)
    print(
        f"uploaded {len(assets)} pictures to VersityGW at {gateway.endpoint}: it publishes"
        f" their notifications to {settings.topic} (the demo adds 1 malformed event, nothing"
        " else)"
    )
    metrics, stop = Metrics(), threading.Event()
    deleted = assets[0][0]

    def show_then_delete() -> None:
        _print_tags(settings.store_url(), assets, metrics)
        print(f"\ndeleting {deleted.removeprefix(f's3://{BUCKET}/')} from the gateway ...")
        _delete(deleted)

    watcher = threading.Thread(
        target=follow, args=(metrics, len(assets), show_then_delete, stop, 300.0), daemon=True
    )
    watcher.start()
    code = serve(settings, metrics, Readiness(), stop)
    _print_removed(settings.store_url(), deleted, metrics)
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


def _publish_malformed(settings: Settings) -> None:
    """The one event the demo writes: not JSON, so it is dead-lettered (a bad producer)."""
    from consumers.sinks import OutRecord, Producer

    producer = Producer(settings.kafka_common())
    producer.send_all([OutRecord(settings.topic, b"broken", b"{not json")])
    producer.close()


def _delete(asset_id: str) -> None:
    import boto3

    boto3.client("s3").delete_object(Bucket=BUCKET, Key=asset_id.split("/", 3)[3])


def _create_topics(settings: Settings) -> None:
    from kafka import KafkaAdminClient
    from kafka.admin import NewTopic

    admin = KafkaAdminClient(**settings.kafka_common())
    topics = (settings.results_topic, settings.dlq_topic)  # the gateway created settings.topic
    admin.create_topics([NewTopic(name, 2, 1) for name in topics])
    admin.close()


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


def _print_removed(store_url: str, asset_id: str, metrics: Metrics) -> None:
    from consumers.store import TagStore

    store = TagStore(store_url)
    left = store.tags_for_asset(asset_id)
    store.close()
    removed = metrics.events.labels("removed")._value.get()  # noqa: SLF001
    print(
        f"removed {removed:.0f}: {asset_id.removeprefix(f's3://{BUCKET}/')} now has"
        f" {len(left) or 'no'} tags"
    )


def _ensure_stack(bootstrap: str) -> None:
    host, _, port = bootstrap.rpartition(":")
    script = Path.cwd() / "infra" / "stack.sh"
    if not script.exists():
        raise SystemExit(
            "infra/ is not here (the demo starts its S3 gateway with infra/versitygw.sh):"
            " run the demo from the repository root."
        )
    if _reachable(host, int(port)):
        return
    print("starting the local stack (infra/stack.sh up) ...")
    subprocess.run(["bash", str(script), "up"], check=True)


def _reachable(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False
