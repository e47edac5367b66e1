"""``tagfleet create`` and ``tagfleet weights fetch`` through the command line; the offline
switch reaching the fleet the service loads."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from datagen import colours_jsonl

from models.backbones import OfflineError
from models.cli import main
from models.fleet import load_fleet, read_fleet_config
from models.manifest import FunctionType

LABELS = "blue,green,red,yellow"


def test_create_writes_a_function_that_eval_scores_and_a_fleet_serves(
    tiny_config: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out, fleet = tmp_path / "colours", tmp_path / "fleet.yaml"
    samples = str(colours_jsonl(tmp_path / "calibrate", 20, seed=2))
    argv = ["create", "colours", "--type", "tags", "--labels", LABELS, "--out", str(out)]
    assert main([*argv, "--backbone", tiny_config, "--calibrate", samples]) == 0
    made = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert set(made["metrics"]) == {"micro_f1", "macro_f1"}
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["version"] == made["version"] and manifest["labels"] == LABELS.split(",")

    assert main(["eval", str(out), str(colours_jsonl(tmp_path / "more", 8, seed=3))]) == 0
    scored = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert scored["version"] == made["version"] and "macro_f1" in scored["metrics"]

    assert main(["fleet", "add", str(out), "--fleet", str(fleet)]) == 0
    assert [e.name for e in read_fleet_config(str(fleet)).functions] == ["colours"]
    served = load_fleet(str(fleet), device="cpu")
    assert served.functions["colours"].type == FunctionType.TAGS
    result = served.predict([np.zeros((64, 64, 3), dtype=np.uint8)], [(64, 64)])[0]
    assert set(result["colours"]["scores"]) == set(LABELS.split(","))


@pytest.mark.parametrize(
    ("labels", "expected"),
    [("cat", "at least two distinct labels"), ("cat,cat", "at least two distinct labels")],
)
def test_create_refuses_labels_it_cannot_tell_apart_in_one_line(
    labels: str, expected: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["create", "pets", "--type", "classify", "--labels", labels, "--out", str(tmp_path)]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--labels" in err[0] and expected in err[0]


def test_weights_fetch_names_a_tag_open_clip_does_not_know_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["weights", "fetch", "ViT-B-32", "no-such-tag", "--to", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no-such-tag" in err[0]
    assert not any(tmp_path.iterdir())


def test_the_offline_switch_reaches_every_backbone_the_fleet_loads(
    tiny_config: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``TAGFLEET_OFFLINE`` is passed down to the backbone loader (whose refusal of a hub tag is
    tests/models/test_backbones.py::test_weights_fetch_puts_hub_weights_in_a_bucket_once_and_offline_refuses_the_hub)."""
    import models.fleet

    out, fleet = tmp_path / "fn", tmp_path / "fleet.yaml"
    argv = ["create", "pets", "--type", "classify", "--labels", "cat,dog", "--out", str(out)]
    assert main([*argv, "--backbone", tiny_config]) == 0
    assert main(["fleet", "add", str(out), "--fleet", str(fleet)]) == 0
    real, seen = models.fleet.load_backbone, []

    def loader(*args: object, **kwargs: object) -> object:
        seen.append(kwargs.get("offline"))
        if kwargs.get("offline"):
            raise OfflineError("refused")
        return real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(models.fleet, "load_backbone", loader)
    with pytest.raises(OfflineError):
        load_fleet(str(fleet), offline=True)
    assert load_fleet(str(fleet)).functions and seen == [True, False]


def test_create_takes_the_runtime_and_offline_refuses_a_hub_download_in_one_line(
    tiny_config: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    out = tmp_path / "pets"
    argv = ["create", "pets", "--type", "classify", "--labels", "cat,dog", "--out", str(out)]
    monkeypatch.setenv("TAGFLEET_OFFLINE", "1")
    assert main([*argv, "--backbone", "ViT-B-32", "--weights", "openai"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "downloads are off" in err[0], err
    assert not out.exists()

    import models.create

    real, seen = models.create.load_backbone, []

    def loader(*args: object, **kwargs: object) -> object:
        seen.append(kwargs)
        return real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(models.create, "load_backbone", loader)
    cache = tmp_path / "cache"
    flags = ["--backbone", tiny_config, "--device", "cpu", "--cache-dir", str(cache)]
    assert main([*argv, *flags]) == 0
    assert seen == [{"device": "cpu", "cache_dir": cache, "offline": True}]
    assert (out / "manifest.json").is_file()
