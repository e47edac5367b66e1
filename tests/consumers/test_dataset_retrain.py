"""From corrections to the next version (issue 18 item 5, last must-show): a serving version
trained on deliberately wrong labels for one class (blue pictures labelled green) tags 40
library images; people correct its tags; ``tagfleet dataset export`` of those 40 corrected
assets trains a new version whose held-out accuracy on the corrected labels beats the
serving version's. Real PostgreSQL and S3 (moto); generated pictures; the tiny backbone."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import torch
from api_harness import tagfleet
from PIL import Image

from consumers.api.queries import set_label
from consumers.domain import AssetResult, SourcePosition
from consumers.store import TagStore
from models import Fleet, preprocess_image, save_artifact
from models.recipes import demo_classify_spec
from models.synthetic import colour_folder
from models.train import train

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _images(folder: Path) -> list[tuple[Path, str]]:
    """(picture, its true colour) of a colour_folder, sorted."""
    return sorted((p, p.parent.name) for p in folder.glob("*/*.png"))


def _predict(artifact_dir: Path, pictures: list[Path]) -> list[dict[str, Any]]:
    from models import load_artifact

    fleet = Fleet.from_artifacts([("colour", load_artifact(str(artifact_dir)))], device="cpu")
    images, sizes = [], []
    for path in pictures:
        with Image.open(path) as img:
            rgb = img.convert("RGB")
        images.append(preprocess_image(rgb, fleet.input_size))
        sizes.append(rgb.size)
    return [r["colour"] for r in fleet.predict(images, sizes)]


def _accuracy(artifact_dir: Path, held_out: list[tuple[Path, str]]) -> float:
    predictions = _predict(artifact_dir, [p for p, _ in held_out])
    hits = sum(r["label"] == truth for r, (_, truth) in zip(predictions, held_out, strict=True))
    return hits / len(held_out)


def test_export_of_corrected_assets_trains_a_version_that_beats_the_serving_one(
    pg_url: str, s3: Any, new_bucket: Any, tmp_path: Path
) -> None:
    # The serving version: blue pictures were labelled green when it was trained.
    wrong = colour_folder(tmp_path / "serving-data", 12, seed=5)
    for picture in (wrong / "blue").glob("*.png"):
        shutil.move(str(picture), str(wrong / "green" / f"blue-{picture.name}"))
    (wrong / "blue").rmdir()
    spec = demo_classify_spec("colour", seed=5, progress=False, kfold_below=0)
    serving = tmp_path / "serving"
    save_artifact(train(str(wrong), spec), str(serving))

    # 40 library pictures in S3, tagged by the serving version, stored with tenant acme.
    library = _images(colour_folder(tmp_path / "library", 10, seed=6))
    assert len(library) == 40
    bucket = new_bucket()
    ids = []
    for path, colour in library:
        key = f"{colour}/{path.name}"
        s3.put_object(Bucket=bucket, Key=key, Body=path.read_bytes())
        ids.append(f"s3://{bucket}/{key}")
    predictions = _predict(serving, [p for p, _ in library])
    store = TagStore(pg_url)
    store.upgrade()
    store.save(
        [
            AssetResult(
                asset_id=asset_id,
                uri=asset_id,
                etag="e",
                width=96,
                height=96,
                functions={"colour": prediction},
                source=SourcePosition("assets", 0, i),
                processed_at=datetime(2026, 12, 1, tzinfo=UTC),
                tenant="acme",
            )
            for i, (asset_id, prediction) in enumerate(zip(ids, predictions, strict=True))
        ]
    )

    # People correct them: confirm what is right, reject what is wrong and add the truth.
    wrongly_tagged = 0
    for asset_id, prediction, (_, truth) in zip(ids, predictions, library, strict=True):
        if prediction["label"] != truth:
            wrongly_tagged += 1
            set_label(store.engine, "acme", asset_id, "colour", prediction["label"], "absent", "p")
        set_label(store.engine, "acme", asset_id, "colour", truth, "present", "p")
    store.close()
    assert wrongly_tagged >= 10, "the serving version should miss at least every blue picture"

    out = tmp_path / "corrections"
    done = tagfleet(
        {"TAGFLEET_STORE": pg_url},
        *("dataset", "export", "colour", "--out", str(out), "--tenant", "acme"),
    )
    assert done.returncode == 0, done.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["samples"] == 40 and summary["counts"] == dict.fromkeys(
        ("blue", "green", "red", "yellow"), 10
    )
    manifest = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
    assert all(line["image"].startswith(f"s3://{bucket}/") for line in manifest)

    corrected = tmp_path / "corrected"
    save_artifact(train(str(out / "manifest.jsonl"), spec), str(corrected))

    held_out = _images(colour_folder(tmp_path / "held-out", 15, seed=105))
    before, after = _accuracy(serving, held_out), _accuracy(corrected, held_out)
    print(f"held-out accuracy: serving {before:.2f}, trained on the corrections {after:.2f}")
    assert before <= 0.76, before  # blue is always wrong
    assert after > before, (before, after)
