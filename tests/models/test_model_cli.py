"""The train, eval and fleet commands, run through ``models.cli.main``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from datagen import colour_folder

from models.cli import main
from models.fleet import read_fleet_config


def test_help_states_every_default(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    out = capsys.readouterr().out
    assert out.count("(default:") >= 15


@pytest.mark.slow  # the tagfleet command in a fresh process: tens of seconds
def test_train_eval_and_fleet_commands(
    tiny_config: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = str(colour_folder(tmp_path / "data", 10, seed=0))
    out = tmp_path / "colour"
    args = [
        "train",
        data,
        "--type",
        "classify",
        "--name",
        "colour",
        "--out",
        str(out),
        "--backbone",
        tiny_config,
        "--mode",
        "probe",
    ]
    assert main(args) == 0
    first = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    for name in (
        "manifest.json",
        "head.safetensors",
        "report.json",
        "report.md",
        "confusion.png",
        "pr_curves.png",
    ):
        assert (out / name).exists(), name
    report = json.loads((out / "report.json").read_text())
    assert {"accuracy", "macro_f1"} <= set(report["metrics"])

    assert main([*args, "--seed", "1"]) == 0  # a new version at the same --out
    report = json.loads((out / "report.json").read_text())
    assert report["previous"]["version"] == first["version"]
    assert "previous" in (out / "report.md").read_text()

    assert main(["eval", str(out), data, "--out", str(tmp_path / "eval")]) == 0
    assert (tmp_path / "eval" / "report.json").exists()

    fleet = str(tmp_path / "fleet.yaml")
    assert main(["fleet", "add", str(out), "--fleet", fleet]) == 0
    assert main(["fleet", "add", str(out), "--fleet", fleet, "--name", "colour-b"]) == 0
    capsys.readouterr()
    assert main(["fleet", "list", "--fleet", fleet]) == 0
    assert capsys.readouterr().out.splitlines()[0].startswith("colour\t")
    assert main(["fleet", "remove", "colour", "--fleet", fleet]) == 0
    assert [e.name for e in read_fleet_config(fleet).functions] == ["colour-b"]
    assert main(["fleet", "remove", "nope", "--fleet", fleet]) == 2


def test_lifecycle_commands_answer_wrong_input_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Issue 16: a fleet file that does not parse or validate, a function it lacks, a
    registry nobody named, a dataset that is not one: exit 2 and one line, no traceback."""
    broken = tmp_path / "broken.yaml"
    broken.write_text("functions: [\n")
    invalid = tmp_path / "invalid.yaml"
    invalid.write_text("functions: [{name: shape}]\n")
    empty = str(tmp_path / "none.yaml")
    cases = [
        (["fleet", "rollback", "shape", "--fleet", str(broken)], "while parsing"),
        (["fleet", "rollback", "shape", "--fleet", str(invalid)], "does not validate"),
        (["fleet", "rollback", "shape", "--fleet", empty], "shape has no serving version"),
        (["fleet", "promote", "shape", "0" * 16, "--fleet", empty], "no registry"),
        (["fleet", "shadow", "shape", "off", "--fleet", empty], "no serving entry"),
        (["versions", "shape", "--fleet", empty], "no registry"),
        (
            [
                "train",
                str(tmp_path),
                "--type",
                "classify",
                "--name",
                "n",
                "--fleet",
                empty,
                "--registry",
                str(tmp_path / "reg"),
            ],
            "no label folders",
        ),
    ]
    for argv, message in cases:
        capsys.readouterr()
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err and len(err.splitlines()) == 1, err
