"""``tagfleet create`` on a backbone whose text and image towers agree: the zero-shot function
made from label names alone is scored by ``tagfleet eval`` and tags images through the
service's own stages (``tagfleet tag``), well above chance. Random weights cannot show this,
so the test first aligns a tiny backbone's towers on generated pictures (a few CLIP steps)."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from datagen import colour_folder

from models.backbones import load_backbone, resolve_ref
from models.cli import main as models_main
from models.data.labelled import read_images
from models.data.load import load_dataset
from models.synthetic import COLOURS

TEMPLATE = "a {} thing"
LABELS = sorted(COLOURS)


def aligned_weights(tiny_config: str, tmp_path: Path) -> Path:
    """Both towers of the tiny backbone trained so that each picture's embedding is nearest
    to its colour's prompt (image-to-text contrastive steps); the weights file they make."""
    torch.manual_seed(0)
    backbone = load_backbone(resolve_ref(tiny_config), device="cpu")
    model = backbone.model.requires_grad_(True).train()
    data = load_dataset(str(colour_folder(tmp_path / "align", 40, seed=0)), "classify")
    images, _ = read_images(data, backbone.input_size)
    y = torch.as_tensor(data.targets())
    tokens = backbone.tokenizer([TEMPLATE.format(label) for label in data.labels])
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    gen = torch.Generator().manual_seed(0)
    for _ in range(150):
        idx = torch.randint(0, len(images), (32,), generator=gen)
        pixels = backbone.to_pixels(images[idx.numpy()])
        image = F.normalize(backbone.forward_pixels(pixels).pooled, dim=-1)
        text = F.normalize(model.encode_text(tokens), dim=-1)
        loss = F.cross_entropy(20 * image @ text.T, y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    path = tmp_path / "aligned.pt"
    torch.save(model.state_dict(), path)
    return path


@pytest.mark.slow  # a few hundred CLIP steps on the CPU
def test_a_function_from_names_alone_is_scored_and_served_well_above_chance(
    tiny_config: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    weights = aligned_weights(tiny_config, tmp_path)
    prompts = tmp_path / "prompts.txt"
    prompts.write_text(TEMPLATE + "\n")
    out = tmp_path / "colour"
    argv = ["create", "colour", "--type", "classify", "--labels", ",".join(LABELS)]
    argv += ["--out", str(out), "--backbone", tiny_config, "--weights", str(weights)]
    assert models_main([*argv, "--prompts", str(prompts)]) == 0
    capsys.readouterr()

    held_out = colour_folder(tmp_path / "held", 12, seed=5)  # other pictures than the alignment's
    assert models_main(["eval", str(out), str(held_out)]) == 0
    scored = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert scored["metrics"]["accuracy"] >= 0.8  # chance: 0.25

    from consumers.cli import main as tagfleet

    fleet, store = tmp_path / "fleet.yaml", tmp_path / "tags.db"
    assert models_main(["fleet", "add", str(out), "--fleet", str(fleet)]) == 0
    argv = ["tag", str(held_out), "--fleet", str(fleet), "--store", f"sqlite:///{store}"]
    assert tagfleet([*argv, "--no-progress", "--strict"]) == 0
    with sqlite3.connect(store) as db:
        rows = db.execute("select asset_id, label from tags where function = 'colour'").fetchall()
    truth = {asset: Path(asset).parent.name for asset, _ in rows}
    assert len(truth) == 48
    right = sum(label == truth[asset] for asset, label in rows)
    assert right / len(rows) >= 0.8
