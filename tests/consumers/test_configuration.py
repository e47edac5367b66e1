"""One configuration source: every variable on the reference page is read by the commands it
names and by no other, a malformed value is one line and exit 2, ``--help`` shows the models'
defaults. Runs every command through the real entry point with ``--show-config``."""

from __future__ import annotations

import argparse
import functools
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import SecretStr

from consumers.cli import build_parser, main, store_flag_problem
from consumers.configuration import commands, reference_markdown, variables
from models.options import (
    base_type,
    choices,
    env_name,
    flag_name,
    has_flag,
    run,
    show_default,
)

REPO = Path(__file__).resolve().parents[2]
PAGE = REPO / "docs" / "configuration.md"
# What no validator can refuse: a name, a path, a URL-less text.
MALFORMED = "@not-valid@"
POSITIONALS = {
    "tag": ["some/folder"],
    "publish": ["s3://bucket/prefix"],
    "train": ["some/dataset"],
    "eval": ["some/artifact", "some/dataset"],
    "fleet add": ["some/artifact"],
    "fleet remove": ["some-function"],
    "create": ["some-function"],
    "weights fetch": ["ViT-B-32", "openai"],
    "fleet promote": ["some-function", "0123456789abcdef"],
    "fleet rollback": ["some-function"],
    "fleet shadow": ["some-function", "off"],
    "versions": ["some-function"],
    "diff": ["some-function"],
    "retag": ["some-function"],
    "taxonomy set": ["some/taxonomy.yaml"],
    "api-key revoke": ["0123456789ab"],
    "dataset export": ["some-function"],
    "webhook add": ["http://127.0.0.1/hook"],
    "webhook remove": ["0123abcd"],
    "webhook rotate": ["0123abcd"],
    "webhook redrive": ["0123abcd"],
    "apply": ["some/artifact"],
    "similar": ["s3://bucket/key.jpg"],
    "search": ["a red car on a street"],
    "reset": ["some-function"],
}
# train's required options, given by their variables so that each can be replaced in turn
REQUIRED = {
    "TAGFLEET_TRAIN_TYPE": "classify",
    "TAGFLEET_TRAIN_NAME": "n",
    "TAGFLEET_TRAIN_OUT": "o",
    "TAGFLEET_DLQ_REDRIVE_REASON": "object_unavailable",
    "TAGFLEET_CREATE_TYPE": "classify",
    "TAGFLEET_CREATE_LABELS": "cat,dog",
    "TAGFLEET_CREATE_OUT": "o",
    "TAGFLEET_WEIGHTS_FETCH_TO": "o",
    "TAGFLEET_DATASET_OUT": "o",
}


def documented() -> dict[str, set[str]]:
    rows = re.findall(r"^\| `(TAGFLEET_[A-Z0-9_]+)` \| ([^|]+) \|", PAGE.read_text(), re.M)
    assert len(rows) > 60, "the reference page lost its tables"
    return {name: {c.strip() for c in readers.split(",")} for name, readers in rows}


@functools.cache
def parser() -> argparse.ArgumentParser:
    """The entry point's parser, built once: ``main`` is ``run(build_parser(), ...)``."""
    return build_parser()


def show(command: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    argv = [*command.split(), *POSITIONALS.get(command, []), "--show-config"]
    code = run(parser(), argv, refuse=store_flag_problem)
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    import os

    for name in list(os.environ):
        if name.startswith("TAGFLEET_"):
            monkeypatch.delenv(name)
    for name, value in REQUIRED.items():
        monkeypatch.setenv(name, value)
    return monkeypatch


def test_reference_page_is_up_to_date() -> None:
    assert PAGE.read_text() == reference_markdown(), (
        "regenerate: python -m consumers.configuration > docs/configuration.md"
    )


def test_every_variable_is_read_by_the_commands_it_names_and_by_no_other(
    clean_env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    page = documented()
    names = [command for command, _ in commands()]
    assert {"consume", "tag", "publish", "db upgrade", "dlq redrive", "train", "eval"} <= set(names)
    assert set(page) == set(variables())
    baseline = {}
    for command in names:
        code, out, err = show(command, capsys)
        assert code == 0, (command, err)
        baseline[command] = json.loads(out)
    accepted_any_text = set()
    for variable, readers in page.items():
        assert readers <= set(names), (variable, readers)
        clean_env.setenv(variable, MALFORMED)
        for command in names:
            code, out, err = show(command, capsys)
            if command not in readers:
                assert code == 0 and json.loads(out) == baseline[command], (variable, command)
                continue
            if code == 2:
                lines = err.strip().splitlines()
                assert len(lines) == 1 and variable in lines[0], (variable, command, err)
                assert lines[0].startswith(f"tagfleet {command}: error: ")
            else:
                assert code == 0 and json.loads(out) != baseline[command], (variable, command)
                accepted_any_text.add(variable)
        if variable in REQUIRED:
            clean_env.setenv(variable, REQUIRED[variable])
        else:
            clean_env.delenv(variable)
    # only free-text settings may take any value; every other type refused the bad one
    free_text = {
        variable
        for variable, (owner, name, _) in variables().items()
        if not variable.endswith("_FILE")
        and base_type(owner.model_fields[name].annotation) in (str, SecretStr, Path)
        and name not in ("store", "device")  # a URL, a torch device
        and not choices(owner.model_fields[name].annotation)
    }
    assert accepted_any_text == free_text


def test_a_malformed_variable_is_one_line_and_exit_2_from_the_installed_command() -> None:
    env = {"PATH": "/usr/bin:/bin", "TAGFLEET_TAG_BATCH_SIZE": "lots"}
    done = subprocess.run(
        [sys.executable, "-m", "consumers.cli", "tag", "some/folder"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "tagfleet tag: error: TAGFLEET_TAG_BATCH_SIZE='lots': Input should be a valid integer,"
        " unable to parse string as an integer"
    ]


def test_a_flag_wins_over_its_variable_and_a_bad_flag_names_the_flag(
    clean_env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    clean_env.setenv("TAGFLEET_GROUP_ID", "from-env")
    clean_env.setenv("TAGFLEET_BOOTSTRAP_SERVERS", "env:9092")
    assert main(["consume", "--group-id", "from-flag", "--batch-size", "4", "--show-config"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["TAGFLEET_GROUP_ID"] == "from-flag"
    assert shown["TAGFLEET_BATCH_SIZE"] == 4
    assert shown["TAGFLEET_BOOTSTRAP_SERVERS"] == "env:9092"
    assert main(["consume", "--batch-size", "0", "--show-config"]) == 2
    assert capsys.readouterr().err.strip() == (
        "tagfleet consume: error: --batch-size='0': Input should be greater than or equal to 1"
    )


def test_help_of_every_command_shows_each_default_and_variable_from_the_models(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "10000")  # no wrapping inside a default (asset-\ntags)
    for command, groups in commands():
        with pytest.raises(SystemExit):
            main([*command.split(), "--help"])
        text = " ".join(capsys.readouterr().out.split())
        for group in groups:
            for name, field in group.model_fields.items():
                if not has_flag(field):
                    continue
                assert flag_name(name) in text, (command, name)
                default = "required" if field.is_required() else f"default: {show_default(field)}"
                assert f"({default}; env {env_name(group, name)})" in text, (command, name)
                assert field.description and field.description.split()[0] in text, (command, name)


def test_no_code_reads_an_undocumented_tagfleet_variable() -> None:
    """Library code reads no ``TAGFLEET_*`` variable: the settings models do, at the entry
    point. The exceptions: the fault-injection hook of the test suite, the secret files'
    source, and the local stack's own variables (``infra/``), which the demo passes on."""
    lookup = re.compile(r"""environ(?:\.get\(|\[)\s*f?["'](TAGFLEET_[A-Z0-9_{}.()]+)["']""")
    found = set()
    for package in ("consumers", "models"):
        for source in (REPO / package).rglob("*.py"):
            found |= set(lookup.findall(source.read_text()))
    stack = set()
    for script in (REPO / "infra").glob("*.sh"):
        stack |= set(re.findall(r"TAGFLEET_[A-Z0-9_]+", script.read_text()))
    allowed = {"TAGFLEET_FAILPOINTS", "TAGFLEET_{name.upper()}_FILE"} | stack
    assert found - allowed == set()


def test_a_variable_another_command_reads_is_named_with_this_commands_own(
    clean_env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    clean_env.setenv("TAGFLEET_MISSING_ONLY", "true")  # tag's option before it had its namespace
    clean_env.setenv("TAGFLEET_BATCH_SIZE", "3")  # the service's
    code, out, err = show("tag", capsys)
    assert code == 0 and json.loads(out)["TAGFLEET_TAG_MISSING_ONLY"] is False
    assert err.strip().splitlines() == [
        "tagfleet tag: warning: TAGFLEET_MISSING_ONLY is not read by this command; its option"
        " is TAGFLEET_TAG_MISSING_ONLY",
        "tagfleet tag: warning: TAGFLEET_BATCH_SIZE is not read by this command; its option is"
        " TAGFLEET_TAG_BATCH_SIZE",
    ]
    code, _, err = show("consume", capsys)  # the service reads it: nothing to say
    assert code == 0 and "TAGFLEET_BATCH_SIZE" not in err
