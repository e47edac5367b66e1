"""``tagfleet train --from-embeddings`` and ``tagfleet apply --from-embeddings`` over the real
embedding store, the real tag store (PostgreSQL and SQLite), the registry and Kafka.

The must-show: a label no function has, trained on 30 labelled asset ids of a generated library
of 2,000 and applied to the whole library, is right on >= 0.85 of the 1,970 held-out assets
(chance 0.25), and neither command sends one request to S3: they run with S3 pointed at a
server that counts every request it gets (and answers 500).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import boto3
import numpy as np
import pytest
import sqlalchemy as sa
from botocore.config import Config
from botocore.exceptions import ClientError
from fastapi.testclient import TestClient
from harness import read_topic
from library_data import COLOUR_NAMES, TINY, build_library, tiny_backbone

from consumers.api.app import ApiContext, create_app
from consumers.api.keys import create_key
from consumers.cli import main as tagfleet
from consumers.domain import AssetResult
from consumers.store import TagStore
from consumers.store.models import function_results, version_results
from models import registry as reg
from models.artifacts import save_artifact
from models.embedding_store import open_embedding_store
from models.from_embeddings import train_from_embeddings
from models.training.spec import TrainSpec
from models.zeroshot import zero_shot

ROOT = Path(__file__).resolve().parents[2]


class CountingS3(ThreadingHTTPServer):
    """An 'S3 endpoint' that counts every request and answers each with a 500."""

    def __init__(self) -> None:
        self.requests: list[str] = []

        server = self

        class Handler(BaseHTTPRequestHandler):
            def _any(self) -> None:
                server.requests.append(f"{self.command} {self.path}")
                self.send_response(500)
                self.send_header("Content-Length", "0")
                self.end_headers()

            do_GET = do_HEAD = do_PUT = do_POST = do_DELETE = _any

            def log_message(self, *args: Any) -> None:
                pass

        super().__init__(("127.0.0.1", 0), Handler)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


@pytest.fixture
def counting_s3() -> Iterator[CountingS3]:
    server = CountingS3()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


def labelled_manifest(path: Path, ids: list[str], truth: list[str], n: int) -> str:
    path.write_text(
        "".join(
            json.dumps({"image": a, "label": c}) + "\n"
            for a, c in zip(ids[:n], truth[:n], strict=True)
        )
    )
    return str(path)


@pytest.mark.slow  # one subprocess (a cold interpreter) and a library of 2,000
def test_a_new_label_from_30_ids_applied_to_2000_assets_without_one_s3_request(
    pg_url: str, tmp_path: Path, counting_s3: CountingS3
) -> None:
    backbone = tiny_backbone()
    lib = build_library(tmp_path, pg_url, backbone, 2000, seed=11)
    never_embedded = [f"s3://library/photos/new-{i}.png" for i in range(3)]
    store = TagStore(pg_url)
    now = lib_time()
    store.save([AssetResult(a, a, None, 64, 64, {}, None, now) for a in never_embedded])
    manifest = labelled_manifest(tmp_path / "labelled.jsonl", lib.ids, lib.truth, 30)
    artifact, missing = str(tmp_path / "colour"), tmp_path / "missing.txt"

    # the counter counts: a GET through boto3 reaches it
    s3 = boto3.client(
        "s3",
        endpoint_url=counting_s3.url,
        aws_access_key_id="x",
        aws_secret_access_key="x",
        region_name="us-east-1",
        config=Config(retries={"max_attempts": 1}),
    )
    with pytest.raises(ClientError):
        s3.get_object(Bucket="library", Key="photos/00000.png")
    assert counting_s3.requests[0] == "GET /library/photos/00000.png"
    counting_s3.requests.clear()

    train = ["train", "--from-embeddings", manifest, "--type", "classify", "--name", "colour"]
    train += ["--backbone", TINY, "--embeddings", lib.embeddings, "--out", artifact]
    apply = ["apply", artifact, "--from-embeddings", "--embeddings", lib.embeddings]
    apply += ["--missing-out", str(missing)]  # the store's URL (a password) by its variable
    script = (
        "import sys; from consumers.cli import main; "
        f"sys.exit(main({train + ['--no-progress']!r}) or main({apply + ['--no-progress']!r}))"
    )
    env = {
        **os.environ,
        "AWS_ENDPOINT_URL_S3": counting_s3.url,
        "AWS_ENDPOINT_URL": counting_s3.url,
        "AWS_ACCESS_KEY_ID": "x",
        "AWS_SECRET_ACCESS_KEY": "x",
        "TAGFLEET_CACHE_DIR": str(tmp_path / "cache"),
        "TAGFLEET_STORE": pg_url,
    }
    done = subprocess.run(
        [sys.executable, "-c", script],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    trained, applied = (json.loads(line) for line in done.stdout.strip().splitlines()[-2:])
    assert counting_s3.requests == []  # not one request to S3 in training nor in apply
    assert trained["trained_from"] == "stored embeddings"
    assert applied["scored"] == 2000 and applied["written"] == 2000
    assert applied["version"] == trained["version"] and applied["missing"] == 3
    assert missing.read_text().split() == sorted(never_embedded)
    assert "no stored embedding: s3://library/photos/new-0.png" in done.stderr

    with store.engine.connect() as conn:
        rows = conn.execute(
            sa.select(function_results.c.asset_id, function_results.c.result).where(
                function_results.c.function == "colour"
            )
        ).all()
    label = {asset: result["label"] for asset, result in rows}
    assert len(label) == 2000
    truth = dict(zip(lib.ids, lib.truth, strict=True))
    held_out = lib.ids[30:]
    accuracy = float(np.mean([label[a] == truth[a] for a in held_out]))
    print(f"held-out accuracy over {len(held_out)} assets: {accuracy:.3f} (chance 0.25)")
    assert accuracy >= 0.85

    # the API shows the new function's tags as the consumer's would be shown
    key = create_key(store.engine, "default", ("read",), "reader")
    client = TestClient(create_app(ApiContext(store=store, fleet_path="")))
    view = client.get(f"/v1/assets/{lib.ids[100]}", headers={"X-Api-Key": key}).json()
    assert view["functions"]["colour"]["version"] == trained["version"]
    assert {t["label"] for t in view["effective_tags"]} == {label[lib.ids[100]]}
    store.close()


def lib_time() -> Any:
    from datetime import UTC, datetime

    return datetime(2026, 12, 2, tzinfo=UTC)


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The library (200 assets, two tenants), its tag store's template and two versions of a
    function trained on 40 of its ids: built once for the tests below."""
    tmp = tmp_path_factory.mktemp("apply")
    backbone = tiny_backbone()
    url = f"sqlite:///{tmp / 'template.db'}"
    lib = build_library(tmp, url, backbone, 200, seed=5, tenants=("default", "acme"))
    manifest = labelled_manifest(tmp / "labelled.jsonl", lib.ids, lib.truth, 40)
    embeddings = open_embedding_store(lib.embeddings)
    spec = TrainSpec(type="classify", name="colour", backbone=TINY, epochs=60, progress=False)
    v1 = save_artifact(train_from_embeddings(manifest, spec, embeddings), str(tmp / "v1"))
    spec2 = spec.model_copy(update={"seed": 1})
    v2 = save_artifact(train_from_embeddings(manifest, spec2, embeddings), str(tmp / "v2"))
    assert v1.manifest.version != v2.manifest.version
    return {"lib": lib, "backbone": backbone, "v1": v1, "v2": v2, "tmp": tmp}


@pytest.fixture
def small(built: dict[str, Any], tmp_path: Path) -> dict[str, Any]:
    """``built`` with a tag store of its own (a copy of the template) and a work folder."""
    shutil.copy(built["tmp"] / "template.db", tmp_path / "tags.db")
    return {**built, "url": f"sqlite:///{tmp_path / 'tags.db'}", "work": tmp_path}


def applied(capsys: pytest.CaptureFixture[str], *argv: str) -> dict[str, Any]:
    assert tagfleet(["apply", *argv, "--from-embeddings", "--no-progress"]) == 0
    return dict(json.loads(capsys.readouterr().out.strip().splitlines()[-1]))


def test_a_new_version_replaces_the_current_results_and_every_version_is_kept(
    small: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    lib, url, tmp = small["lib"], small["url"], small["tmp"]
    common = ["--embeddings", lib.embeddings, "--store", url]
    first = applied(capsys, str(tmp / "v1"), *common)
    assert first["scored"] == first["written"] == 200 and first["missing"] == 0
    again = applied(capsys, str(tmp / "v1"), *common)  # idempotent: nothing written again
    assert again["written"] == 0 and again["unchanged"] == 200

    store = TagStore(url)
    with store.engine.begin() as conn:  # an asset removed from the bucket meanwhile
        conn.execute(
            sa.text("UPDATE assets SET removed = true WHERE asset_id = :a"), {"a": lib.ids[0]}
        )
    registry = str(small["work"] / "registry")
    second = applied(capsys, str(tmp / "v2"), *common, "--registry", registry)
    assert second["written"] == 199 and second["skipped_removed"] == 1
    assert [r.version for r in reg.read_index(registry, "colour").versions] == [
        small["v2"].manifest.version
    ]
    with store.engine.connect() as conn:
        query = sa.select(function_results.c.asset_id, function_results.c.model_version)
        current = {
            a: v for a, v in conn.execute(query.where(function_results.c.function == "colour"))
        }
        kept = conn.execute(
            sa.select(sa.func.count())
            .select_from(version_results)
            .where(version_results.c.function == "colour")
        ).scalar_one()
    assert current[lib.ids[0]] == small["v1"].manifest.version  # the removed one is left alone
    assert {current[a] for a in lib.ids[1:]} == {small["v2"].manifest.version}
    assert kept == 200 + 199
    # by name from the registry, under another served name, one tenant and prefix only
    third = applied(
        capsys,
        "colour",
        *common,
        "--registry",
        registry,
        "--name",
        "hue",
        "--tenant",
        "acme",
        "--prefix",
        "s3://library/photos/001",
    )
    acme = [
        a
        for a, t in zip(lib.ids, lib.tenants, strict=True)
        if t == "acme" and a.startswith("s3://library/photos/001")
    ]
    assert third["scored"] == len(acme) == 50 and third["missing"] == 0
    with store.engine.connect() as conn:
        hue = set(
            conn.execute(
                sa.select(function_results.c.asset_id).where(function_results.c.function == "hue")
            ).scalars()
        )
    assert hue == set(acme)
    store.close()


def test_apply_refuses_what_it_cannot_do_with_one_line(
    small: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    lib, url, tmp = small["lib"], small["url"], small["tmp"]
    common = ["--embeddings", lib.embeddings, "--store", url]
    assert tagfleet(["apply", str(tmp / "v1"), *common]) == 2
    assert "--from-embeddings" in capsys.readouterr().err
    zs = zero_shot("z", "tags", COLOUR_NAMES, backbone=TINY, encoder=small["backbone"])
    state = dict(zs.head_state)
    state["patch.weight"] = state["linear.weight"][:, :64].clone() + 1
    from models.artifacts import Artifact

    save_artifact(Artifact(zs.manifest, state), str(small["work"] / "patchy"))
    assert tagfleet(["apply", str(small["work"] / "patchy"), "--from-embeddings", *common]) == 2
    assert "patch tokens" in capsys.readouterr().err
    assert tagfleet(["apply", str(small["work"] / "nothing"), "--from-embeddings", *common]) == 2
    assert "no artifact" in capsys.readouterr().err


@pytest.mark.integration
def test_assets_without_an_embedding_are_published_for_the_consumer(
    small: dict[str, Any], capsys: pytest.CaptureFixture[str], kafka_bootstrap: str, new_topic: Any
) -> None:
    lib, url, tmp = small["lib"], small["url"], small["tmp"]
    store = TagStore(url)
    extra = ["s3://library/photos/late-1.png", "s3://library/photos/late-2.png"]
    store.save(
        [AssetResult(a, a, None, 64, 64, {}, None, lib_time(), tenant="acme") for a in extra]
    )
    store.close()
    topic = new_topic(partitions=1)
    summary = applied(
        capsys,
        str(tmp / "v1"),
        "--embeddings",
        lib.embeddings,
        "--store",
        url,
        "--publish-missing",
        "--bootstrap-servers",
        kafka_bootstrap,
        "--backfill-topic",
        topic,
    )
    assert summary["missing"] == 2 and summary["published"] == 2
    events = [json.loads(r.value) for r in read_topic(kafka_bootstrap, topic, 2, timeout_s=30)]
    assert sorted(e["asset_id"] for e in events) == extra
    assert all(e["uri"] == e["asset_id"] and e["tenant"] == "acme" for e in events)
