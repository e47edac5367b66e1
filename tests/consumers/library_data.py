"""A generated library for the commands on stored embeddings (apply, similar, search).

Pictures of one large shape of one of four colours on noise, embedded by the tiny random-init
ViT exactly as the consumer embeds an image (the backbone's pooled ``features``), kept in a
real embedding store (LanceDB in a folder) under the backbone's key, with their asset rows in
the real tag store. ``text_aligned_weights`` gives the same backbone a text tower that agrees
with its image tower on these pictures (fitted on other pictures than the library's).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import torch

from consumers.domain import AssetResult
from consumers.store import TagStore
from models.backbones import CONFIG_DIR, Backbone, load_backbone, resolve_ref
from models.embedding_store import EmbeddingRow, open_embedding_store
from models.synthetic import COLOURS, SHAPES, scene

TINY = str(CONFIG_DIR / "tiny-vit.json")
COLOUR_NAMES = sorted(COLOURS)
PROMPT = "a {} thing"


def picture(rng: np.random.Generator, colour: str) -> np.ndarray:
    """One large shape of ``colour`` on noise, 64 px, uint8 (H, W, 3)."""
    shape = str(rng.choice(SHAPES))
    return np.asarray(scene(rng, [(shape, colour)], size=64, lo=0.8, hi=1.0)[0])


def tiny_backbone(weights: str | None = None) -> Backbone:
    torch.set_num_threads(2)
    return load_backbone(resolve_ref(TINY, weights), device="cpu")


def embed(backbone: Backbone, images: np.ndarray) -> np.ndarray:
    """The pooled embeddings (N, D) float32 of uint8 images, as the consumer computes them."""
    out = [backbone.encode(images[i : i + 250]).pooled.numpy() for i in range(0, len(images), 250)]
    return np.concatenate(out)


@dataclass
class Library:
    ids: list[str]
    truth: list[str]
    tenants: list[str]
    vectors: np.ndarray
    key: str
    embeddings: str  # the embedding store's location


def build_library(
    tmp: Path,
    store_url: str,
    backbone: Backbone,
    n: int,
    seed: int,
    tenants: Sequence[str] = ("default",),
    prefix: str = "s3://library/photos/",
) -> Library:
    """``n`` pictures (colours uniform at random), their embeddings in an embedding store at
    ``tmp/embeddings`` and their asset rows (no result yet) in the tag store."""
    rng = np.random.default_rng(seed)
    truth = [COLOUR_NAMES[int(i)] for i in rng.integers(0, len(COLOUR_NAMES), size=n)]
    owners = [tenants[i % len(tenants)] for i in range(n)]
    vectors = embed(backbone, np.stack([picture(rng, c) for c in truth]))
    ids = [f"{prefix}{i:05d}.png" for i in range(n)]
    location = str(tmp / "embeddings")
    store = open_embedding_store(location)
    store.put(
        [
            EmbeddingRow(a, backbone.key, f"{i:064x}", v, None if t == "default" else t)
            for i, (a, v, t) in enumerate(zip(ids, vectors, owners, strict=True))
        ]
    )
    tags = TagStore(store_url)
    try:
        tags.upgrade()
        now = datetime(2026, 12, 1, tzinfo=UTC)
        rows = [
            AssetResult(a, a, f"etag-{a}", 64, 64, {}, None, now, tenant=t)
            for a, t in zip(ids, owners, strict=True)
        ]
        tags.save(rows)
    finally:
        tags.close()
    return Library(ids, truth, owners, vectors, backbone.key, location)


def text_aligned_weights(backbone: Backbone, path: Path, seed: int = 99) -> Path:
    """A weights file of ``backbone`` whose text projection maps each colour's prompt onto the
    mean image embedding of that colour's pictures (least squares; 40 pictures per colour,
    another seed than any library): text and image agree, which random weights do not."""
    rng = np.random.default_rng(seed)
    model = backbone.model
    tokens = backbone.tokenizer([PROMPT.format(c) for c in COLOUR_NAMES])
    with torch.inference_mode():
        projection = model.text_projection
        model.text_projection = None  # the pooled text features before the projection
        try:
            features = model.encode_text(tokens).float()
        finally:
            model.text_projection = projection
        centres = []
        for colour in COLOUR_NAMES:
            pooled = embed(backbone, np.stack([picture(rng, colour) for _ in range(40)]))
            pooled /= np.linalg.norm(pooled, axis=1, keepdims=True)
            centres.append(pooled.mean(axis=0))
        target = torch.as_tensor(np.stack(centres))
        solution = torch.linalg.lstsq(features, target).solution  # (W, D)
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    state["text_projection"] = solution.to(state["text_projection"].dtype)
    torch.save(state, path)
    return path
