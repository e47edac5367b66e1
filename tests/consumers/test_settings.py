from pathlib import Path

import pytest

from consumers.settings import Settings

REPO = Path(__file__).resolve().parents[2]


def test_environment_then_flags(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("TAGFLEET_BATCH_SIZE", "7")
    monkeypatch.setenv("TAGFLEET_ALLOWED_BUCKETS", "photos, scans")
    assert Settings().batch_size == 7
    assert Settings().allowed_buckets == ("photos", "scans")
    assert Settings(batch_size=9).batch_size == 9


def test_invalid_values_are_rejected_with_the_field_name():
    with pytest.raises(ValueError, match="batch_size"):
        Settings(batch_size=0)


def test_sasl_password_reaches_kafka_but_not_repr():
    s = Settings(
        security_protocol="SASL_PLAINTEXT",
        sasl_mechanism="PLAIN",
        sasl_plain_username="u",
        sasl_plain_password="hunter2",
    )
    assert s.kafka_common()["sasl_plain_password"] == "hunter2"
    assert "hunter2" not in repr(s)


def test_ssl_settings_from_the_environment_reach_kafka(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("TAGFLEET_SECURITY_PROTOCOL", "SSL")
    monkeypatch.setenv("TAGFLEET_SSL_CAFILE", "/tls/ca.pem")
    monkeypatch.setenv("TAGFLEET_SSL_CERTFILE", "/tls/client-cert.pem")
    monkeypatch.setenv("TAGFLEET_SSL_KEYFILE", "/tls/client-key.pem")
    cfg = Settings(bootstrap_servers="b1:9095,b2:9095").kafka_common()
    assert cfg == {
        "bootstrap_servers": ["b1:9095", "b2:9095"],
        "security_protocol": "SSL",
        "ssl_cafile": "/tls/ca.pem",
        "ssl_certfile": "/tls/client-cert.pem",
        "ssl_keyfile": "/tls/client-key.pem",
    }
    # unset files are left to kafka-python's defaults (the system CA store, no client cert)
    for name in ("CAFILE", "CERTFILE", "KEYFILE"):
        monkeypatch.delenv(f"TAGFLEET_SSL_{name}")
    assert not {k for k in Settings().kafka_common() if k.startswith("ssl_")}


def test_secrets_are_hidden_and_read_from_files(tmp_path, monkeypatch) -> None:
    url = "postgresql+psycopg://u:s3cret@db/tags"
    (tmp_path / "store").write_text(url + "\n")
    (tmp_path / "sasl").write_text("hunter2")
    monkeypatch.setenv("TAGFLEET_STORE_FILE", str(tmp_path / "store"))
    monkeypatch.setenv("TAGFLEET_SASL_PLAIN_PASSWORD_FILE", str(tmp_path / "sasl"))
    settings = Settings(sasl_mechanism="PLAIN", sasl_plain_username="u")
    assert settings.store_url() == url
    assert settings.kafka_common()["sasl_plain_password"] == "hunter2"
    assert "s3cret" not in repr(settings) and "hunter2" not in repr(settings)
    monkeypatch.setenv("TAGFLEET_STORE", "sqlite:///env.db")
    assert Settings().store_url() == "sqlite:///env.db"  # the variable itself wins


def test_unreadable_secret_file_names_the_variable(monkeypatch) -> None:
    monkeypatch.setenv("TAGFLEET_STORE_FILE", "/nonexistent/store-url")
    with pytest.raises(ValueError, match="TAGFLEET_STORE_FILE"):
        Settings()


def test_secrets_have_no_flags_and_a_store_password_flag_is_refused(capsys) -> None:
    from consumers.cli import build_parser, main

    with pytest.raises(SystemExit):
        build_parser().parse_args(["consume", "--sasl-plain-password", "x"])
    capsys.readouterr()
    assert main(["consume", "--store", "postgresql+psycopg://u:pw@db/t", "--show-config"]) == 2
    err = capsys.readouterr().err
    assert "TAGFLEET_STORE_FILE" in err and "pw" not in err
    assert (
        main(["consume", "--store", "postgresql+psycopg://u@db/t?password=pw", "--show-config"])
        == 2
    )
    assert "TAGFLEET_STORE_FILE" in capsys.readouterr().err
    assert main(["consume", "--store", "postgresql+psycopg://u@db/t", "--show-config"]) == 0


def test_every_store_flag_refuses_a_password_and_falls_back_to_the_file(
    tmp_path, monkeypatch, capsys
):
    from consumers.cli import main

    for argv in (["db", "upgrade"], ["tag", str(tmp_path)]):
        assert main([*argv, "--store", "postgresql+psycopg://u:pw@db/t"]) == 2
        assert "TAGFLEET_STORE_FILE" in capsys.readouterr().err
    url = f"sqlite:///{tmp_path / 'from-file.db'}"
    (tmp_path / "store-url").write_text(url + "\n")
    monkeypatch.setenv("TAGFLEET_STORE_FILE", str(tmp_path / "store-url"))
    assert main(["db", "upgrade"]) == 0
    assert (tmp_path / "from-file.db").exists()  # not the default sqlite:///tags.db


def test_a_store_that_is_not_a_url_is_refused_with_what_to_give() -> None:
    with pytest.raises(ValueError, match="dialect"):
        Settings(store="tags.db")


def test_unknown_image_formats_and_bucket_names_are_refused() -> None:
    with pytest.raises(ValueError, match="JPG"):
        Settings(image_formats="JPEG,JPG")
    with pytest.raises(ValueError, match="Photos_Prod!"):
        Settings(allowed_buckets="photos,Photos_Prod!")
    assert Settings(image_formats="JPEG,TIFF").image_formats == ("JPEG", "TIFF")
