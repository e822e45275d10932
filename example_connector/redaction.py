"""Keep secrets out of log lines: the OpenCTI token and credentials in URLs.

Third-party libraries log what they were given: urllib3 logs the request path
(``?key=…`` included) at DEBUG and in its retry warnings, pycti logs errors
that may echo the token.  :func:`install` puts a :class:`RedactingFilter` on
every handler of the root logger, so each record is scrubbed once, whichever
logger emitted it, traceback included.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from example_connector.client import scrub, secret_fragments
from example_connector.settings import Settings

__all__ = ["RedactingFilter", "install", "settings_secrets"]

_FORMATTER = logging.Formatter()


def settings_secrets(settings: Settings) -> list[str]:
    """What must never be logged: the token and the secret parts of the URLs."""
    found: set[str] = set()
    if settings.opencti.token is not None:
        token = settings.opencti.token.get_secret_value()
        if token:
            found.add(token)
    if settings.opencti.url:
        found.update(secret_fragments(settings.opencti.url))
    found.update(secret_fragments(settings.urlhaus.feed_url))
    return sorted(found, key=len, reverse=True)


class RedactingFilter(logging.Filter):
    """Replace each secret in a record's message and traceback with ``***``."""

    def __init__(self, secrets: Iterable[str]) -> None:
        super().__init__()
        self.secrets = sorted({s for s in secrets if s}, key=len, reverse=True)

    def filter(self, record: logging.LogRecord) -> bool:
        if not self.secrets:
            return True
        try:
            message = record.getMessage()
        except Exception:  # a broken format string: keep the raw parts only
            message = f"{record.msg!r} {record.args!r}"
        clean = scrub(message, self.secrets)
        if clean != message or record.args:
            record.msg, record.args = clean, None
        if record.exc_info and not record.exc_text:
            record.exc_text = _FORMATTER.formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = scrub(record.exc_text, self.secrets)
        if record.stack_info:
            record.stack_info = scrub(record.stack_info, self.secrets)
        return True


def install(secrets: Iterable[str], logger: logging.Logger | None = None) -> RedactingFilter:
    """Put a :class:`RedactingFilter` on every handler of ``logger`` (default: root),
    in place of one an earlier call installed."""
    target = logger or logging.getLogger()
    redactor = RedactingFilter(secrets)
    for handler in target.handlers:
        for old in [f for f in handler.filters if isinstance(f, RedactingFilter)]:
            handler.removeFilter(old)
        handler.addFilter(redactor)
    return redactor
