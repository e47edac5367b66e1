"""Fleet.predict_full: the results of predict, plus each image's pooled embedding per backbone."""

from __future__ import annotations

import numpy as np
import torch

from models import Fleet, zero_shot
from models.backbones import backbone_key


def test_each_image_gets_the_pooled_embedding_of_each_backbone_that_read_it(
    tiny_config: str, images: list[np.ndarray]
) -> None:
    a = zero_shot("a", "classify", ["x", "y"], tiny_config)
    b = zero_shot("b", "tags", ["x", "y"], tiny_config, weights="random:1")
    fleet = Fleet.from_artifacts([a, b])
    keys = {key for key in fleet.backbones}
    assert keys == {backbone_key(a.manifest.backbone), backbone_key(b.manifest.backbone)}
    sizes = [(64, 64)] * len(images)
    wanted = [{"a"}, None, {"b"}, set(), None, {"a", "b"}]

    found = fleet.predict_full(images, sizes, functions=wanted)

    assert found.results == fleet.predict(images, sizes, functions=wanted)  # unchanged
    assert found.shadows == [{}] * len(images)
    key_a = backbone_key(a.manifest.backbone)
    key_b = backbone_key(b.manifest.backbone)
    assert [set(e) for e in found.embeddings] == [
        {key_a},
        {key_a, key_b},
        {key_b},
        set(),
        {key_a, key_b},
        {key_a, key_b},
    ]
    for i, embedding in enumerate(found.embeddings):
        for key, vector in embedding.items():
            with torch.no_grad():
                alone = fleet.backbones[key].encode(np.stack([images[i]])).pooled[0]
            assert vector.dtype == np.float32
            assert vector.shape == (fleet.backbones[key].embed_dim,)
            np.testing.assert_allclose(vector, alone.float().cpu().numpy(), rtol=1e-4, atol=1e-5)
    assert not np.allclose(found.embeddings[1][key_a], found.embeddings[4][key_a])


def test_no_images_no_embeddings(tiny_config: str) -> None:
    fleet = Fleet.from_artifacts([zero_shot("a", "classify", ["x", "y"], tiny_config)])
    found = fleet.predict_full([], [])
    assert (found.results, found.shadows, found.embeddings) == ([], [], [])
