"""A new label learnt from stored embeddings (models.from_embeddings): no image is read.

The library is 2,000 generated pictures (one large shape of one of four colours on noise)
embedded once by the tiny random-init ViT, as the consumer would store them (float16). The
label "colour" is one no function of the fleet has: 30 labelled asset ids train it, and the
other 1,970 assets are the held-out set it is scored on (chance: 0.25). The store here is a
dict behind the store's protocol: this file checks the learning and the arithmetic; the
commands over the real embedding store and the real S3 are tests/consumers'.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import pytest
import torch

from models.artifacts import Artifact, load_artifact, save_artifact
from models.backbones import backbone_key, load_backbone, resolve_ref
from models.data.samples import DatasetError
from models.fleet import Fleet
from models.from_embeddings import (
    NotServableFromEmbeddings,
    exact_nearest,
    load_labelled_ids,
    pooled_weights,
    results_from_embeddings,
    served_scores,
    train_from_embeddings,
)
from models.synthetic import COLOURS, SHAPES, scene
from models.training.spec import TrainSpec
from models.zeroshot import zero_shot

LIBRARY = 2000
LABELLED = 30
COLOUR_NAMES = sorted(COLOURS)


class DictStore:
    """The embedding store's read methods over a dict (one backbone key)."""

    def __init__(self, key: str, ids: Sequence[str], vectors: np.ndarray) -> None:
        self.key = key
        self.rows = dict(zip(ids, vectors, strict=True))
        self.gets = 0

    def get(self, backbone: str, asset_ids: Sequence[str]) -> dict[str, np.ndarray]:
        self.gets += 1
        if backbone != self.key:
            return {}
        return {a: self.rows[a] for a in asset_ids if a in self.rows}

    def scan(
        self,
        backbone: str,
        *,
        prefix: str | None = None,
        tenant: str | None = None,
        batch_size: int = 4096,
    ) -> Iterator[tuple[list[str], np.ndarray]]:
        ids = [a for a in self.rows if prefix is None or a.startswith(prefix)]
        for start in range(0, len(ids), batch_size):
            chunk = ids[start : start + batch_size]
            yield chunk, np.stack([self.rows[a] for a in chunk])


def picture(rng: np.random.Generator, colour: str) -> np.ndarray:
    """One large shape of ``colour`` on noise, 64 px."""
    shape = str(rng.choice(SHAPES))
    return np.asarray(scene(rng, [(shape, colour)], size=64, lo=0.8, hi=1.0)[0])


@pytest.fixture(scope="module")
def library(tmp_path_factory: pytest.TempPathFactory) -> dict:
    torch.set_num_threads(2)
    config = str(Path(__file__).parents[2] / "models" / "configs" / "tiny-vit.json")
    backbone = load_backbone(resolve_ref(config), device="cpu")
    rng = np.random.default_rng(7)
    truth = [COLOUR_NAMES[int(i)] for i in rng.integers(0, 4, size=LIBRARY)]
    images = np.stack([picture(rng, colour) for colour in truth])
    pooled = [backbone.encode(images[i : i + 250]).pooled.numpy() for i in range(0, LIBRARY, 250)]
    ids = [f"s3://library/photos/{i:05d}.png" for i in range(LIBRARY)]
    key = backbone_key(resolve_ref(config))
    store = DictStore(key, ids, np.concatenate(pooled).astype(np.float16))
    root = tmp_path_factory.mktemp("library")
    manifest = root / "labelled.jsonl"
    lines = [json.dumps({"image": ids[i], "label": truth[i]}) for i in range(LABELLED)]
    manifest.write_text("\n".join(lines) + "\n")
    return {
        "config": config,
        "backbone": backbone,
        "ids": ids,
        "truth": truth,
        "images": images,
        "store": store,
        "manifest": str(manifest),
    }


def spec(config: str) -> TrainSpec:
    return TrainSpec(type="classify", name="colour", backbone=config, progress=False)


def test_a_new_label_from_30_labelled_ids_scores_the_held_out_library_well(
    library: dict, tmp_path: Path
) -> None:
    artifact = train_from_embeddings(library["manifest"], spec(library["config"]), library["store"])
    m = artifact.manifest
    assert m.labels == COLOUR_NAMES and m.head == {"pooling": "pooled"}
    assert m.training["source"] == "stored embeddings" and m.temperature != 1.0
    report = json.loads(artifact.files["report.json"])
    assert report["trained_from"] == "stored embeddings"
    assert "stored embeddings" in artifact.files["report.md"].decode()

    held_out = slice(LABELLED, LIBRARY)  # never seen by training nor calibration
    vectors = np.stack([library["store"].rows[a] for a in library["ids"][held_out]])
    results = results_from_embeddings(artifact, vectors)
    truth = library["truth"][held_out]
    accuracy = float(np.mean([r["label"] == t for r, t in zip(results, truth, strict=True)]))
    print(f"held-out accuracy of a label from {LABELLED} stored embeddings: {accuracy:.3f}")
    assert accuracy >= 0.85, accuracy  # chance: 0.25

    # a normal function artifact: saved, loaded and served on the images by the fleet, it
    # says what it says from the stored embeddings (up to their float16 rounding)
    save_artifact(artifact, str(tmp_path / "colour"))
    saved = load_artifact(str(tmp_path / "colour"))
    fleet = Fleet.from_artifacts([saved], backbones={library["backbone"].key: library["backbone"]})
    images = library["images"][LABELLED : LABELLED + 40]
    served = fleet.predict(list(images), [(64, 64)] * len(images))
    from_store = served_scores(saved, vectors[:40])
    for row, result in zip(from_store, served, strict=True):
        scores = [result["colour"]["scores"][label] for label in COLOUR_NAMES]
        np.testing.assert_allclose(row, scores, atol=2e-2)
        assert COLOUR_NAMES[int(np.argmax(row))] == result["colour"]["label"] or max(row) < 0.6


def test_labelled_ids_without_a_stored_embedding_are_named(library: dict, tmp_path: Path) -> None:
    manifest = tmp_path / "labelled.jsonl"
    rows = [{"asset_id": library["ids"][i], "label": library["truth"][i]} for i in range(20)]
    rows += [{"asset_id": "s3://library/never-tagged.png", "label": "red"}]
    manifest.write_text("\n".join(json.dumps(r) for r in rows))
    with pytest.raises(DatasetError, match="1 of 21 labelled assets have no stored embedding"):
        train_from_embeddings(str(manifest), spec(library["config"]), library["store"])
    other = spec(library["config"]).model_copy(update={"weights": "random:1"})
    with pytest.raises(DatasetError, match="21 of 21"):  # another backbone's key: none stored
        train_from_embeddings(str(manifest), other, library["store"])


def test_a_manifest_of_ids_reads_ids_as_written_and_refuses_duplicates(tmp_path: Path) -> None:
    manifest = tmp_path / "ids.jsonl"
    manifest.write_text(
        '{"asset_id": "a-1", "labels": ["x"]}\n{"image": "s3://b/k 2.jpg", "labels": ["x"]}\n'
    )
    data = load_labelled_ids(str(manifest), "tags")
    assert [s.image for s in data.samples] == ["a-1", "s3://b/k 2.jpg"]  # not joined to a folder
    manifest.write_text('{"asset_id": "a-1", "label": "x"}\n{"asset_id": "a-1", "label": "x"}\n')
    with pytest.raises(DatasetError, match="listed more than once"):
        load_labelled_ids(str(manifest), "classify")
    with pytest.raises(DatasetError, match="JSONL or CSV"):
        load_labelled_ids(str(tmp_path), "classify")


def test_functions_reading_more_than_the_pooled_embedding_are_refused(library: dict) -> None:
    encoder = library["backbone"]
    zs = zero_shot("z", "tags", ["red", "blue"], backbone=library["config"], encoder=encoder)
    pooled_weights(zs)  # a zero-shot tags head: pooled only (its patch layers are zero)
    state = dict(zs.head_state)
    state["patch.weight"] = torch.ones(2, 64)
    with pytest.raises(NotServableFromEmbeddings, match="patch tokens"):
        pooled_weights(Artifact(zs.manifest, state))
    with pytest.raises(NotServableFromEmbeddings, match="own backbone"):
        pooled_weights(Artifact(zs.manifest, zs.head_state, {"w": torch.zeros(1)}))


def test_exact_nearest_is_the_brute_force_cosine_order(library: dict) -> None:
    store: DictStore = library["store"]
    query = store.rows[library["ids"][3]].astype(np.float32)
    found = exact_nearest(store, store.key, query, 5, batch_size=300)
    x = np.stack(list(store.rows.values())).astype(np.float32)
    cos = x @ query / np.linalg.norm(x, axis=1) / np.linalg.norm(query)
    expected = [library["ids"][i] for i in np.argsort(-cos, kind="stable")[:5]]
    assert [a for a, _ in found] == expected and found[0][0] == library["ids"][3]
    assert found[0][1] == pytest.approx(1.0, abs=1e-5)
    assert exact_nearest(store, store.key, query, 0) == []


def test_the_train_command_writes_a_registry_version_from_a_real_store(
    library: dict, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from models.cli import main as models_main
    from models.embedding_store import EmbeddingRow, open_embedding_store

    location = str(tmp_path / "embeddings")
    store: DictStore = library["store"]
    open_embedding_store(location).put(
        [EmbeddingRow(a, store.key, "0" * 64, v) for a, v in list(store.rows.items())[:200]]
    )
    registry = str(tmp_path / "registry")
    argv = ["train", "--from-embeddings", library["manifest"], "--type", "classify"]
    argv += ["--name", "colour", "--backbone", library["config"], "--embeddings", location]
    argv += ["--registry", registry, "--no-progress"]
    assert models_main(argv) == 0
    first = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert first["created"] and first["previous"] is None
    assert first["trained_from"] == "stored embeddings"
    assert models_main(argv) == 0  # the same ids, embeddings and seed: the same version
    again = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert again["version"] == first["version"] and not again["created"]
    assert models_main([*argv, library["manifest"]]) == 2  # a DATASET too: one or the other
    assert "one of them" in capsys.readouterr().err
    nowhere = [*argv[:-5], "--embeddings", str(tmp_path / "none"), "--out", str(tmp_path / "o")]
    with pytest.raises(SystemExit, match="no embedding store at"):
        models_main(nowhere)
