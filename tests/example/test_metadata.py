"""Connector metadata: the config schema is generated, fresh and valid; the manifest is true."""

from __future__ import annotations

import json
import re
import tomllib
from typing import Any

import pytest
from jsonschema import Draft202012Validator

from example_connector import config_docs
from example_connector.config_docs import config_schema, settings_info

from .conftest import REPO

METADATA = REPO / "example_connector" / "__metadata__"
MANIFEST_KEYS = {
    "title",
    "slug",
    "description",
    "short_description",
    "logo",
    "use_cases",
    "solution_categories",
    "license_type",
    "contact",
    "verified",
    "last_verified_date",
    "playbook_supported",
    "max_confidence_level",
    "support_version",
    "subscription_link",
    "source_code",
    "manager_supported",
    "container_version",
    "container_image",
    "container_type",
}
#: The upstream URLhaus connector's own settings: each keeps its name here.
UPSTREAM_NAMES = (
    "URLHAUS_CSV_URL",
    "URLHAUS_DEFAULT_X_OPENCTI_SCORE",
    "URLHAUS_IMPORT_OFFLINE",
    "URLHAUS_INTERVAL",
    "URLHAUS_THREATS_FROM_LABELS",
)


def _schema() -> dict[str, Any]:
    data: dict[str, Any] = json.loads((METADATA / "connector_config_schema.json").read_text())
    return data


def test_generated_files_are_fresh(capsys: pytest.CaptureFixture[str]) -> None:
    """The schema, config.yml.sample and the docs table are what the model gives now."""
    code = config_docs.main(["--check", str(REPO)])
    assert code == 0, capsys.readouterr().err + " — run `make schema`"


def test_schema_is_valid_draft_2020_12_with_one_property_per_variable() -> None:
    schema = _schema()
    Draft202012Validator.check_schema(schema)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["required"] == ["OPENCTI_URL", "OPENCTI_TOKEN"]
    expected = [name for s in settings_info() for name in (s.env, *s.aliases)]
    assert list(schema["properties"]) == expected
    for name in UPSTREAM_NAMES:
        assert name in schema["properties"], name
    assert schema["properties"]["URLHAUS_INTERVAL"]["deprecated"] is True
    assert schema["properties"]["URLHAUS_IMPORT_OFFLINE"]["default"] is True
    assert schema["properties"]["URLHAUS_DEFAULT_X_OPENCTI_SCORE"]["maximum"] == 100
    assert schema["properties"]["CONNECTOR_TYPE"]["const"] == "EXTERNAL_IMPORT"
    for name, prop in schema["properties"].items():
        assert prop.get("description"), name
        assert "title" not in prop and "aliases" not in prop, name
    assert schema == config_schema()


def test_schema_judges_configurations() -> None:
    validator = Draft202012Validator(_schema(), format_checker=Draft202012Validator.FORMAT_CHECKER)
    good = {
        "OPENCTI_URL": "http://opencti:8080",
        "OPENCTI_TOKEN": "ChangeMe",
        "URLHAUS_CSV_URL": "https://urlhaus.abuse.ch/downloads/csv_recent/",
        "URLHAUS_DEFAULT_X_OPENCTI_SCORE": 65,
        "URLHAUS_IMPORT_OFFLINE": True,
        "URLHAUS_THREATS_FROM_LABELS": False,
        "URLHAUS_INTERVAL": 3,
        "CONNECTOR_LOG_LEVEL": "error",
    }
    assert list(validator.iter_errors(good)) == []
    assert list(validator.iter_errors({**good, "URLHAUS_DEFAULT_X_OPENCTI_SCORE": 101}))
    assert list(validator.iter_errors({**good, "CONNECTOR_LOG_LEVEL": "loud"}))
    assert list(validator.iter_errors({**good, "CONNECTOR_TYPE": "STREAM"}))
    missing = {k: v for k, v in good.items() if k != "OPENCTI_TOKEN"}
    assert [e.message for e in validator.iter_errors(missing)] == [
        "'OPENCTI_TOKEN' is a required property"
    ]


def test_manifest_has_the_connectors_keys_and_true_values() -> None:
    manifest = json.loads((METADATA / "connector_manifest.json").read_text())
    assert set(manifest) == MANIFEST_KEYS
    assert manifest["container_type"] == "EXTERNAL_IMPORT"
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert manifest["container_version"] == project["version"]
    pycti = next(d for d in project["dependencies"] if d.startswith("pycti"))
    lowest = re.search(r">=\s*([\d.]+)", pycti)
    assert lowest is not None and manifest["support_version"] == f">= {lowest.group(1)}"
    compose = (REPO / "docker-compose.yml").read_text()
    assert f"image: {manifest['container_image']}:{manifest['container_version']}" in compose
    assert manifest["verified"] is False and manifest["manager_supported"] is False
    for key in ("title", "slug", "description", "short_description"):
        assert isinstance(manifest[key], str) and manifest[key], key
    assert re.fullmatch(r"[a-z0-9-]+", manifest["slug"])
    assert all(isinstance(v, str) for v in manifest["use_cases"] + manifest["solution_categories"])
