"""The model lifecycle through the running service on the real stack (issue 16): a fleet on
S3 served and reloaded live (a promote picked up, a broken fleet refused), a shadow stored
apart and diffed, a replay of the old version after a promotion, a rollback without inference.

Every service here is ``tagfleet consume`` in its own process; the fleets are zero-shot
functions on the tiny backbone, published to a registry (a local folder or an ``s3://``
prefix of moto's server). ``v2`` is ``v1`` with its head negated (so its decisions differ);
``v_drop`` knows every shape but the triangle (the candidate trained without that label's data).
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from collections import Counter
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from harness import (
    COLOURS,
    REPO,
    SHAPES,
    ConsumerProcess,
    env_for,
    free_port,
    group_lag,
    native_event,
    produce,
    read_topic,
    upload_images,
    wait_until,
)

from models.backbones import CONFIG_DIR
from models.lifecycle import promote, remove, rollback, shadow
from models.registry import publish

pytestmark = pytest.mark.integration
TINY = str(CONFIG_DIR / "tiny-vit.json")
# The fault suite's ledger, loaded from its file: tests/faults is not on this suite's path, and
# mypy must see that file under one module name only (the fault tests import it as `ledger`).
_spec = importlib.util.spec_from_file_location("fault_ledger", REPO / "tests/faults/ledger.py")
assert _spec and _spec.loader
_ledger = sys.modules["fault_ledger"] = importlib.util.module_from_spec(_spec)  # dataclasses
_spec.loader.exec_module(_ledger)
Ledger: Any = _ledger.Ledger


def _publish_versions(registry: str) -> dict[str, str]:
    from models import zero_shot

    v1 = zero_shot("shape", "classify", SHAPES, TINY)
    v2 = replace(v1, head_state={k: -t for k, t in v1.head_state.items()})
    v_drop = zero_shot("shape", "classify", tuple(s for s in SHAPES if s != "triangle"), TINY)
    colours = zero_shot("colours", "classify", tuple(COLOURS), TINY)
    out = {}
    for name, artifact in (("v1", v1), ("v2", v2), ("v_drop", v_drop), ("colours", colours)):
        saved, _ = publish(artifact, registry, parent=None)
        assert saved.manifest.version is not None
        out[name] = saved.manifest.version
    return out


def _trained_versions(registry: str, tmp_path: Path) -> dict[str, str]:
    """``v1`` trained on four shapes; ``v_drop`` on the same data without the triangles (a
    head-only candidate on the same backbone)."""
    from models.synthetic import shapes_folder
    from models.train import train
    from models.training.spec import TrainSpec

    data = shapes_folder(tmp_path / "shapes", 12, seed=0)
    fewer = tmp_path / "no-triangle"
    shutil.copytree(data, fewer)
    shutil.rmtree(fewer / "triangle")
    spec = TrainSpec(
        type="classify",
        name="shape",
        backbone=TINY,
        recipe="fast",
        progress=False,
        cache_dir=str(tmp_path / "cache"),
    )
    out = {}
    for name, folder in (("v1", data), ("v_drop", fewer)):
        saved, _ = publish(train(str(folder), spec), registry, parent=None)
        assert saved.manifest.version is not None
        out[name] = saved.manifest.version
    return out


@pytest.fixture
def aws_env(stack: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    """This process reaches moto's S3 as the services do (the registry and fleet on S3)."""
    for key in ("AWS_ENDPOINT_URL_S3", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.setenv(key, stack[key])
    monkeypatch.setenv("AWS_DEFAULT_REGION", stack["AWS_DEFAULT_REGION"])


def _metric(consumer: ConsumerProcess, name: str, **labels: str) -> float:
    status, body = consumer.get("/metrics")
    if status != 200:
        return 0.0
    total = 0.0
    for line in body.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        if all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


def _results(url: str) -> dict[str, str]:
    """asset -> version of its current ``shape`` result."""
    engine = sa.create_engine(url, poolclass=sa.NullPool)
    query = "select asset_id, model_version from function_results where function='shape'"
    try:
        with engine.connect() as conn:
            rows = conn.execute(sa.text(query)).all()
    except sa.exc.ProgrammingError:  # the service has not migrated the store yet
        return {}
    finally:
        engine.dispose()
    return dict(rows)  # type: ignore[arg-type]


def _rows(url: str, function: str) -> dict[str, int]:
    """How many assets have tags and a current result of ``function``, and how many kept
    results it has (a classify result is one tag per asset)."""
    engine = sa.create_engine(url, poolclass=sa.NullPool)
    with engine.connect() as conn:
        out = {
            t: conn.execute(
                sa.text(f"select count(distinct asset_id) from {t} where function = :f"),  # noqa: S608
                {"f": function},
            ).scalar_one()
            for t in ("tags", "function_results")
        }
        out["kept"] = conn.execute(
            sa.text("select count(*) from version_results where function = :f"), {"f": function}
        ).scalar_one()
    engine.dispose()
    return out


def _tables(url: str) -> dict[str, list[tuple[Any, ...]]]:
    engine = sa.create_engine(url, poolclass=sa.NullPool)
    with engine.connect() as conn:
        out = {
            t: sorted(tuple(r) for r in conn.exec_driver_sql(f"select * from {t}"))  # noqa: S608
            for t in ("function_results", "tags")
        }
    engine.dispose()
    return out


def _consumer(tmp_path: Path, stack: dict[str, str], name: str, **flags: Any) -> ConsumerProcess:
    port = free_port()
    flags.setdefault("batch_size", 8)
    return ConsumerProcess(
        tmp_path / f"{name}.log", env_for(stack), metrics_port=port, fleet_poll_s=0.5, **flags
    )


def _events(bucket: str, keys: list[str], **extra: Any) -> list[tuple[bytes, bytes]]:
    return [native_event(bucket, k, **extra) for k in keys]


def _keyed(events: list[tuple[bytes, bytes]]) -> list[tuple[str, bytes | None]]:
    return [(key.decode(), value) for key, value in events]


def test_a_service_on_an_s3_fleet_picks_up_a_promote_and_refuses_a_broken_fleet(
    stack, aws_env, kafka_bootstrap, kafka_admin, new_topic, new_bucket, s3, pg_url, tmp_path
):
    bucket = new_bucket()
    keys = upload_images(s3, bucket, 80)
    registry, fleet = f"s3://{bucket}/registry", f"s3://{bucket}/fleet.yaml"
    v = _publish_versions(registry)
    promote(fleet, "shape", v["v1"], registry=registry)
    topic, results, dlq = new_topic(partitions=3), new_topic(partitions=1), new_topic(partitions=1)
    group = f"g-{topic}"
    # the fault suite's ledger: per asset, produced, stored, dead-lettered, delivered twice
    ledger = Ledger(kafka_bootstrap, topic, results, dlq, pg_url, functions=("shape",))
    consumer = _consumer(
        tmp_path,
        stack,
        "consumer",
        bootstrap_servers=kafka_bootstrap,
        topic=topic,
        group_id=group,
        results_topic=results,
        dlq_topic=dlq,
        store=pg_url,
        fleet=fleet,
    )
    try:
        wait_until(lambda: _metric(consumer, "tagfleet_ready") == 1, 180, what="service ready")
        assert _metric(consumer, "tagfleet_fleet_function_info", version=v["v1"], role="serving")
        # every event claims an ETag that is not the object's: the result carries the fetched one
        ledger.produce(_keyed(_events(bucket, keys[:30], etag="claimed-etag")))
        promote(fleet, "shape", v["v2"], force=True)  # while events are in flight
        ledger.produce(_keyed(_events(bucket, keys[30:60])))
        wait_until(
            lambda: _metric(consumer, "tagfleet_fleet_function_info", version=v["v2"]),
            60,
            what="the promoted version serving",
        )
        assert _metric(consumer, "tagfleet_fleet_reloads_total", outcome="applied") == 1
        wait_until(lambda: group_lag(kafka_admin, kafka_bootstrap, group, topic) == 0, 180)
        ledger.produce(_keyed(_events(bucket, keys[60:70])))  # after the swap
        wait_until(lambda: len(_results(pg_url)) == 70, 120, what="70 assets stored")

        s3.put_object(  # a fleet naming a version the registry lacks: it cannot load
            Bucket=bucket,
            Key="fleet.yaml",
            Body=f"registry: {registry}\nfunctions:\n- {{name: shape, version: '{'0' * 16}'}}\n",
        )
        wait_until(
            lambda: _metric(consumer, "tagfleet_fleet_reloads_total", outcome="load_failed") >= 1,
            60,
            what="the broken fleet refused",
        )
        ledger.produce(_keyed(_events(bucket, keys[70:80])))
        wait_until(lambda: len(_results(pg_url)) == 80, 120, what="80 assets stored")
        assert consumer.alive()
        assert _metric(consumer, "tagfleet_fleet_function_info", version=v["v2"], role="serving")
    finally:
        code = consumer.terminate()
    assert code == 0, consumer.logs()[-3000:]
    assert "new fleet refused; the old one keeps serving" in consumer.logs()
    figures = ledger.figures("promote and a broken fleet under traffic", [consumer.log_path])
    ledger.close()
    assert (figures.produced, figures.stored, figures.dead_lettered) == (80, 80, 0)
    assert (figures.lost, figures.duplicates, figures.redeliveries) == (0, 0, 0)
    # the ledger, per asset: produced once, stored once, published once, nothing else
    records = read_topic(kafka_bootstrap, results, expected=80)
    published = Counter(r.key.decode() for r in records)
    produced = {f"s3://{bucket}/{k}" for k in keys}
    assert set(published) == produced and set(published.values()) == {1}
    stored = _results(pg_url)
    assert set(stored) == produced
    assert set(stored.values()) <= {v["v1"], v["v2"]}
    after = {f"s3://{bucket}/{k}" for k in keys[60:]}
    assert {stored[a] for a in after} == {v["v2"]}  # after the swap, and after the refusal
    versions = {json.loads(r.value)["functions"]["shape"]["version"] for r in records}
    assert versions == {v["v1"], v["v2"]}
    fetched = {
        f"s3://{bucket}/{k}": s3.head_object(Bucket=bucket, Key=k)["ETag"].strip('"')
        for k in keys[:30]
    }
    for record in records:
        event = json.loads(record.value)
        if event["asset_id"] in fetched:
            assert event["etag"] == fetched[event["asset_id"]] != "claimed-etag"
    assert not read_topic(kafka_bootstrap, dlq, expected=0, timeout_s=3)


def test_a_shadow_runs_on_live_events_stored_apart_and_diff_reports_the_dropped_label(
    stack, kafka_bootstrap, kafka_admin, new_topic, new_bucket, s3, pg_url, tmp_path
):
    bucket = new_bucket()
    keys = upload_images(s3, bucket, 36)
    registry, fleet = str(tmp_path / "registry"), str(tmp_path / "fleet.yaml")
    v = _trained_versions(registry, tmp_path)
    promote(fleet, "shape", v["v1"], registry=registry)
    shadow(fleet, "shape", v["v_drop"])
    topic, results, dlq = new_topic(partitions=2), new_topic(partitions=1), new_topic(partitions=1)
    group = f"g-{topic}"
    produce(kafka_bootstrap, topic, _events(bucket, keys))
    consumer = _consumer(
        tmp_path,
        stack,
        "consumer",
        bootstrap_servers=kafka_bootstrap,
        topic=topic,
        group_id=group,
        results_topic=results,
        dlq_topic=dlq,
        store=pg_url,
        fleet=fleet,
    )
    try:
        wait_until(lambda: group_lag(kafka_admin, kafka_bootstrap, group, topic) == 0, 240)
        assert _metric(consumer, "tagfleet_fleet_function_info", version=v["v_drop"], role="shadow")
        seen = _metric(consumer, "tagfleet_shadow_agreement_total", function="shape")
    finally:
        code = consumer.terminate()
    assert code == 0, consumer.logs()[-3000:]
    assert seen == 36
    records = read_topic(kafka_bootstrap, results, expected=36)
    assert len(records) == 36
    assert not any(v["v_drop"].encode() in r.value for r in records)  # never published
    engine = sa.create_engine(pg_url, poolclass=sa.NullPool)
    with engine.connect() as conn:
        tag_versions = set(conn.scalars(sa.text("select distinct model_version from tags")))
        kept = conn.execute(
            sa.text("select role, count(*) from version_results group by role")
        ).all()
    engine.dispose()
    assert tag_versions == {v["v1"]}  # never served as tags
    assert dict(kept) == {"serving": 36, "shadow": 36}  # type: ignore[arg-type]

    env = {**os.environ, **env_for(stack), "TAGFLEET_STORE": pg_url}
    done = subprocess.run(
        [sys.executable, "-m", "consumers.cli", "diff", "shape", "--format", "json"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["assets"] == 36 and report["versions"] == [
        {"serving": v["v1"], "shadow": v["v_drop"]}
    ]
    assert report["labels_dropped"] == ["triangle"] and report["labels_new"] == []
    assert report["labels"]["triangle"]["added"] == 0
    assert report["labels"]["triangle"]["removed"] > 0  # the label's disappearance, counted
    assert report["agreement"] < 1
    changed = {c["asset_id"] for c in report["top_label_changes"]}
    assert changed and changed <= {f"s3://{bucket}/{k}" for k in keys}
    assert report["most_changed"]
    markdown = subprocess.run(
        [sys.executable, "-m", "consumers.cli", "diff", "shape"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert markdown.returncode == 0 and "no longer has: triangle." in markdown.stdout


def test_replaying_the_old_version_changes_no_row_and_a_rollback_restores_without_inference(
    stack, kafka_bootstrap, kafka_admin, new_topic, new_bucket, s3, pg_url, tmp_path
):
    bucket = new_bucket()
    keys = upload_images(s3, bucket, 20)
    registry, fleet = str(tmp_path / "registry"), str(tmp_path / "fleet.yaml")
    v = _publish_versions(registry)
    promote(fleet, "shape", v["v1"], registry=registry)
    promote(fleet, "colours", v["colours"])
    old_fleet = tmp_path / "old-fleet.yaml"  # what a second group still serves: v1
    old_fleet.write_bytes(Path(fleet).read_bytes())
    topic, results, dlq = new_topic(partitions=2), new_topic(partitions=1), new_topic(partitions=1)
    produce(kafka_bootstrap, topic, _events(bucket, keys))
    consumer = _consumer(
        tmp_path,
        stack,
        "consumer",
        bootstrap_servers=kafka_bootstrap,
        topic=topic,
        group_id=f"g-{topic}",
        results_topic=results,
        dlq_topic=dlq,
        store=pg_url,
        fleet=fleet,
    )
    try:
        wait_until(
            lambda: set(_results(pg_url).values()) == {v["v1"]} and len(_results(pg_url)) == 20, 240
        )
        promote(fleet, "shape", v["v2"], force=True)
        wait_until(
            lambda: _metric(consumer, "tagfleet_fleet_reloads_total", outcome="applied"), 180
        )
        produce(kafka_bootstrap, topic, _events(bucket, keys))  # the same assets, again
        wait_until(lambda: set(_results(pg_url).values()) == {v["v2"]}, 240, what="all on v2")
        wait_until(lambda: group_lag(kafka_admin, kafka_bootstrap, f"g-{topic}", topic) == 0, 60)
        before = _tables(pg_url)

        replay = _consumer(  # a second group replays the whole topic with the old version
            tmp_path,
            stack,
            "replay",
            bootstrap_servers=kafka_bootstrap,
            topic=topic,
            group_id=f"replay-{topic}",
            results_topic=new_topic(partitions=1),
            dlq_topic=dlq,
            store=pg_url,
            fleet=old_fleet,
        )
        try:
            wait_until(
                lambda: group_lag(kafka_admin, kafka_bootstrap, f"replay-{topic}", topic) == 0,
                240,
                what="the replay done",
            )
            assert _metric(replay, "tagfleet_events_total", outcome="stored") == 40
        finally:
            assert replay.terminate() == 0, replay.logs()[-3000:]
        assert _tables(pg_url) == before  # not a row changed

        predicted = _metric(consumer, "tagfleet_predictions_total")
        rollback(fleet, "shape")
        wait_until(
            lambda: set(_results(pg_url).values()) == {v["v1"]}, 180, what="the v1 tags back"
        )
        # the store follows the rolled-back fleet before the swap reaches the metrics
        wait_until(
            lambda: _metric(
                consumer, "tagfleet_fleet_function_info", version=v["v1"], role="serving"
            ),
            60,
            what="v1 reported serving",
        )
        assert _metric(consumer, "tagfleet_predictions_total") == predicted  # no model ran

        assert _rows(pg_url, "colours") == {"tags": 20, "function_results": 20, "kept": 20}
        remove(fleet, "colours", purge=True)  # `tagfleet fleet remove colours --purge`
        wait_until(
            lambda: _rows(pg_url, "colours") == {"tags": 0, "function_results": 0, "kept": 0},
            60,
            what="the purged function's tags gone",
        )
        assert set(_results(pg_url).values()) == {v["v1"]}  # the other function untouched
    finally:
        code = consumer.terminate()
    assert code == 0, consumer.logs()[-3000:]
