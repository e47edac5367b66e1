import pytest

from consumers.cli import build_parser, settings_from_args


def test_consume_flags_override_environment(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("TAGFLEET_BOOTSTRAP_SERVERS", "env:9092")
    monkeypatch.setenv("TAGFLEET_GROUP_ID", "from-env")
    args = build_parser().parse_args(["consume", "--group-id", "from-flag", "--batch-size", "4"])
    settings = settings_from_args(args)
    assert settings.bootstrap_servers == "env:9092"
    assert settings.group_id == "from-flag"
    assert settings.batch_size == 4


def test_every_subcommand_flag_reads_its_environment_variable(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("TAGFLEET_STORE", "sqlite:///from-env.db")
    monkeypatch.setenv("TAGFLEET_MISSING_ONLY", "true")
    args = build_parser().parse_args(["tag", "some/folder"])
    assert args.store == "sqlite:///from-env.db"
    assert args.missing_only is True


def test_help_lists_the_subcommands(capsys: pytest.CaptureFixture[str]):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--help"])
    out = capsys.readouterr().out
    for command in ("consume", "tag", "publish", "train", "eval", "fleet", "db", "demo"):
        assert command in out


def test_db_upgrade_creates_the_schema(tmp_path, capsys: pytest.CaptureFixture[str]):
    import sqlalchemy as sa

    from consumers.cli import main
    from consumers.store import current

    url = f"sqlite:///{tmp_path / 'tags.db'}"
    assert main(["db", "upgrade", "--store", url]) == 0
    assert current(url) is not None
    tables = set(sa.inspect(sa.create_engine(url)).get_table_names())
    assert {"assets", "function_results", "tags"} <= tables
    assert "revision head" in capsys.readouterr().out
