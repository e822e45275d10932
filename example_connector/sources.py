"""Where the settings come from: the environment, then ``config.yml`` (pydantic-settings sources).

Each source gives ``{section: {key: value}}``.  Before pydantic-settings
merges them (the environment over the file), each one is *canonicalised*:
empty values are dropped (empty = unset) and an alias (an earlier name, such
as ``URLHAUS_FEED_URL``) becomes its canonical key unless that key is set in
the same source.  So an alias in the environment still overrides the
canonical key in the file.
"""

from __future__ import annotations

import contextvars
import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, EnvSettingsSource, PydanticBaseSettingsSource

from example_connector.sections import field_extra
from example_connector.settings import Settings, SettingsError
from example_connector.urls import redact_url

__all__ = ["DEFAULT_CONFIG_FILE", "aliases", "configured_sources", "load"]

DEFAULT_CONFIG_FILE = "config.yml"
_SECRET_KEYS = frozenset({("opencti", "token")})
_URL_KEYS = frozenset({("opencti", "url"), ("urlhaus", "csv_url")})


@dataclass(frozen=True)
class _Inputs:
    config_file: Path | None
    environ: Mapping[str, str]


_INPUTS: contextvars.ContextVar[_Inputs | None] = contextvars.ContextVar(
    "example_connector_settings_inputs", default=None
)


def aliases() -> dict[tuple[str, str], tuple[str, str]]:
    """``(section, key)`` of each alias → ``(section, key)`` of the setting it names."""
    found: dict[tuple[str, str], tuple[str, str]] = {}
    for section, info in Settings.model_fields.items():
        model = info.annotation
        assert isinstance(model, type) and issubclass(model, BaseModel)
        for key, field in model.model_fields.items():
            for env in field_extra(field)[0]:
                alias_section, _, alias_key = str(env).lower().partition("_")
                found[alias_section, alias_key] = (section, key)
    return found


def _canonical(data: Mapping[str, Any]) -> dict[str, Any]:
    """``data`` with empty values dropped and aliases renamed (see the module docstring)."""
    out: dict[str, Any] = {}
    for section, body in data.items():
        if not isinstance(body, Mapping):
            out[section] = body  # validation says what is wrong
            continue
        kept = {k: v for k, v in body.items() if v is not None and v != ""}
        if kept:
            out[section] = kept
    for (alias_section, alias_key), (section, key) in aliases().items():
        body = out.get(alias_section)
        if not isinstance(body, dict) or alias_key not in body:
            continue
        value = body.pop(alias_key)
        target = out.setdefault(section, {})
        if isinstance(target, dict):
            target.setdefault(key, value)
    return out


class _Canonical(PydanticBaseSettingsSource):
    def __init__(self, settings_cls: type[BaseSettings], inner: PydanticBaseSettingsSource):
        super().__init__(settings_cls)
        self.inner = inner

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return self.inner.get_field_value(field, field_name)

    def __call__(self) -> dict[str, Any]:
        return _canonical(self.inner())


class _Environment(EnvSettingsSource):
    """pydantic-settings' environment source, over a given mapping (tests pass one)."""

    def __init__(self, settings_cls: type[BaseSettings], environ: Mapping[str, str]) -> None:
        self._environ = environ
        super().__init__(settings_cls)

    def _load_env_vars(self) -> Mapping[str, str | None]:
        return {
            (k if self.case_sensitive else k.lower()): v
            for k, v in self._environ.items()
            if not (self.env_ignore_empty and v == "")
        }


class _YamlFile(PydanticBaseSettingsSource):
    """``config.yml``: a mapping of sections, each a mapping of keys."""

    def __init__(self, settings_cls: type[BaseSettings], path: Path | None) -> None:
        super().__init__(settings_cls)
        self.data = _read_yaml(path) if path is not None else {}

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return self.data.get(field_name), field_name, False

    def __call__(self) -> dict[str, Any]:
        return {k: v for k, v in self.data.items() if k in self.settings_cls.model_fields}


def configured_sources(settings_cls: type[BaseSettings]) -> tuple[PydanticBaseSettingsSource, ...]:
    """The sources, highest priority first: the environment, then the file."""
    inputs = _INPUTS.get() or _Inputs(_find_config_file(None), os.environ)
    return (
        _Canonical(settings_cls, _Environment(settings_cls, inputs.environ)),
        _Canonical(settings_cls, _YamlFile(settings_cls, inputs.config_file)),
    )


@contextmanager
def _inputs(config_file: Path | None, environ: Mapping[str, str]) -> Iterator[None]:
    token = _INPUTS.set(_Inputs(config_file, environ))
    try:
        yield
    finally:
        _INPUTS.reset(token)


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
    package_dir = Path(__file__).parent
    for candidate in (Path.cwd() / DEFAULT_CONFIG_FILE, package_dir / DEFAULT_CONFIG_FILE):
        if candidate.is_file():
            return candidate
    return None


def setting_name(section: str, key: str) -> str:
    """``URLHAUS_CSV_URL (urlhaus.csv_url)``, with the aliases when there are any."""
    names = [f"{section}_{key}".upper()]
    names += [f"{s}_{k}".upper() for (s, k), to in aliases().items() if to == (section, key)]
    alias = f", or its alias {', '.join(names[1:])}" if names[1:] else ""
    return f"{names[0]} ({section}.{key}{alias})"


def _describe_error(error: Mapping[str, Any]) -> str:
    loc = tuple(str(part) for part in error.get("loc", ()))
    message = str(error.get("msg", "invalid value")).removeprefix("Value error, ")
    if len(loc) < 2:
        return f"  {'.'.join(loc) or 'configuration'}: {message}"
    section, key = loc[0], loc[1]
    if (section, key) not in _SECRET_KEYS and "input" in error:
        value = error["input"]
        if (section, key) in _URL_KEYS and isinstance(value, str):
            value = redact_url(value)
        shown = repr(value)
        if len(shown) > 60:
            shown = shown[:57] + "..."
        if shown not in message:
            message += f" (got {shown})"
    return f"  {setting_name(section, key)}: {message}"


def load(
    config_file: str | os.PathLike[str] | None = None,
    environ: Mapping[str, str] | None = None,
) -> Settings:
    """See :func:`example_connector.settings.load_settings`."""
    path = _find_config_file(config_file)
    with _inputs(path, os.environ if environ is None else environ):
        try:
            return Settings()
        except ValidationError as exc:
            lines = [_describe_error(err) for err in exc.errors(include_url=False)]
    source = f" (file: {path})" if path is not None else ""
    raise SettingsError(f"invalid connector configuration{source}:\n" + "\n".join(lines))
