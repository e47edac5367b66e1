"""Datasets: the user formats, and a clear error naming the file or label for each problem."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from datagen import colour_folder, colours_jsonl

from models.data.labelled import read_images
from models.data.load import load_dataset
from models.data.samples import DatasetError, stratified_split


def test_folder_per_label(tmp_path: Path) -> None:
    ds = load_dataset(str(colour_folder(tmp_path, 3, seed=0)), "classify")
    assert ds.labels == ["blue", "green", "red", "yellow"]
    assert len(ds.samples) == 12
    images, hashes = read_images(ds, 32)
    assert images.shape == (12, 32, 32, 3) and images.dtype == np.uint8
    assert len(set(hashes)) == 12


def test_jsonl_and_csv_manifests(tmp_path: Path) -> None:
    jsonl = colours_jsonl(tmp_path, 20, seed=0)
    ds = load_dataset(str(jsonl), "tags")
    assert ds.targets().shape == (20, len(ds.labels))
    rows = [json.loads(line) for line in jsonl.read_text().splitlines()]
    csv = tmp_path / "m.csv"
    csv.write_text(
        "image,labels\n" + "".join(f"{r['image']},{';'.join(r['labels'])}\n" for r in rows)
    )
    assert load_dataset(str(csv), "tags").samples == ds.samples
    classify_csv = tmp_path / "c.csv"
    classify_csv.write_text(
        "image,label\n" + "".join(f"{r['image']},{r['labels'][0]}\n" for r in rows)
    )
    assert load_dataset(str(classify_csv), "classify", min_per_label=1).kind == "classify"


def test_empty_label_folder_is_named(tmp_path: Path) -> None:
    colour_folder(tmp_path, 3, seed=0)
    (tmp_path / "purple").mkdir()
    with pytest.raises(DatasetError, match="label folder 'purple'.*has no images"):
        load_dataset(str(tmp_path), "classify")


def test_too_few_samples_names_the_label(tmp_path: Path) -> None:
    colour_folder(tmp_path, 3, seed=0)
    for extra in list((tmp_path / "red").iterdir())[1:]:
        extra.unlink()
    with pytest.raises(DatasetError, match="label 'red' has 1 sample"):
        load_dataset(str(tmp_path), "classify")


def test_unknown_label_is_named(tmp_path: Path) -> None:
    colour_folder(tmp_path, 3, seed=0)
    with pytest.raises(DatasetError, match="unknown label 'yellow'.*yellow/"):
        load_dataset(str(tmp_path), "classify", labels=["red", "green", "blue"])


def test_unreadable_and_missing_images_are_named(tmp_path: Path) -> None:
    colour_folder(tmp_path, 3, seed=0)
    (tmp_path / "red" / "0.png").write_bytes(b"not a png at all")
    ds = load_dataset(str(tmp_path), "classify")
    with pytest.raises(DatasetError, match=r"unreadable image .*red/0\.png"):
        read_images(ds, 32)
    manifest = tmp_path / "m.jsonl"
    manifest.write_text('{"image": "nowhere.png", "label": "a"}\n' * 2)
    with pytest.raises(DatasetError, match=r"cannot read image .*nowhere\.png"):
        read_images(load_dataset(str(manifest), "classify"), 32)


def test_malformed_manifests_name_file_and_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"image": "a.png", "label": "x"}\n{oops\n')
    with pytest.raises(DatasetError, match=r"bad\.jsonl:2: not valid JSON"):
        load_dataset(str(bad), "classify")
    nolabel = tmp_path / "nolabel.jsonl"
    nolabel.write_text('{"image": "a.png"}\n')
    with pytest.raises(DatasetError, match=r"nolabel\.jsonl:1: tags needs 'labels'"):
        load_dataset(str(nolabel), "tags")
    with pytest.raises(DatasetError, match="must be a JSONL or CSV manifest"):
        load_dataset(str(tmp_path), "tags")


def test_stratified_split_keeps_every_class_on_both_sides() -> None:
    y = np.repeat(np.arange(4), [2, 5, 10, 40])
    train, val = stratified_split(y, 0.2, seed=1)
    assert set(train) | set(val) == set(range(len(y))) and not set(train) & set(val)
    for c in range(4):
        assert (y[val] == c).sum() >= 1 and (y[train] == c).sum() >= 1
    again = stratified_split(y, 0.2, seed=1)
    assert np.array_equal(again[1], val)


def test_s3_folder_dataset(tmp_path: Path, s3, new_bucket) -> None:  # noqa: ANN001
    bucket = new_bucket()
    root = colour_folder(tmp_path, 2, seed=0)
    for f in root.rglob("*.png"):
        s3.put_object(Bucket=bucket, Key=f"data/{f.relative_to(root)}", Body=f.read_bytes())
    ds = load_dataset(f"s3://{bucket}/data", "classify")
    assert ds.labels == ["blue", "green", "red", "yellow"]
    assert read_images(ds, 32)[0].shape == (8, 32, 32, 3)
    s3.put_object(Bucket=bucket, Key="data/red/broken.png", Body=b"junk")
    with pytest.raises(DatasetError, match=f"unreadable image s3://{bucket}/data/red/broken.png"):
        read_images(load_dataset(f"s3://{bucket}/data", "classify"), 32)
