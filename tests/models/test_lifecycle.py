"""The model lifecycle (issue 16): a registry of immutable versions, the promotion gate,
rollback, every fleet change atomic with a history entry; local and ``s3://`` fleets."""

from __future__ import annotations

import json
import random
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from datagen import colour_folder

from models.cli import main
from models.fleet import Action, Role, read_fleet_config
from models.registry import read_index, version_uri

pytestmark = pytest.mark.slow  # trains tiny functions: seconds each


@pytest.fixture
def train_cmd(
    tiny_config: str, capsys: pytest.CaptureFixture[str]
) -> Callable[..., dict[str, Any]]:
    """``tagfleet train DATA --registry R --fleet F ...`` in this process; its JSON summary."""

    def run(data: Path | str, registry: str, fleet: str, *extra: str) -> dict[str, Any]:
        capsys.readouterr()
        args = ["train", str(data), "--type", "classify", "--name", "colour"]
        args += ["--backbone", tiny_config, "--recipe", "fast", "--no-progress"]
        args += ["--registry", registry, "--fleet", fleet, *extra]
        assert main(args) == 0, capsys.readouterr().err
        summary: dict[str, Any] = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
        return summary

    return run


def _drop_label(data: Path, label: str, dest: Path) -> Path:
    shutil.copytree(data, dest)
    shutil.rmtree(dest / label)
    return dest


def _shuffled(data: Path, dest: Path, seed: int = 0) -> Path:
    """The same images with their labels shuffled: a candidate that learns nothing."""
    files = sorted(data.rglob("*.png"))
    labels = [f.parent.name for f in files]
    random.Random(seed).shuffle(labels)
    for i, (f, label) in enumerate(zip(files, labels, strict=True)):
        (dest / label).mkdir(parents=True, exist_ok=True)
        shutil.copy(f, dest / label / f"{i}.png")
    return dest


def test_train_twice_two_versions_the_second_compares_with_one_more_label(
    tmp_path: Path, train_cmd: Callable[..., dict[str, Any]], capsys: pytest.CaptureFixture[str]
) -> None:
    full = colour_folder(tmp_path / "data", 8, seed=0)
    label = sorted(p.name for p in full.iterdir())[-1]
    fewer = _drop_label(full, label, tmp_path / "fewer")
    registry, fleet = str(tmp_path / "registry"), str(tmp_path / "fleet.yaml")

    first = train_cmd(fewer, registry, fleet)
    first_dir = Path(version_uri(registry, "colour", first["version"]))
    before = {p.name: p.read_bytes() for p in first_dir.iterdir()}
    second = train_cmd(full, registry, fleet)  # one more label; compared with the newest

    assert second["version"] != first["version"] and second["previous"] == first["version"]
    assert {p.name: p.read_bytes() for p in first_dir.iterdir()} == before  # not overwritten
    report = json.loads((Path(registry) / "colour" / second["version"] / "report.json").read_text())
    assert report["previous"]["version"] == first["version"]
    assert report["previous"]["labels_added"] == [label]
    assert report["previous"]["labels_removed"] == []
    assert set(report["previous"]["metrics"]) == {"accuracy", "macro_f1"}
    markdown = (Path(registry) / "colour" / second["version"] / "report.md").read_text()
    assert f"Labels added: {label}." in markdown

    again = train_cmd(full, registry, fleet)  # same data and seed: the same version, kept
    assert again["version"] == second["version"] and again["created"] is False
    index = read_index(registry, "colour")
    assert [r.version for r in index.versions] == [first["version"], second["version"]]
    assert index.versions[1].parent == first["version"]

    capsys.readouterr()
    assert main(["versions", "colour", "--registry", registry, "--format", "json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [v["version"] for v in listed] == [first["version"], second["version"]]
    assert main(["versions", "nope", "--registry", registry]) == 2
    assert "no versions of 'nope'" in capsys.readouterr().err


@pytest.fixture(params=["local", "s3"])
def fleet_location(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[str, str]]:
    """(registry, fleet file): a local folder, or a bucket of moto's S3 server."""
    if request.param == "local":
        yield str(tmp_path / "registry"), str(tmp_path / "fleet.yaml")
        return
    stack = request.getfixturevalue("stack")
    for key in ("AWS_ENDPOINT_URL_S3", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.setenv(key, stack[key])
    monkeypatch.setenv("AWS_DEFAULT_REGION", stack["AWS_DEFAULT_REGION"])
    bucket = request.getfixturevalue("new_bucket")("lc")
    yield f"s3://{bucket}/registry", f"s3://{bucket}/fleet.yaml"


def test_promote_refuses_a_worse_candidate_force_promotes_rollback_restores(
    tmp_path: Path,
    train_cmd: Callable[..., dict[str, Any]],
    capsys: pytest.CaptureFixture[str],
    fleet_location: tuple[str, str],
) -> None:
    registry, fleet = fleet_location
    data = colour_folder(tmp_path / "data", 10, seed=0)
    good = train_cmd(data, registry, fleet)["version"]
    first = ["fleet", "promote", "colour", good, "--fleet", fleet, "--registry", registry]
    assert main(first) == 0  # nothing serves yet; the fleet keeps the registry from now on
    bad = train_cmd(_shuffled(data, tmp_path / "shuffled"), registry, fleet)
    assert bad["previous"] == good  # compared with the serving version

    capsys.readouterr()
    assert main(["fleet", "promote", "colour", bad["version"], "--fleet", fleet]) == 1
    err = capsys.readouterr().err
    report = json.loads(_read(version_uri(registry, "colour", bad["version"]) + "/report.json"))
    figures = (report["metrics"]["macro_f1"], report["previous"]["metrics"]["macro_f1"])
    assert figures[0] < figures[1] - 0.01
    assert f"macro_f1 {figures[0]:.4f} against {figures[1]:.4f}" in err, err
    assert read_fleet_config(fleet).entry("colour").version == good  # type: ignore[union-attr]
    # --data: both evaluated now on the same dataset; refused again, with both figures
    assert (
        main(["fleet", "promote", "colour", bad["version"], "--fleet", fleet, "--data", str(data)])
        == 1
    )
    err = capsys.readouterr().err
    assert "against" in err and f"for the serving version {good} on {data}" in err, err

    args = ["fleet", "promote", "colour", bad["version"], "--fleet", fleet, "--force"]
    assert main(args) == 0
    config = read_fleet_config(fleet)
    assert config.entry("colour").version == bad["version"]  # type: ignore[union-attr]
    assert config.history[-1].forced and config.history[-1].previous == good
    assert "against" in (config.history[-1].note or "")

    assert main(["fleet", "rollback", "colour", "--fleet", fleet]) == 0
    config = read_fleet_config(fleet)
    assert config.entry("colour").version == good  # type: ignore[union-attr]
    assert config.entry("colour").role == Role.SERVING  # type: ignore[union-attr]
    assert [h.action for h in config.history] == [Action.PROMOTE, Action.PROMOTE, Action.ROLLBACK]
    assert config.promotion("colour") == 3  # the rollback is the newest serving change

    capsys.readouterr()
    assert main(["fleet", "promote", "colour", "0123456789abcdef", "--fleet", fleet]) == 2
    assert "has no version '0123456789abcdef'" in capsys.readouterr().err
    assert main(["fleet", "rollback", "nope", "--fleet", fleet]) == 2
    assert "nope has no serving version" in capsys.readouterr().err


def _read(uri: str) -> bytes:
    from models import storage

    return storage.read_bytes(uri)


def test_promote_with_data_evaluates_on_the_runtime_it_is_given(
    tiny_config: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``fleet promote --data`` loads both versions' backbones on ``--device``, with
    ``--cache-dir`` and ``--offline`` (TAGFLEET_DEVICE, ...), as train and eval do."""
    from datagen import colours_jsonl

    import models.fleet
    from models.create import create
    from models.registry import publish

    registry, fleet = str(tmp_path / "registry"), str(tmp_path / "fleet.yaml")
    labels = ["blue", "green", "red", "yellow"]
    for templates in ("a photo of {}\n", "{}\n"):  # two versions of one function
        (tmp_path / "prompts.txt").write_text(templates)
        made = create(
            "colour", "classify", labels, tiny_config, prompts=str(tmp_path / "prompts.txt")
        )
        version = publish(made, registry, None)[0].manifest.version
        assert version is not None
        args = ["fleet", "promote", "colour", version, "--fleet", fleet, "--registry", registry]
        if templates == "{}\n":
            break
        assert main(args) == 0
    real, seen = models.fleet.load_backbone, []

    def loader(*args: object, **kwargs: object) -> object:
        seen.append({k: kwargs.get(k) for k in ("device", "cache_dir", "offline")})
        return real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(models.fleet, "load_backbone", loader)
    data = str(colours_jsonl(tmp_path / "data", 4, seed=1))
    cache = tmp_path / "cache"
    runtime = ["--device", "cpu", "--cache-dir", str(cache), "--offline"]
    main([*args, "--data", data, "--force", *runtime])  # the gate's verdict does not matter
    assert seen and all(s == {"device": "cpu", "cache_dir": cache, "offline": True} for s in seen)
