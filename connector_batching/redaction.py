"""Secret redaction: :func:`redact`, the logging filter, :class:`RedactedError`.

Secrets are the OpenCTI token, the broker password and credentials in URLs;
every manager of the process registers the secrets of its helper.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

_URL_CREDENTIALS = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)[^\s/@:]*:[^\s/@]*@")
MIN_SECRET_LENGTH = 4
_KNOWN_SECRETS: set[str] = set()  # registered by every manager of the process
_STANDARD_RECORD_KEYS = frozenset(vars(logging.makeLogRecord({}))) | {"message", "asctime"}


def _redact_value(value: Any, secrets: Sequence[str]) -> Any:
    if isinstance(value, str):
        return redact(value, secrets)
    if isinstance(value, dict):
        return {k: _redact_value(v, secrets) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_redact_value(v, secrets) for v in value]
    return value


class RedactingFilter(logging.Filter):
    """Removes known secrets from a record: message, arguments, extra fields, traceback.

    Installed by :class:`~connector_batching.opencti.OpenCTIWorkManager` on the
    helper's loggers, because pycti's ``logger.error`` attaches the traceback of
    the exception being handled, whose message may hold what the platform or a
    proxy echoed back.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        secrets = sorted(_KNOWN_SECRETS)
        try:
            message = record.getMessage()
        except Exception:
            message = str(record.msg)
        record.msg, record.args = redact(message, secrets), None
        if record.exc_info and record.exc_info[1] is not None:
            text = logging.Formatter().formatException(record.exc_info)
            record.exc_info, record.exc_text = None, redact(text, secrets)
        elif record.exc_text:
            record.exc_text = redact(record.exc_text, secrets)
        for key, value in list(vars(record).items()):
            if key not in _STANDARD_RECORD_KEYS and isinstance(value, str | dict | list | tuple):
                setattr(record, key, _redact_value(value, secrets))
        return True


_REDACTING_FILTER = RedactingFilter()


class RedactedError(RuntimeError):
    """An error whose message held a secret; the message is given with it removed."""


def redact(text: str, secrets: Sequence[str] = ()) -> str:
    """``text`` with each of ``secrets`` and any ``user:password@`` in URLs replaced."""
    for secret in secrets:
        if secret and len(secret) >= MIN_SECRET_LENGTH and secret in text:
            text = text.replace(secret, "***")
    return _URL_CREDENTIALS.sub(r"\1***:***@", text)


def register_secrets(secrets: Iterable[str | None]) -> list[str]:
    """Add ``secrets`` to those :class:`RedactingFilter` removes from every record;
    returns the ones kept (strings of at least ``MIN_SECRET_LENGTH`` characters)."""
    kept = [v for v in secrets if isinstance(v, str) and len(v) >= MIN_SECRET_LENGTH]
    if not _KNOWN_SECRETS.issuperset(kept):
        _KNOWN_SECRETS.update(kept)
    return kept


def helper_secrets(helper: Any) -> list[str]:
    """The secrets a pycti helper holds, registered for :class:`RedactingFilter`."""
    found = [getattr(helper, "opencti_token", None)]
    api = getattr(helper, "api", None)
    found.append(getattr(api, "api_token", None))
    config = getattr(helper, "connector_config", None)
    if isinstance(config, Mapping):
        connection = config.get("connection")
        if isinstance(connection, Mapping):
            found.append(connection.get("pass"))
    return register_secrets(found)


def install_log_redaction(helper: Any) -> None:
    """Put :class:`RedactingFilter` on the helper's pycti loggers (once each)."""
    helper_secrets(helper)
    owners = [getattr(helper, "connector_logger", None)]
    for api in (getattr(helper, "api", None), getattr(helper, "api_impersonate", None)):
        owners += [getattr(api, "app_logger", None), getattr(api, "admin_logger", None)]
    for owner in owners:
        target = getattr(owner, "local_logger", None)
        if isinstance(target, logging.Logger) and _REDACTING_FILTER not in target.filters:
            target.addFilter(_REDACTING_FILTER)
