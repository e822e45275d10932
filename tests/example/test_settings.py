"""Settings: upstream names and meanings, aliases, config.yml vs environment, clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from example_connector.__main__ import main
from example_connector.config_docs import settings_info
from example_connector.settings import SettingsError, load_settings

from .conftest import REPO

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
  csv_url: '/srv/feeds/urlhaus.csv'
  batch_size: 250
  tlp_level: 'TLP:AMBER'
  import_offline: false
"""

#: The environment block of the upstream URLhaus connector's docker-compose.yml.
UPSTREAM_ENVIRONMENT = {
    "OPENCTI_URL": "http://opencti:8080",
    "OPENCTI_TOKEN": TOKEN,
    "CONNECTOR_ID": CONNECTOR_ID,
    "CONNECTOR_TYPE": "EXTERNAL_IMPORT",
    "CONNECTOR_NAME": "Abuse.ch URLhaus",
    "CONNECTOR_SCOPE": "urlhaus",
    "CONNECTOR_CONFIDENCE_LEVEL": "40",
    "CONNECTOR_UPDATE_EXISTING_DATA": "false",
    "CONNECTOR_LOG_LEVEL": "error",
    "URLHAUS_CSV_URL": "https://urlhaus.abuse.ch/downloads/csv_recent/",
    "URLHAUS_DEFAULT_X_OPENCTI_SCORE": "65",
    "URLHAUS_IMPORT_OFFLINE": "true",
    "URLHAUS_THREATS_FROM_LABELS": "true",
    "URLHAUS_INTERVAL": "3",
}


def test_defaults_are_upstreams(clean_env: Path) -> None:
    settings = load_settings()
    assert settings.urlhaus.csv_url == "https://urlhaus.abuse.ch/downloads/csv_recent/"
    assert settings.urlhaus.feed_url == settings.urlhaus.csv_url
    assert settings.urlhaus.default_x_opencti_score == 80
    assert settings.urlhaus.import_offline is True  # upstream: offline-status rows too
    assert settings.urlhaus.threats_from_labels is True
    assert settings.urlhaus.batch_size == 500
    assert settings.urlhaus.tlp_level == "clear"
    assert settings.output_directory is None  # OpenCTI unless file output is asked for
    assert settings.connector.duration_seconds == 3600
    assert settings.connector.type == "EXTERNAL_IMPORT"
    assert settings.notices == []


def test_upstream_environment_block_keeps_its_meaning(clean_env: Path) -> None:
    settings = load_settings(environ=UPSTREAM_ENVIRONMENT)
    settings.require_online()
    assert settings.output_directory is None  # URLHAUS_IMPORT_OFFLINE does not mean files
    assert settings.urlhaus.import_offline is True
    assert settings.urlhaus.threats_from_labels is True
    assert settings.urlhaus.default_x_opencti_score == 65
    assert settings.connector.name == "Abuse.ch URLhaus"
    assert settings.connector.log_level == "error"
    # the deprecated interval (hours) still sets the schedule, with a warning
    assert settings.connector.duration_period == "PT3H"
    (notice,) = settings.notices
    assert "URLHAUS_INTERVAL" in notice and "deprecated" in notice
    assert "CONNECTOR_DURATION_PERIOD" in notice


def test_interval_loses_to_the_duration_period(clean_env: Path) -> None:
    environ = {"URLHAUS_INTERVAL": "3", "CONNECTOR_DURATION_PERIOD": "PT15M"}
    settings = load_settings(environ=environ)
    assert settings.connector.duration_seconds == 900
    (notice,) = settings.notices
    assert "ignored" in notice and "CONNECTOR_DURATION_PERIOD" in notice


def test_earlier_names_are_aliases(clean_env: Path) -> None:
    settings = load_settings(
        environ={
            "URLHAUS_FEED_URL": "/srv/a.csv",
            "URLHAUS_SCORE": "42",
            "URLHAUS_OFFLINE_DIRECTORY": "/data/out",
        }
    )
    assert settings.urlhaus.csv_url == "/srv/a.csv"
    assert settings.urlhaus.default_x_opencti_score == 42
    assert settings.output_directory == "/data/out"
    both = load_settings(environ={"URLHAUS_FEED_URL": "/old.csv", "URLHAUS_CSV_URL": "/new.csv"})
    assert both.urlhaus.csv_url == "/new.csv"  # the canonical name wins in one place


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
    assert settings.urlhaus.csv_url == "/srv/feeds/urlhaus.csv"
    assert settings.urlhaus.batch_size == 250
    assert settings.urlhaus.tlp_level == "amber"
    assert settings.urlhaus.import_offline is False
    settings.require_online()
    config = settings.pycti_config()
    assert config["opencti"]["token"] == TOKEN
    assert config["connector"]["type"] == "EXTERNAL_IMPORT"


def test_environment_overrides_file_even_through_an_alias(
    clean_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = clean_env / "elsewhere.yml"
    path.write_text(YAML + "  default_x_opencti_score: 30\n", "utf-8")
    monkeypatch.setenv("URLHAUS_BATCH_SIZE", "7")
    monkeypatch.setenv("URLHAUS_IMPORT_OFFLINE", "true")
    monkeypatch.setenv("CONNECTOR_NAME", "from env")
    monkeypatch.setenv("URLHAUS_SCORE", "90")  # alias in the environment, canonical in the file
    monkeypatch.setenv("URLHAUS_CSV_URL", "")  # empty counts as unset
    settings = load_settings(path)
    assert settings.urlhaus.batch_size == 7
    assert settings.urlhaus.import_offline is True
    assert settings.connector.name == "from env"
    assert settings.urlhaus.default_x_opencti_score == 90
    assert settings.urlhaus.csv_url == "/srv/feeds/urlhaus.csv"  # file value kept
    assert settings.urlhaus.tlp_level == "amber"  # file value kept


def test_invalid_values_give_one_clear_error_each(
    clean_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (clean_env / "config.yml").write_text(YAML, "utf-8")
    for name, value in {
        "URLHAUS_BATCH_SIZE": "0",
        "URLHAUS_TLP_LEVEL": "purple",
        "CONNECTOR_DURATION_PERIOD": "1h",
        "CONNECTOR_ID": "not-a-uuid",
        "OPENCTI_URL": "localhost:8080",
        "URLHAUS_IMPORT_OFFLINE": "maybe",
        "URLHAUS_SCORE": "101",
        "URLHAUS_INTERVAL": "0",
    }.items():
        monkeypatch.setenv(name, value)
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
        "URLHAUS_DEFAULT_X_OPENCTI_SCORE (urlhaus.default_x_opencti_score, or its alias "
        "URLHAUS_SCORE)": "less than or equal to 100",
        "URLHAUS_INTERVAL (urlhaus.interval)": "greater than or equal to 1",
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
    monkeypatch.setenv("URLHAUS_CSV_URL", "https://u:feed-pass-secret@h.test/k/feed.csv")
    settings = load_settings()
    for text in (repr(settings), str(settings.model_dump()), settings.model_dump_json()):
        assert TOKEN not in text and "feed-pass-secret" not in text


def test_online_mode_names_what_is_missing(clean_env: Path) -> None:
    with pytest.raises(SettingsError) as caught:
        load_settings().require_online()
    message = str(caught.value)
    for name in ("OPENCTI_URL (opencti.url)", "OPENCTI_TOKEN", "CONNECTOR_ID (connector.id)"):
        assert name in message
    assert "--offline" in message and "CONNECTOR_BATCHING_OUTPUT_DIRECTORY" in message


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
    clean_env: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # the earlier meaning of URLHAUS_IMPORT_OFFLINE (files, no platform) is gone: an
    # operator relying on it is told what is missing instead of getting files silently
    monkeypatch.setenv("URLHAUS_IMPORT_OFFLINE", "true")
    assert main([]) == 2
    err = capsys.readouterr().err
    assert "required to run against OpenCTI" in err
    assert "CONNECTOR_BATCHING_OUTPUT_DIRECTORY" in err


def test_every_setting_is_in_the_compose_file_and_the_docs() -> None:
    compose = (REPO / "docker-compose.yml").read_text("utf-8")
    docs = (REPO / "docs" / "example_connector.md").read_text("utf-8")
    for setting in settings_info():
        assert setting.env in compose, setting.env
        assert f"`{setting.env}`" in docs and f"`{setting.yaml_key}`" in docs, setting.env
