"""Connector settings: ``config.yml`` plus environment variables, like OpenCTI connectors.

Each setting has an environment variable (``URLHAUS_BATCH_SIZE``) and a YAML
key (``urlhaus: batch_size:``); the environment overrides the file, an empty
environment value counts as unset.  Values are validated with pydantic and
errors name the variable, the YAML key and what is expected.  The OpenCTI
token is a ``SecretStr``: never printed, logged or shown in an error.
"""

from __future__ import annotations

import datetime as dt
import os
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    TypeAdapter,
    ValidationError,
    field_serializer,
    field_validator,
)

from example_connector.client import redact_url
from example_connector.converter import TLP_LEVELS

__all__ = ["SETTINGS", "Settings", "SettingsError", "load_settings"]

DEFAULT_FEED_URL = "https://urlhaus.abuse.ch/downloads/csv_recent/"
DEFAULT_CONFIG_FILE = "config.yml"


class SettingsError(ValueError):
    """Invalid or missing configuration; the message lists every problem."""


@dataclass(frozen=True, slots=True)
class SettingDoc:
    """One setting: where it comes from, its default and what it means."""

    env: str
    section: str
    key: str
    default: str
    meaning: str

    @property
    def yaml_key(self) -> str:
        """``section.key`` as written in ``config.yml``."""
        return f"{self.section}.{self.key}"


#: Every setting, in documentation order (the README table is built from this).
SETTINGS: tuple[SettingDoc, ...] = (
    SettingDoc("OPENCTI_URL", "opencti", "url", "—", "OpenCTI platform URL (required online)."),
    SettingDoc(
        "OPENCTI_TOKEN", "opencti", "token", "—", "OpenCTI API token (required online; secret)."
    ),
    SettingDoc("CONNECTOR_ID", "connector", "id", "—", "Connector UUIDv4 (required online)."),
    SettingDoc(
        "CONNECTOR_TYPE", "connector", "type", "EXTERNAL_IMPORT", "Must be EXTERNAL_IMPORT."
    ),
    SettingDoc(
        "CONNECTOR_NAME", "connector", "name", "URLhaus (batching)", "Name shown in OpenCTI."
    ),
    SettingDoc("CONNECTOR_SCOPE", "connector", "scope", "url,indicator", "Connector scope."),
    SettingDoc(
        "CONNECTOR_LOG_LEVEL", "connector", "log_level", "info", "debug, info, warn or error."
    ),
    SettingDoc(
        "CONNECTOR_DURATION_PERIOD",
        "connector",
        "duration_period",
        "PT1H",
        "Time between runs, ISO 8601 duration (PT0S: run once and exit).",
    ),
    SettingDoc(
        "URLHAUS_FEED_URL",
        "urlhaus",
        "feed_url",
        DEFAULT_FEED_URL,
        "Feed to import: http(s) URL or local file path (URLhaus CSV format).",
    ),
    SettingDoc(
        "URLHAUS_BATCH_SIZE",
        "urlhaus",
        "batch_size",
        "500",
        "Feed rows per batch (work); rows added in the same second count as one.",
    ),
    SettingDoc(
        "URLHAUS_TLP_LEVEL",
        "urlhaus",
        "tlp_level",
        "clear",
        "Marking of all objects: clear, green, amber, amber+strict or red.",
    ),
    SettingDoc("URLHAUS_SCORE", "urlhaus", "score", "80", "x_opencti_score, 0 to 100."),
    SettingDoc(
        "URLHAUS_IMPORT_OFFLINE",
        "urlhaus",
        "import_offline",
        "false",
        "true: no OpenCTI; bundle files go to URLHAUS_OFFLINE_DIRECTORY, on the same schedule.",
    ),
    SettingDoc(
        "URLHAUS_OFFLINE_DIRECTORY",
        "urlhaus",
        "offline_directory",
        "out",
        "Directory for bundle files and state.db in offline mode.",
    ),
    SettingDoc(
        "URLHAUS_REQUEST_TIMEOUT",
        "urlhaus",
        "request_timeout",
        "60",
        "Feed download timeout, seconds (connect and each read).",
    ),
    SettingDoc(
        "URLHAUS_REQUEST_RETRIES",
        "urlhaus",
        "request_retries",
        "3",
        "Feed download retries (connection errors, HTTP 429/5xx).",
    ),
    SettingDoc(
        "URLHAUS_MAX_RETRIES",
        "urlhaus",
        "max_retries",
        "3",
        "Retries of a batch that fails to send (exponential backoff).",
    ),
    SettingDoc(
        "URLHAUS_RETRY_DELAY",
        "urlhaus",
        "retry_delay",
        "2.0",
        "First retry delay, seconds (doubles each retry).",
    ),
    SettingDoc(
        "URLHAUS_DEAD_LETTER_PATH",
        "urlhaus",
        "dead_letter_path",
        "dead_letters.db",
        "SQLite file keeping the rows of batches that failed for good; they are re-sent "
        "first at the next run (offline: always DIR/dead_letters.db).",
    ),
    SettingDoc(
        "URLHAUS_FUTURE_DATE_MARGIN",
        "urlhaus",
        "future_date_margin",
        "P1D",
        "Rows dated later than now plus this ISO 8601 duration are rejected (future_date).",
    ),
    SettingDoc(
        "URLHAUS_MAX_ROWS_PER_RUN",
        "urlhaus",
        "max_rows_per_run",
        "1000000",
        "New rows delivered per run at most (the oldest first); the rest waits for the next run.",
    ),
)

_BY_PATH = {(s.section, s.key): s for s in SETTINGS}
_SECRET_FIELDS = frozenset({("opencti", "token")})
#: URLs that may carry credentials (``user:pass@``, ``?key=``): shown redacted only.
_URL_FIELDS = frozenset({("opencti", "url"), ("urlhaus", "feed_url")})


class _Section(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True, str_strip_whitespace=True)

    #: Fields holding a URL that may embed credentials: redacted in repr and dumps.
    _url_fields: ClassVar[frozenset[str]] = frozenset()

    def __repr_args__(self) -> Iterator[tuple[str | None, Any]]:
        for name, value in super().__repr_args__():
            if name in self._url_fields and isinstance(value, str):
                yield name, redact_url(value)
            else:
                yield name, value


class OpenCTISettings(_Section):
    """``opencti:`` section."""

    _url_fields: ClassVar[frozenset[str]] = frozenset({"url"})

    url: str | None = None
    token: SecretStr | None = None

    @field_serializer("url")
    def _dump_url(self, value: str | None) -> str | None:
        return None if value is None else redact_url(value)

    @field_validator("url")
    @classmethod
    def _check_url(cls, value: str | None) -> str | None:
        if value and not value.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return value.rstrip("/") if value else None


class ConnectorSettings(_Section):
    """``connector:`` section."""

    id: str | None = None
    type: Literal["EXTERNAL_IMPORT"] = "EXTERNAL_IMPORT"
    name: str = Field(default="URLhaus (batching)", min_length=1)
    scope: str = Field(default="url,indicator", min_length=1)
    log_level: Literal["debug", "info", "warn", "warning", "error"] = "info"
    duration_period: str = "PT1H"

    @field_validator("id")
    @classmethod
    def _check_id(cls, value: str | None) -> str | None:
        if value:
            uuid.UUID(value)  # ValueError: "badly formed hexadecimal UUID string"
        return value or None

    @field_validator("log_level", mode="before")
    @classmethod
    def _lower(cls, value: object) -> object:
        return value.lower() if isinstance(value, str) else value

    @field_validator("duration_period")
    @classmethod
    def _check_period(cls, value: str) -> str:
        parse_duration(value)
        return value

    @property
    def duration_seconds(self) -> int:
        """``duration_period`` in whole seconds (0 means run once)."""
        return int(parse_duration(self.duration_period).total_seconds())


class UrlhausSettings(_Section):
    """``urlhaus:`` section."""

    _url_fields: ClassVar[frozenset[str]] = frozenset({"feed_url"})

    feed_url: str = Field(default=DEFAULT_FEED_URL, min_length=1)
    batch_size: int = Field(default=500, ge=1, le=100_000)
    tlp_level: str = "clear"
    score: int = Field(default=80, ge=0, le=100)
    import_offline: bool = False
    offline_directory: str = Field(default="out", min_length=1)
    request_timeout: float = Field(default=60.0, gt=0, le=3600)
    request_retries: int = Field(default=3, ge=0, le=20)
    max_retries: int = Field(default=3, ge=0, le=20)
    retry_delay: float = Field(default=2.0, ge=0, le=600)
    dead_letter_path: str = Field(default="dead_letters.db", min_length=1)
    future_date_margin: str = "P1D"
    max_rows_per_run: int = Field(default=1_000_000, ge=1, le=100_000_000)

    @field_serializer("feed_url")
    def _dump_feed_url(self, value: str) -> str:
        return redact_url(value)

    @field_validator("future_date_margin")
    @classmethod
    def _check_margin(cls, value: str) -> str:
        parse_duration(value)
        return value

    @property
    def future_margin(self) -> dt.timedelta:
        """``future_date_margin`` as a ``timedelta``."""
        return parse_duration(self.future_date_margin)

    @field_validator("tlp_level")
    @classmethod
    def _check_tlp(cls, value: str) -> str:
        key = value.strip().lower().removeprefix("tlp:")
        if key not in TLP_LEVELS:
            raise ValueError(f"must be one of {', '.join(TLP_LEVELS)}")
        return key


class Settings(BaseModel):
    """All settings of the example connector."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    opencti: OpenCTISettings = Field(default_factory=OpenCTISettings)
    connector: ConnectorSettings = Field(default_factory=ConnectorSettings)
    urlhaus: UrlhausSettings = Field(default_factory=UrlhausSettings)

    def require_online(self) -> None:
        """Raise :class:`SettingsError` unless everything OpenCTI needs is set."""
        missing = [
            doc
            for doc, value in (
                (_BY_PATH["opencti", "url"], self.opencti.url),
                (_BY_PATH["opencti", "token"], self.opencti.token),
                (_BY_PATH["connector", "id"], self.connector.id),
            )
            if not value
        ]
        if missing:
            lines = [f"  {d.env} ({d.yaml_key}): required to run against OpenCTI" for d in missing]
            raise SettingsError(
                "invalid connector configuration:\n"
                + "\n".join(lines)
                + "\n(or run offline: --offline DIR, or URLHAUS_IMPORT_OFFLINE=true)"
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


_DURATION = TypeAdapter(dt.timedelta)


def parse_duration(value: str) -> dt.timedelta:
    """Parse an ISO 8601 duration (``PT1H``, ``P1D``, ``PT0S``); ``ValueError`` if bad."""
    text = value.strip()
    if not text.upper().startswith("P"):
        raise ValueError(f"{value!r} is not an ISO 8601 duration such as PT1H or P1D")
    try:
        duration = _DURATION.validate_python(text)
    except ValidationError:
        raise ValueError(f"{value!r} is not an ISO 8601 duration such as PT1H or P1D") from None
    if duration < dt.timedelta(0):
        raise ValueError(f"{value!r} is negative")
    return duration


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise SettingsError(f"cannot read configuration file {path}: {exc.strerror}") from exc
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark is not None else ""
        raise SettingsError(f"configuration file {path} is not valid YAML{where}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise SettingsError(f"configuration file {path} must hold a mapping of sections")
    for section, body in data.items():
        if body is not None and not isinstance(body, dict):
            raise SettingsError(
                f"configuration file {path}: section {section!r} must be a mapping of keys"
            )
    return data


def _find_config_file(config_file: str | os.PathLike[str] | None) -> Path | None:
    if config_file is not None:
        path = Path(config_file)
        if not path.is_file():
            raise SettingsError(f"configuration file {path} does not exist")
        return path
    for candidate in (Path.cwd() / DEFAULT_CONFIG_FILE, Path(__file__).with_name("config.yml")):
        if candidate.is_file():
            return candidate
    return None


def _describe_error(error: Mapping[str, Any]) -> str:
    loc = tuple(str(part) for part in error.get("loc", ()))
    doc = _BY_PATH.get((loc[0], loc[1])) if len(loc) >= 2 else None
    name = f"{doc.env} ({doc.yaml_key})" if doc else ".".join(loc) or "configuration"
    message = str(error.get("msg", "invalid value")).removeprefix("Value error, ")
    if doc is not None and loc[:2] not in _SECRET_FIELDS and "input" in error:
        value = error["input"]
        if loc[:2] in _URL_FIELDS and isinstance(value, str):
            value = redact_url(value)
        shown = repr(value)
        if len(shown) > 60:
            shown = shown[:57] + "..."
        if shown not in message:
            message += f" (got {shown})"
    return f"  {name}: {message}"


def load_settings(
    config_file: str | os.PathLike[str] | None = None,
    environ: Mapping[str, str] | None = None,
) -> Settings:
    """Load settings from ``config_file`` (default: ``./config.yml`` when present) and
    ``environ`` (default: ``os.environ``); the environment wins.

    Raises :class:`SettingsError` listing every invalid value.
    """
    env = os.environ if environ is None else environ
    path = _find_config_file(config_file)
    data = _read_yaml(path) if path is not None else {}
    merged: dict[str, dict[str, Any]] = {}
    for doc in SETTINGS:
        section = data.get(doc.section) or {}
        value = env.get(doc.env)
        if value is not None and value.strip() != "":
            merged.setdefault(doc.section, {})[doc.key] = value
        elif doc.key in section and section[doc.key] is not None and section[doc.key] != "":
            merged.setdefault(doc.section, {})[doc.key] = section[doc.key]
    try:
        return Settings.model_validate(merged)
    except ValidationError as exc:
        lines = [_describe_error(err) for err in exc.errors(include_url=False)]
        source = f" (file: {path})" if path is not None else ""
        raise SettingsError(
            f"invalid connector configuration{source}:\n" + "\n".join(lines)
        ) from None
