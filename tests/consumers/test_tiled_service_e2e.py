"""The service reads a tiled function through tiles, on the real stack (Kafka, S3, PostgreSQL).

The fleet, on the tiny backbone: ``surface`` (classify clean | mark, ``patch_max``, tiles of
250 px) whose head is set, from two calibration pictures, to answer "mark" when some patch
looks like a small red mark; ``surface_whole``, the same head read on the whole image resized
once; ``things``, a detect function read in tiles. Pictures of 1000 x 800 px with a 14 px
mark (other seeds and places than the calibration's) are found by ``surface`` and missed by
``surface_whole``; the service's results (published and stored) are those of
:func:`models.tiling.predict_tiled` on the same picture, boxes in the original's pixels.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import sqlalchemy as sa
import torch
from harness import ConsumerProcess, env_for, free_port, native_event, produce, read_topic
from PIL import Image

from models.artifacts import Artifact, save_artifact
from models.backbones import CONFIG_DIR, Backbone, load_backbone, resolve_ref
from models.fleet import FleetConfig, FleetEntry, write_fleet_config
from models.function import Function, build_head
from models.manifest import Manifest
from models.preprocess import preprocess_image
from models.tiling import Tiling, cut_tile_set, predict_tiled

pytestmark = pytest.mark.integration

TINY = str(CONFIG_DIR / "tiny-vit.json")
TILING = Tiling(250, 0.25)
SIZE = (1000, 800)


def surface(seed: int, mark: bool) -> Image.Image:
    """Grey noise of ``SIZE``; with ``mark``, a 14 px red square somewhere."""
    rng = np.random.default_rng(seed)
    pixels = rng.normal(128, 12, (SIZE[1], SIZE[0], 3)).clip(0, 255).astype(np.uint8)
    if mark:
        x, y = rng.integers(50, SIZE[0] - 70), rng.integers(50, SIZE[1] - 70)
        pixels[y : y + 14, x : x + 14] = (230, 20, 20)
    return Image.fromarray(pixels)


def _tokens(backbone: Backbone, image: Image.Image) -> torch.Tensor:
    tiles = cut_tile_set(image, TILING, backbone.input_size, max_tiles=64).array
    tokens = backbone.encode(tiles).tokens
    assert tokens is not None
    return tokens.reshape(-1, tokens.shape[-1])


def _manifest(name: str, kind: str, labels: list[str], **head: Any) -> Manifest:
    thresholds = {"*": 0.0} if kind == "detect" else {}
    return Manifest(
        name=name,
        type=kind,
        labels=labels,
        backbone=resolve_ref(TINY),
        thresholds=thresholds,
        head=head,
    )


def mark_finder(backbone: Backbone) -> dict[str, torch.Tensor]:
    """A patch_max head: "mark" scores the best patch along the direction from the clean
    patches' mean to the most unusual patch of a marked calibration picture; "clean" is a
    fixed score a little above the clean picture's best patch."""
    with torch.inference_mode():
        clean, marked = _tokens(backbone, surface(1, False)), _tokens(backbone, surface(2, True))
    mean = clean.mean(dim=0)
    direction = marked[(marked - mean).norm(dim=1).argmax()] - mean
    direction = direction / direction.norm()
    threshold = float(((clean - mean) @ direction).max()) + 0.25
    head = build_head(
        _manifest("surface", "classify", ["clean", "mark"], pooling="patch_max"), backbone
    )
    state = {k: torch.zeros_like(v) for k, v in head.state_dict().items()}
    state["linear.bias"] = torch.tensor([threshold, -float(mean @ direction)])
    state["patch.weight"][1] = direction
    return state


def build_fleet(directory: Path, backbone: Backbone) -> dict[str, Artifact]:
    finder = mark_finder(backbone)
    tiled = {"tile": TILING.tile, "overlap": TILING.overlap}
    manifests = {
        "surface": _manifest(
            "surface", "classify", ["clean", "mark"], pooling="patch_max", tiling=tiled
        ),
        "surface_whole": _manifest(
            "surface_whole", "classify", ["clean", "mark"], pooling="patch_max"
        ),
        "things": _manifest(
            "things", "detect", ["a", "b"], nms_iou=0.5, max_detections=30, tiling=tiled
        ),
    }
    torch.manual_seed(5)
    detect = {
        k: v.clone() for k, v in build_head(manifests["things"], backbone).state_dict().items()
    }
    artifacts = {}
    for name, manifest in manifests.items():
        state = detect if name == "things" else finder
        artifacts[name] = save_artifact(
            Artifact(manifest, state).with_version(), str(directory / name)
        )
    entries = [FleetEntry(name=name, artifact=name) for name in artifacts]
    write_fleet_config(directory / "fleet.yaml", FleetConfig(functions=entries))
    return artifacts


def test_the_service_finds_a_small_mark_through_tiles_that_one_resize_misses(
    stack: dict[str, str],
    kafka_bootstrap: str,
    new_topic: Any,
    new_bucket: Any,
    s3: Any,
    pg_url: str,
    tmp_path: Path,
) -> None:
    backbone = load_backbone(resolve_ref(TINY), device="cpu")
    artifacts = build_fleet(tmp_path, backbone)
    pictures = {"marked-1.png": surface(11, True), "marked-2.png": surface(14, True)}
    pictures |= {"clean-1.png": surface(12, False), "clean-2.png": surface(13, False)}
    bucket = new_bucket()
    events = []
    for key, image in pictures.items():
        body = io.BytesIO()
        image.save(body, "PNG")
        s3.put_object(Bucket=bucket, Key=key, Body=body.getvalue())
        events.append(native_event(bucket, key))
    # an event that asks only for the function read whole (its decode cuts no tiles)
    s3.copy_object(
        Bucket=bucket, Key="whole.png", CopySource={"Bucket": bucket, "Key": "marked-1.png"}
    )
    events.append(native_event(bucket, "whole.png", functions=["surface_whole"]))
    topic, results, dlq = new_topic(partitions=1), new_topic(partitions=1), new_topic(partitions=1)
    produce(kafka_bootstrap, topic, events)
    consumer = ConsumerProcess(
        tmp_path / "consumer.log",
        env_for(stack),
        bootstrap_servers=kafka_bootstrap,
        topic=topic,
        group_id=f"g-{topic}",
        results_topic=results,
        dlq_topic=dlq,
        store=pg_url,
        fleet=tmp_path / "fleet.yaml",
        metrics_port=free_port(),
        batch_size=4,
        max_tiles=64,
    )
    try:
        records = read_topic(kafka_bootstrap, results, expected=len(events), timeout_s=300)
    finally:
        code = consumer.terminate()
    assert code == 0, (code, len(records), consumer.logs()[-3000:])
    served = {
        json.loads(r.value)["asset_id"].rsplit("/", 1)[1]: json.loads(r.value) for r in records
    }
    assert set(served) == {*pictures, "whole.png"}, consumer.logs()[-3000:]
    only = served.pop("whole.png")["functions"]
    assert set(only) == {"surface_whole"} and only["surface_whole"]["label"] == "clean"

    engine = sa.create_engine(pg_url)
    with engine.connect() as conn:
        rows = conn.execute(
            sa.text("select asset_id, function, result from function_results")
        ).all()
    engine.dispose()
    stored = {
        (a.rsplit("/", 1)[1], f): r if isinstance(r, dict) else json.loads(r) for a, f, r in rows
    }
    assert len(stored) == 3 * len(pictures) + 1

    functions = {name: Function(artifact, backbone) for name, artifact in artifacts.items()}
    for key, image in pictures.items():
        event = served[key]
        assert (event["width"], event["height"]) == SIZE
        got = event["functions"]
        kind = key.split("-")[0]
        assert got["surface"]["label"] == ("mark" if kind == "marked" else "clean"), got["surface"]
        assert got["surface_whole"]["label"] == "clean", got["surface_whole"]  # one resize misses

        tiles = cut_tile_set(image, TILING, backbone.input_size, max_tiles=64)
        assert len(tiles.array) == 6 * 4
        expected = predict_tiled(functions["surface"], tiles.array, SIZE)
        for label, score in expected["scores"].items():
            assert got["surface"]["scores"][label] == pytest.approx(score, abs=1e-4)
            assert stored[key, "surface"]["scores"][label] == pytest.approx(score, abs=1e-4)
        whole = functions["surface_whole"].run(
            backbone.encode(preprocess_image(image, backbone.input_size)[None]), [SIZE]
        )[0]
        assert got["surface_whole"]["scores"]["mark"] == pytest.approx(
            whole["scores"]["mark"], abs=1e-4
        )

        objects = predict_tiled(functions["things"], tiles.array, SIZE, boxes=tiles.boxes)
        boxes = [o["box"] for o in got["things"]["objects"]]
        assert [o["label"] for o in got["things"]["objects"]] == [
            o["label"] for o in objects["objects"]
        ]
        assert np.allclose(boxes, [o["box"] for o in objects["objects"]], atol=1e-2)
        # in the original's pixels: within the picture, and found well past the first tile
        assert all(-1e-3 <= b[0] <= b[2] <= SIZE[0] + 1e-3 for b in boxes)
        assert all(-1e-3 <= b[1] <= b[3] <= SIZE[1] + 1e-3 for b in boxes)
        assert max(b[2] for b in boxes) > TILING.tile and max(b[3] for b in boxes) > TILING.tile
