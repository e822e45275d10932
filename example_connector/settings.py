"""Connector settings: ``config.yml`` plus environment variables, read by pydantic-settings.

The names and meanings are the upstream URLhaus connector's (``URLHAUS_CSV_URL``,
``URLHAUS_IMPORT_OFFLINE``, ``URLHAUS_DEFAULT_X_OPENCTI_SCORE``, …).  Each
setting is a field of a section model: its environment variable is
``SECTION_FIELD`` upper-cased, its YAML key ``section: field:``.  The
environment overrides the file; an empty value counts as unset.  Earlier
names of this connector stay as aliases (``aliases`` in a field's schema
extra); the canonical name wins when both are set in the same place.

A field's ``description`` is its documentation: ``config.yml.sample``, the
JSON schema in ``__metadata__/`` and the docs' table are generated from the
model (:mod:`example_connector.config_docs`).  Errors name the variable, the
YAML key and what is expected; the token is a ``SecretStr`` and URLs are shown
redacted (:func:`~example_connector.urls.redact_url`).
"""

from __future__ import annotations

from typing import Any

from pydantic import Field, PrivateAttr, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from example_connector.sections import (
    DEFAULT_FEED_URL,
    ConnectorSettings,
    OpenCTISettings,
    UrlhausSettings,
    parse_duration,
)

__all__ = [
    "DEFAULT_FEED_URL",
    "ConnectorSettings",
    "OpenCTISettings",
    "Settings",
    "SettingsError",
    "UrlhausSettings",
    "load_settings",
    "parse_duration",
]


class SettingsError(ValueError):
    """Invalid or missing configuration; the message lists every problem."""


class Settings(BaseSettings):
    """All settings of the example connector (sources: :mod:`example_connector.sources`)."""

    model_config = SettingsConfigDict(
        env_nested_delimiter="_",
        env_nested_max_split=1,
        env_ignore_empty=True,
        case_sensitive=False,
        extra="ignore",
        frozen=True,
    )

    opencti: OpenCTISettings = Field(default_factory=OpenCTISettings)
    connector: ConnectorSettings = Field(default_factory=ConnectorSettings)
    urlhaus: UrlhausSettings = Field(default_factory=UrlhausSettings)

    _notices: list[str] = PrivateAttr(default_factory=list)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Environment first, then the YAML file (see :mod:`example_connector.sources`)."""
        from example_connector.sources import configured_sources

        return configured_sources(settings_cls)

    @model_validator(mode="after")
    def _migrate_interval(self) -> Settings:
        hours = self.urlhaus.interval
        if hours is None:
            return self
        if "duration_period" in self.connector.model_fields_set:
            self._notices.append(
                "URLHAUS_INTERVAL (urlhaus.interval) is deprecated and ignored: "
                "CONNECTOR_DURATION_PERIOD is set too and wins"
            )
            return self
        period = f"PT{hours}H"
        connector = self.connector.model_copy(update={"duration_period": period})
        object.__setattr__(self, "connector", connector)
        self._notices.append(
            f"URLHAUS_INTERVAL (urlhaus.interval) is deprecated: running every {hours} hours "
            f"(CONNECTOR_DURATION_PERIOD={period}); set CONNECTOR_DURATION_PERIOD instead"
        )
        return self

    @property
    def notices(self) -> list[str]:
        """Warnings about the configuration (deprecated settings), for the log."""
        return list(self._notices)

    @property
    def output_directory(self) -> str | None:
        """Where bundle files go instead of OpenCTI, when configured."""
        return self.connector.batching_output_directory

    def require_online(self) -> None:
        """Raise :class:`SettingsError` unless everything OpenCTI needs is set."""
        missing = [
            name
            for name, value in (
                ("OPENCTI_URL (opencti.url)", self.opencti.url),
                ("OPENCTI_TOKEN (opencti.token)", self.opencti.token),
                ("CONNECTOR_ID (connector.id)", self.connector.id),
            )
            if not value
        ]
        if missing:
            lines = [f"  {name}: required to run against OpenCTI" for name in missing]
            raise SettingsError(
                "invalid connector configuration:\n"
                + "\n".join(lines)
                + "\n(or run without OpenCTI: --offline DIR, or "
                "CONNECTOR_BATCHING_OUTPUT_DIRECTORY=DIR)"
            )

    def pycti_config(self) -> dict[str, Any]:
        """The configuration dict ``OpenCTIConnectorHelper`` expects."""
        token = self.opencti.token.get_secret_value() if self.opencti.token else None
        return {
            "opencti": {"url": self.opencti.url, "token": token},
            "connector": {
                "id": self.connector.id,
                "type": self.connector.type,
                "name": self.connector.name,
                "scope": self.connector.scope,
                "log_level": self.connector.log_level,
                "duration_period": self.connector.duration_period,
            },
        }


def load_settings(
    config_file: str | Any | None = None,
    environ: Any | None = None,
) -> Settings:
    """Settings from ``config_file`` (default: ``./config.yml`` when present) and
    ``environ`` (default: ``os.environ``); the environment wins.

    Raises :class:`SettingsError` listing every invalid value.
    """
    from example_connector.sources import load

    return load(config_file, environ)
