import json

import pytest

from consumers.cli import build_parser, main


def test_consume_flags_override_environment(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
):
    monkeypatch.setenv("TAGFLEET_BOOTSTRAP_SERVERS", "env:9092")
    monkeypatch.setenv("TAGFLEET_GROUP_ID", "from-env")
    assert main(["consume", "--group-id", "from-flag", "--batch-size", "4", "--show-config"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["TAGFLEET_BOOTSTRAP_SERVERS"] == "env:9092"
    assert shown["TAGFLEET_GROUP_ID"] == "from-flag"
    assert shown["TAGFLEET_BATCH_SIZE"] == 4


def test_tag_reads_its_own_namespace_and_the_shared_store(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
):
    monkeypatch.setenv("TAGFLEET_STORE", "sqlite:///from-env.db")
    monkeypatch.setenv("TAGFLEET_TAG_MISSING_ONLY", "true")
    monkeypatch.setenv("TAGFLEET_BATCH_SIZE", "7")  # the service's, not tag's
    assert main(["tag", "some/folder", "--show-config"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["TAGFLEET_STORE"] == "**********"  # set, and never printed
    assert shown["TAGFLEET_TAG_MISSING_ONLY"] is True
    assert shown["TAGFLEET_TAG_BATCH_SIZE"] == 32
    assert "TAGFLEET_BATCH_SIZE" not in shown


def test_help_lists_the_subcommands(capsys: pytest.CaptureFixture[str]):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--help"])
    out = capsys.readouterr().out
    for command in ("consume", "tag", "publish", "train", "eval", "fleet", "db", "demo"):
        assert command in out


def test_db_upgrade_creates_the_schema(tmp_path, capsys: pytest.CaptureFixture[str]):
    import sqlalchemy as sa

    from consumers.store import current

    url = f"sqlite:///{tmp_path / 'tags.db'}"
    assert main(["db", "upgrade", "--store", url]) == 0
    assert current(url) is not None
    tables = set(sa.inspect(sa.create_engine(url)).get_table_names())
    assert {"assets", "function_results", "tags"} <= tables
    assert "revision head" in capsys.readouterr().out
