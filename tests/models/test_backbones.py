"""Backbones: resolution by name or config path, one pass for pooled + tokens, weight files."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from models.backbones import backbone_key, load_backbone, resolve_ref
from models.weights import state_dict_bytes


def test_config_path_is_inlined_and_name_resolves(tiny_config: str) -> None:
    by_path = resolve_ref(tiny_config)
    assert by_path.model == "tiny-vit"
    assert by_path.config == json.loads(Path(tiny_config).read_text())
    by_name = resolve_ref("tiny-vit")
    assert by_name.config is None
    with pytest.raises(ValueError, match="unknown backbone 'no-such-model'"):
        resolve_ref("no-such-model")


def test_encode_gives_pooled_and_patch_tokens_in_one_pass(
    tiny_config: str, images: list[np.ndarray]
) -> None:
    backbone = load_backbone(resolve_ref(tiny_config))
    features = backbone.encode(np.stack(images))
    assert backbone.forward_calls == 1
    assert features.pooled.shape == (6, 64)
    assert features.tokens is not None and features.tokens.shape == (6, 64, 64)
    assert features.grid == (8, 8)


def test_other_input_sizes_are_resized_on_the_device(tiny_config: str) -> None:
    backbone = load_backbone(resolve_ref(tiny_config))
    big = np.zeros((2, 96, 96, 3), dtype=np.uint8)
    assert backbone.encode(big).pooled.shape == (2, 64)
    with pytest.raises(ValueError, match="uint8"):
        backbone.encode(np.zeros((2, 64, 64, 3), dtype=np.float32))


def test_random_init_is_seeded_and_keys_identify_weights(tiny_config: str) -> None:
    a = load_backbone(resolve_ref(tiny_config))
    b = load_backbone(resolve_ref(tiny_config, "random:0"))
    c = load_backbone(resolve_ref(tiny_config, "random:1"))
    x = np.full((1, 64, 64, 3), 127, dtype=np.uint8)
    assert torch.equal(a.encode(x).pooled, b.encode(x).pooled)
    assert not torch.equal(a.encode(x).pooled, c.encode(x).pooled)
    assert a.key == b.key != c.key
    assert backbone_key(resolve_ref("tiny-vit")) != a.key  # name vs inline config


@pytest.mark.parametrize("suffix", [".safetensors", ".pt"])
def test_weights_from_a_local_file(tiny_config: str, tmp_path, suffix: str) -> None:
    source = load_backbone(resolve_ref(tiny_config, "random:7"))
    path = tmp_path / f"w{suffix}"
    state = source.model.state_dict()
    if suffix == ".safetensors":
        path.write_bytes(state_dict_bytes(state))
    else:
        torch.save(state, path)
    loaded = load_backbone(resolve_ref(tiny_config, str(path)))
    x = np.full((1, 64, 64, 3), 50, dtype=np.uint8)
    assert torch.equal(loaded.encode(x).pooled, source.encode(x).pooled)


def test_pickled_objects_are_refused(tiny_config: str, tmp_path) -> None:
    path = tmp_path / "evil.pt"
    torch.save({"state_dict": {"x": object()}}, path)
    with pytest.raises(Exception, match="[Ww]eights only load failed|weights_only"):
        load_backbone(resolve_ref(tiny_config, str(path)))


def test_weights_fetch_puts_hub_weights_in_a_bucket_once_and_offline_refuses_the_hub(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import open_clip.pretrained

    from models.backbones import OfflineError, build_model, fetch_weights

    hub = tmp_path / "hub-file.pt"
    hub.write_bytes(b"weights")
    asked: list[str | None] = []

    def download(cfg: dict[str, Any], cache_dir: str | None = None) -> str:
        asked.append(cache_dir)
        return str(hub)

    monkeypatch.setattr(open_clip.pretrained, "download_pretrained", download)
    uri = fetch_weights("ViT-B-32", "openai", str(tmp_path / "bucket"), cache=tmp_path / "c")
    assert uri == str(tmp_path / "bucket" / "ViT-B-32-openai.pt")
    assert Path(uri).read_bytes() == b"weights"
    assert asked == [str(tmp_path / "c" / "hub")]  # the cache location is the setting's
    with pytest.raises(OfflineError, match="downloads are off"):
        build_model(resolve_ref("ViT-B-32", "openai"), offline=True)
    assert len(asked) == 1  # refused before any download
    with pytest.raises(ValueError, match="no pretrained tag"):
        fetch_weights("ViT-B-32", "nope", str(tmp_path / "bucket"))
