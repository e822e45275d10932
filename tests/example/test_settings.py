"""Settings: config.yml, environment, environment over file, clear errors, no secret leaks."""

from __future__ import annotations

from pathlib import Path

import pytest

from example_connector.__main__ import main
from example_connector.settings import SETTINGS, SettingsError, load_settings

TOKEN = "tok-3f9c1e-very-secret"
CONNECTOR_ID = "5a0c7d2e-9a4b-4f7e-8c1d-2b3a4c5d6e7f"

YAML = f"""
opencti:
  url: 'http://opencti.example.com:8080/'
  token: '{TOKEN}'
connector:
  id: '{CONNECTOR_ID}'
  name: 'URLhaus from file'
  log_level: 'debug'
  duration_period: 'P1D'
urlhaus:
  feed_url: '/srv/feeds/urlhaus.csv'
  batch_size: 250
  tlp_level: 'TLP:AMBER'
  import_offline: true
"""


def test_defaults_without_file_or_environment(clean_env: Path) -> None:
    settings = load_settings()
    assert settings.urlhaus.feed_url == "https://urlhaus.abuse.ch/downloads/csv_recent/"
    assert settings.urlhaus.batch_size == 500
    assert settings.urlhaus.tlp_level == "clear"
    assert settings.urlhaus.import_offline is False
    assert settings.connector.duration_period == "PT1H"
    assert settings.connector.duration_seconds == 3600
    assert settings.connector.type == "EXTERNAL_IMPORT"


def test_file_only(clean_env: Path) -> None:
    (clean_env / "config.yml").write_text(YAML, "utf-8")
    settings = load_settings()  # ./config.yml is found
    assert settings.opencti.url == "http://opencti.example.com:8080"
    assert settings.opencti.token is not None
    assert settings.opencti.token.get_secret_value() == TOKEN
    assert settings.connector.id == CONNECTOR_ID
    assert settings.connector.name == "URLhaus from file"
    assert settings.connector.log_level == "debug"
    assert settings.connector.duration_seconds == 86400
    assert settings.urlhaus.feed_url == "/srv/feeds/urlhaus.csv"
    assert settings.urlhaus.batch_size == 250
    assert settings.urlhaus.tlp_level == "amber"
    assert settings.urlhaus.import_offline is True
    settings.require_online()
    config = settings.pycti_config()
    assert config["opencti"]["token"] == TOKEN
    assert config["connector"]["type"] == "EXTERNAL_IMPORT"


def test_environment_only(clean_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENCTI_URL", "https://cti.example.org")
    monkeypatch.setenv("OPENCTI_TOKEN", TOKEN)
    monkeypatch.setenv("CONNECTOR_ID", CONNECTOR_ID)
    monkeypatch.setenv("CONNECTOR_DURATION_PERIOD", "PT15M")
    monkeypatch.setenv("URLHAUS_BATCH_SIZE", "42")
    monkeypatch.setenv("URLHAUS_TLP_LEVEL", "red")
    monkeypatch.setenv("URLHAUS_IMPORT_OFFLINE", "yes")
    monkeypatch.setenv("URLHAUS_SCORE", "55")
    settings = load_settings()
    assert settings.opencti.url == "https://cti.example.org"
    assert settings.connector.duration_seconds == 900
    assert settings.urlhaus.batch_size == 42
    assert settings.urlhaus.tlp_level == "red"
    assert settings.urlhaus.import_offline is True
    assert settings.urlhaus.score == 55
    settings.require_online()


def test_environment_overrides_file(clean_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = clean_env / "elsewhere.yml"
    path.write_text(YAML, "utf-8")
    monkeypatch.setenv("URLHAUS_BATCH_SIZE", "7")
    monkeypatch.setenv("URLHAUS_IMPORT_OFFLINE", "false")
    monkeypatch.setenv("CONNECTOR_NAME", "from env")
    monkeypatch.setenv("URLHAUS_FEED_URL", "")  # empty counts as unset, like pycti
    settings = load_settings(path)
    assert settings.urlhaus.batch_size == 7
    assert settings.urlhaus.import_offline is False
    assert settings.connector.name == "from env"
    assert settings.urlhaus.feed_url == "/srv/feeds/urlhaus.csv"  # file value kept
    assert settings.urlhaus.tlp_level == "amber"  # file value kept


def test_invalid_values_give_one_clear_error_each(
    clean_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (clean_env / "config.yml").write_text(YAML, "utf-8")
    monkeypatch.setenv("URLHAUS_BATCH_SIZE", "0")
    monkeypatch.setenv("URLHAUS_TLP_LEVEL", "purple")
    monkeypatch.setenv("CONNECTOR_DURATION_PERIOD", "1h")
    monkeypatch.setenv("CONNECTOR_ID", "not-a-uuid")
    monkeypatch.setenv("OPENCTI_URL", "localhost:8080")
    monkeypatch.setenv("URLHAUS_IMPORT_OFFLINE", "maybe")
    monkeypatch.setenv("URLHAUS_SCORE", "101")
    with pytest.raises(SettingsError) as caught:
        load_settings()
    message = str(caught.value)
    expected = {
        "URLHAUS_BATCH_SIZE (urlhaus.batch_size)": "greater than or equal to 1",
        "URLHAUS_TLP_LEVEL (urlhaus.tlp_level)": "must be one of clear",
        "CONNECTOR_DURATION_PERIOD (connector.duration_period)": "ISO 8601 duration",
        "CONNECTOR_ID (connector.id)": "UUID",
        "OPENCTI_URL (opencti.url)": "http:// or https://",
        "URLHAUS_IMPORT_OFFLINE (urlhaus.import_offline)": "boolean",
        "URLHAUS_SCORE (urlhaus.score)": "less than or equal to 100",
    }
    lines = message.splitlines()
    for name, reason in expected.items():
        matching = [line for line in lines if name in line]
        assert len(matching) == 1, (name, message)
        assert reason in matching[0], (name, matching[0])
    assert "config.yml" in message
    assert TOKEN not in message


def test_a_bad_token_value_is_never_echoed(clean_env: Path) -> None:
    (clean_env / "config.yml").write_text("opencti:\n  token: ['tok-in-a-list-secret']\n", "utf-8")
    with pytest.raises(SettingsError) as caught:
        load_settings()
    assert "OPENCTI_TOKEN (opencti.token)" in str(caught.value)
    assert "tok-in-a-list-secret" not in str(caught.value)


def test_secret_is_hidden_in_repr_and_dump(
    clean_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENCTI_TOKEN", TOKEN)
    settings = load_settings()
    assert TOKEN not in repr(settings)
    assert TOKEN not in str(settings.model_dump())
    assert TOKEN not in settings.model_dump_json()


def test_online_mode_names_what_is_missing(clean_env: Path) -> None:
    with pytest.raises(SettingsError) as caught:
        load_settings().require_online()
    message = str(caught.value)
    for name in ("OPENCTI_URL (opencti.url)", "OPENCTI_TOKEN", "CONNECTOR_ID (connector.id)"):
        assert name in message
    assert "--offline" in message


def test_broken_yaml_and_missing_file(clean_env: Path) -> None:
    (clean_env / "config.yml").write_text("opencti:\n  url: [unclosed\n", "utf-8")
    with pytest.raises(SettingsError, match=r"not valid YAML \(line \d+\)"):
        load_settings()
    with pytest.raises(SettingsError, match="does not exist"):
        load_settings(clean_env / "missing.yml")
    (clean_env / "config.yml").write_text("urlhaus: 5\n", "utf-8")
    with pytest.raises(SettingsError, match="section 'urlhaus' must be a mapping"):
        load_settings()


def test_cli_reports_invalid_settings_and_exits_2(
    clean_env: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("URLHAUS_BATCH_SIZE", "lots")
    monkeypatch.setenv("OPENCTI_TOKEN", TOKEN)
    assert main(["--offline", str(clean_env / "out")]) == 2
    err = capsys.readouterr().err
    assert "URLHAUS_BATCH_SIZE (urlhaus.batch_size)" in err and "integer" in err
    assert TOKEN not in err


def test_cli_online_without_platform_settings_exits_2(
    clean_env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main([]) == 2
    assert "required to run against OpenCTI" in capsys.readouterr().err


def test_every_setting_is_documented_in_the_sample_and_compose() -> None:
    repo = Path(__file__).resolve().parents[2]
    sample = (repo / "config.yml.sample").read_text("utf-8")
    compose = (repo / "docker-compose.yml").read_text("utf-8")
    docs = (repo / "docs" / "example_connector.md").read_text("utf-8")
    for doc in SETTINGS:
        assert f"{doc.key}:" in sample, doc.yaml_key
        assert doc.env in compose, doc.env
        assert doc.env in docs and doc.yaml_key in docs, doc.env
