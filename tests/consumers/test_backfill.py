"""``tagfleet publish`` against the real broker and S3 server; local source listing."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest
from harness import REPO, image_bytes, read_topic

from consumers.backfill import local_requests


def test_local_requests_list_images_recursively_with_readable_ids(tmp_path: Path):
    (tmp_path / "a b").mkdir()
    (tmp_path / "a b" / "x.JPG").write_bytes(b"1")
    (tmp_path / "y.png").write_bytes(b"2")
    (tmp_path / "notes.txt").write_text("not an image")
    requests = list(local_requests(str(tmp_path)))
    assert [r.asset_id for r in requests] == [
        f"file://{tmp_path}/a b/x.JPG",
        f"file://{tmp_path}/y.png",
    ]
    assert [r.size for r in requests] == [1, 1]


def test_local_requests_name_a_missing_source(tmp_path: Path):
    with pytest.raises(SystemExit, match="does not exist"):
        list(local_requests(str(tmp_path / "nope")))


@pytest.mark.integration
@pytest.mark.parametrize(
    ("client", "lane"),
    [("kafka-python", "backfill"), ("confluent", "backfill"), ("kafka-python", "upload")],
)
def test_publish_sends_one_native_event_per_object(
    stack, kafka_bootstrap, new_topic, new_bucket, s3, client, lane
):
    """Onto the backfill lane by default, the upload topic with --lane upload; nothing on
    the other lane."""
    bucket = new_bucket()
    keys = ["lib/a.png", "lib/sub dir/b.png", "lib/ü.png", "other/c.png"]
    for i, key in enumerate(keys):
        s3.put_object(Bucket=bucket, Key=key, Body=image_bytes(i))
    topic, backfill = new_topic(partitions=2), new_topic(partitions=2)
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "consumers.cli",
            "publish",
            f"s3://{bucket}/lib/",
            "--bootstrap-servers",
            kafka_bootstrap,
            "--topic",
            topic,
            "--functions",
            "shape",
            "--kafka-client",
            client,
            "--backfill-topic",
            backfill,
            *(["--lane", "upload"] if lane == "upload" else []),
        ],
        cwd=REPO,
        env={**os.environ, **stack},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    target, other = (backfill, topic) if lane == "backfill" else (topic, backfill)
    assert summary["published"] == 3 and summary["topic"] == target
    assert read_topic(kafka_bootstrap, other, expected=0, timeout_s=3) == []
    records = read_topic(kafka_bootstrap, target, expected=3)
    events = [json.loads(r.value) for r in records]
    expected = {f"s3://{bucket}/{k}" for k in keys[:3]}
    assert Counter(r.key.decode() for r in records) == Counter(expected)
    assert {e["asset_id"] for e in events} == expected
    assert all(
        e["uri"] == e["asset_id"] and e["functions"] == ["shape"] and e["etag"] for e in events
    )


def _tag(folder: Path, store: str, fleet: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "consumers.cli", "tag", str(folder), "--store", store]
        + ["--fleet", str(fleet), "--batch-size", "4", *extra],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


@pytest.mark.slow  # the tagfleet command in a fresh process: tens of seconds
def test_tag_stores_the_good_images_and_reports_the_bad_ones(
    tmp_path: Path, fleet_path: Path
) -> None:
    """A corrupt image and a decompression bomb cost themselves, not the run: the same stages
    as the service (limits, canary, retries), and a non-zero exit only with --strict."""
    import io

    import sqlalchemy as sa
    from PIL import Image

    folder = tmp_path / "library"
    folder.mkdir()
    for i in range(9):
        (folder / f"good-{i}.png").write_bytes(image_bytes(i))
    (folder / "corrupt.png").write_bytes(image_bytes(1)[:200])
    bomb = io.BytesIO()
    Image.new("1", (12_000, 12_000)).save(bomb, format="PNG")  # 144 MP, a few kB
    (folder / "bomb.png").write_bytes(bomb.getvalue())
    (folder / "scan.bmp").write_bytes(image_bytes(3, fmt="BMP"))  # off by default, as the service
    store = f"sqlite:///{tmp_path / 'tags.db'}"

    done = _tag(folder, store, fleet_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "tagged 9 of 12 assets" in done.stdout and "3 failed" in done.stdout
    assert f"failed file://{folder}/corrupt.png: image_decode_failed" in done.stderr
    assert f"failed file://{folder}/bomb.png: image_too_large" in done.stderr
    assert f"failed file://{folder}/scan.bmp: unsupported_format" in done.stderr
    engine = sa.create_engine(store)
    with engine.connect() as conn:
        stored = {
            r[0] for r in conn.execute(sa.text("select distinct asset_id from function_results"))
        }
    engine.dispose()
    assert stored == {f"file://{folder}/good-{i}.png" for i in range(9)}

    strict = _tag(folder, store, fleet_path, "--strict")
    assert strict.returncode == 1 and "3 failed" in strict.stdout


class _Done:
    """What a command run in this process returned and printed."""

    def __init__(self, returncode: int, stdout: str, stderr: str) -> None:
        self.returncode, self.stdout, self.stderr = returncode, stdout, stderr


@pytest.fixture
def cli(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, stack: dict[str, str]
) -> Callable[..., _Done]:
    """``tagfleet ARGS`` in this process (one torch import for the whole test), with the
    stack's environment."""
    from consumers.cli import main

    for name, value in stack.items():
        monkeypatch.setenv(name, value)

    def run(*args: str) -> _Done:
        capsys.readouterr()
        try:
            code = main(list(args))
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 2
            if isinstance(exc.code, str):
                print(exc.code, file=sys.stderr)
        out = capsys.readouterr()
        return _Done(code, out.out, out.err)

    return run


def _stored(store: str) -> dict[tuple[str, str], str | None]:
    import sqlalchemy as sa

    engine = sa.create_engine(store)
    with engine.connect() as conn:
        rows = conn.execute(sa.text("select asset_id, function, etag from function_results"))
        found = {(r[0], r[1]): r[2] for r in rows}
    engine.dispose()
    return found


@pytest.mark.integration
def test_tag_backfill_modes_functions_changed_reset_and_result_events(
    cli, kafka_bootstrap, new_topic, new_bucket, s3, tmp_path: Path, fleet_path: Path
) -> None:
    """--functions runs a subset, --missing-only the rest, --changed only objects whose ETag
    moved, reset drops a function so --missing-only redoes it; each stored asset's result
    event is published like the service's (none with --no-results)."""
    bucket = new_bucket()
    keys = [f"lib/{i}.png" for i in range(3)]
    for i, key in enumerate(keys):
        s3.put_object(Bucket=bucket, Key=key, Body=image_bytes(i))
    ids = {f"s3://{bucket}/{k}" for k in keys}
    store = f"sqlite:///{tmp_path / 'tags.db'}"
    results = new_topic(partitions=1)
    common = ["--store", store, "--fleet", str(fleet_path), "--batch-size", "4"]
    kafka = ["--bootstrap-servers", kafka_bootstrap, "--results-topic", results]

    def tag(*extra: str) -> _Done:
        done = cli("tag", f"s3://{bucket}/lib/", *common, *kafka, *extra)
        assert done.returncode == 0, done.stderr[-3000:]
        return done

    first = tag("--functions", "shape")
    assert "tagged 3 of 3 assets" in first.stdout
    assert set(_stored(store)) == {(a, "shape") for a in ids}
    events = [json.loads(r.value) for r in read_topic(kafka_bootstrap, results, expected=3)]
    assert {e["asset_id"] for e in events} == ids
    assert all(set(e["functions"]) == {"shape"} for e in events)

    rest = tag("--missing-only")  # colours is missing everywhere
    assert "tagged 3 of 3 assets" in rest.stdout
    assert set(_stored(store)) == {(a, f) for a in ids for f in ("shape", "colours")}
    assert "tagged 0 of 3 assets" in tag("--missing-only").stdout

    assert "tagged 0 of 3 assets" in tag("--changed").stdout
    s3.put_object(Bucket=bucket, Key=keys[1], Body=image_bytes(7))  # new bytes, new ETag
    moved = tag("--changed", "--no-results")
    assert "tagged 1 of 3 assets" in moved.stdout
    new_etag = s3.head_object(Bucket=bucket, Key=keys[1])["ETag"].strip('"')
    assert {e for (a, _), e in _stored(store).items() if a.endswith(keys[1])} == {new_etag}
    assert len(read_topic(kafka_bootstrap, results, expected=6, timeout_s=5)) == 6  # none more

    refused = cli("reset", "shape", "--store", store)
    assert refused.returncode == 2 and "--yes" in refused.stderr
    assert len(_stored(store)) == 6
    reset = cli("reset", "shape", "--store", store, "--yes")
    assert reset.returncode == 0, reset.stderr
    assert json.loads(reset.stdout)["deleted"]["function_results"] == 3
    assert set(_stored(store)) == {(a, "colours") for a in ids}
    again = tag("--missing-only", "--functions", "shape", "--no-results")
    assert "tagged 3 of 3 assets" in again.stdout
    assert len(_stored(store)) == 6

    unknown = cli("tag", f"s3://{bucket}/lib/", *common, "--functions", "nope", "--no-results")
    assert unknown.returncode != 0 and "not in the fleet" in unknown.stderr


@pytest.mark.integration
def test_publish_missing_only_and_changed_read_the_store(
    cli, kafka_bootstrap, new_topic, new_bucket, s3, tmp_path: Path, fleet_path: Path
) -> None:
    bucket = new_bucket()
    keys = [f"lib/{i}.png" for i in range(3)]
    for i, key in enumerate(keys):
        s3.put_object(Bucket=bucket, Key=key, Body=image_bytes(i))
    store = f"sqlite:///{tmp_path / 'tags.db'}"
    done = cli(
        "tag", f"s3://{bucket}/lib/0.png", "--store", store, "--fleet", str(fleet_path),
        "--no-results",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    topic = new_topic(partitions=1)

    def publish(*extra: str) -> list[str]:
        done = cli(
            "publish", f"s3://{bucket}/lib/", "--bootstrap-servers", kafka_bootstrap,
            "--topic", topic, "--lane", "upload", "--store", store, "--fleet", str(fleet_path),
            *extra,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr[-3000:]
        summary = json.loads(done.stdout.strip().splitlines()[-1])
        assert summary["listed"] == 3
        return [summary["published"]]

    assert publish("--missing-only") == [2]  # lib/0.png has every function's current result
    s3.put_object(Bucket=bucket, Key=keys[0], Body=image_bytes(9))
    assert publish("--changed") == [3]  # 0.png's ETag moved; 1 and 2 have no stored result
    records = read_topic(kafka_bootstrap, topic, expected=5)
    assert [json.loads(r.value)["asset_id"].rsplit("/", 1)[1] for r in records[:2]] == [
        "1.png",
        "2.png",
    ]
