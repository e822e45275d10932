"""The sections of the settings: ``opencti:``, ``connector:``, ``urlhaus:``.

Each field is one setting; its ``description`` is its documentation (see
:mod:`example_connector.settings`).  ``json_schema_extra`` may carry
``aliases`` (earlier environment names), ``deprecated`` and
``required_online``.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterator
from typing import Any, ClassVar, Literal

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
from pydantic.fields import FieldInfo

from example_connector.converter import TLP_LEVELS
from example_connector.urls import redact_url

__all__ = [
    "DEFAULT_FEED_URL",
    "ConnectorSettings",
    "OpenCTISettings",
    "UrlhausSettings",
    "field_extra",
    "parse_duration",
]

DEFAULT_FEED_URL = "https://urlhaus.abuse.ch/downloads/csv_recent/"

_DURATION = TypeAdapter(dt.timedelta)


def field_extra(field: FieldInfo) -> tuple[tuple[str, ...], bool, bool]:
    """A field's ``(aliases, deprecated, required_online)`` from its schema extra."""
    extra = field.json_schema_extra if isinstance(field.json_schema_extra, dict) else {}
    aliases = extra.get("aliases")
    names = tuple(str(a) for a in aliases) if isinstance(aliases, list) else ()
    return names, bool(extra.get("deprecated")), bool(extra.get("required_online"))


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

    url: str | None = Field(
        default=None,
        description="The base URL of the OpenCTI platform. Required online.",
        json_schema_extra={"format": "uri", "required_online": True},
    )
    token: SecretStr | None = Field(
        default=None,
        description="The API token of the connector's OpenCTI user (secret). Required online.",
        json_schema_extra={"required_online": True},
    )

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

    id: str | None = Field(
        default=None,
        description="A UUIDv4 identifying this connector instance in OpenCTI. Required online.",
        json_schema_extra={"required_online": True},
    )
    type: Literal["EXTERNAL_IMPORT"] = Field(
        default="EXTERNAL_IMPORT", description="The connector type: EXTERNAL_IMPORT only."
    )
    name: str = Field(
        default="URLhaus (batching)", min_length=1, description="The name shown in OpenCTI."
    )
    scope: str = Field(
        default="url,indicator", min_length=1, description="The scope of the connector."
    )
    log_level: Literal["debug", "info", "warn", "warning", "error"] = Field(
        default="info", description="The minimum level of the lines logged."
    )
    duration_period: str = Field(
        default="PT1H",
        description="Time between two runs, an ISO 8601 duration (PT0S: run once and exit).",
        json_schema_extra={"format": "duration"},
    )
    batching_output_directory: str | None = Field(
        default=None,
        min_length=1,
        description="Write STIX bundle files and state.db to this directory instead of "
        "sending to OpenCTI, on the same schedule (the OpenCTI settings are then unused).",
        json_schema_extra={"aliases": ["URLHAUS_OFFLINE_DIRECTORY"]},
    )

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
    """``urlhaus:`` section: upstream's settings first, then this connector's batching ones."""

    _url_fields: ClassVar[frozenset[str]] = frozenset({"csv_url"})

    csv_url: str = Field(
        default=DEFAULT_FEED_URL,
        min_length=1,
        description="The feed to import: an http(s) URL or a local file path (URLhaus CSV).",
        json_schema_extra={"aliases": ["URLHAUS_FEED_URL"]},
    )
    default_x_opencti_score: int = Field(
        default=80,
        ge=0,
        le=100,
        description="x_opencti_score of the imported indicators and observables.",
        json_schema_extra={"aliases": ["URLHAUS_SCORE"]},
    )
    import_offline: bool = Field(
        default=True,
        description="Also import the URLs whose url_status is 'offline' (false: online only).",
    )
    threats_from_labels: bool = Field(
        default=True,
        description="Link indicators and observables to the threats (malware, intrusion "
        "sets, …) already in OpenCTI whose name is one of the row's tags.",
    )
    interval: int | None = Field(
        default=None,
        ge=1,
        description="Time between runs in hours, replaced by CONNECTOR_DURATION_PERIOD "
        "(which wins when both are set); accepted with a warning.",
        json_schema_extra={"deprecated": True},
    )
    batch_size: int = Field(
        default=500,
        ge=1,
        le=100_000,
        description="Feed rows per batch (one OpenCTI work each); rows added in the same "
        "second count as one.",
    )
    tlp_level: str = Field(
        default="clear",
        description="Marking of every object: clear, green, amber, amber+strict or red.",
    )
    request_timeout: float = Field(
        default=60.0, gt=0, le=3600, description="Feed download timeout, seconds."
    )
    request_retries: int = Field(
        default=3, ge=0, le=20, description="Feed download retries (connection errors, 429, 5xx)."
    )
    max_retries: int = Field(
        default=3, ge=0, le=20, description="Retries of a batch that fails to send."
    )
    retry_delay: float = Field(
        default=2.0, ge=0, le=600, description="First batch retry delay, seconds (doubling)."
    )
    dead_letter_path: str = Field(
        default="dead_letters.db",
        min_length=1,
        description="SQLite file keeping the rows of batches that failed for good; they are "
        "re-sent first at the next run (file output: always DIR/dead_letters.db).",
    )
    future_date_margin: str = Field(
        default="P1D",
        description="Rows dated later than now plus this ISO 8601 duration are rejected.",
        json_schema_extra={"format": "duration"},
    )
    max_rows_per_run: int = Field(
        default=1_000_000,
        ge=1,
        le=100_000_000,
        description="New rows delivered per run at most, the oldest first; the rest waits "
        "for the next run.",
    )

    @field_serializer("csv_url")
    def _dump_csv_url(self, value: str) -> str:
        return redact_url(value)

    @field_validator("future_date_margin")
    @classmethod
    def _check_margin(cls, value: str) -> str:
        parse_duration(value)
        return value

    @field_validator("tlp_level")
    @classmethod
    def _check_tlp(cls, value: str) -> str:
        key = value.strip().lower().removeprefix("tlp:")
        if key not in TLP_LEVELS:
            raise ValueError(f"must be one of {', '.join(TLP_LEVELS)}")
        return key

    @property
    def feed_url(self) -> str:
        """The feed (``csv_url``, earlier ``feed_url``)."""
        return self.csv_url

    @property
    def score(self) -> int:
        """``default_x_opencti_score``."""
        return self.default_x_opencti_score

    @property
    def future_margin(self) -> dt.timedelta:
        """``future_date_margin`` as a ``timedelta``."""
        return parse_duration(self.future_date_margin)
