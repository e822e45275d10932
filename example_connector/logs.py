"""The connector's log lines, and secrets kept out of every log line of the process.

Online, every line goes through pycti's ``helper.connector_logger`` with a
metadata dict (pycti's format: JSON with ``attributes`` unless
``OPENCTI_JSON_LOGGING=false``).  Offline there is no helper: the same lines
go to the stdlib logger ``example_connector``, which writes to stderr, the
metadata appended as ``key=value`` pairs.

Redaction is the library's (:mod:`connector_batching.redaction`): the secrets
are registered with it and its :class:`RedactingFilter` is put on every
handler of the root logger, so a record is scrubbed whichever logger emitted
it (urllib3 logs request paths, ``?key=…`` included), traceback included.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from typing import Any

from connector_batching import RedactingFilter, register_secrets

__all__ = ["LOGGER_NAME", "ConnectorLog", "install_redaction", "register_secrets"]

LOGGER_NAME = "example_connector"

Meta = Mapping[str, Any]


class ConnectorLog:
    """Where the connector's own lines go: ``helper.connector_logger`` or stderr.

    Each method takes a message and an optional metadata dict, like pycti's
    logger.  :attr:`target` is what the batch processor is given, so its
    lines go the same way.
    """

    def __init__(self, helper: Any = None, logger: logging.Logger | None = None) -> None:
        self._pycti: Any = getattr(helper, "connector_logger", None)
        self._stdlib = logger or logging.getLogger(LOGGER_NAME)

    @property
    def online(self) -> bool:
        """True when lines go through pycti's connector logger."""
        return self._pycti is not None

    @property
    def target(self) -> Any:
        """The underlying logger (pycti's or the stdlib one)."""
        return self._pycti if self._pycti is not None else self._stdlib

    def _write(self, level: str, message: str, meta: Meta | None) -> None:
        if self._pycti is not None:
            getattr(self._pycti, level)(message, dict(meta) if meta else None)
            return
        if meta:
            message = f"{message} ({', '.join(f'{k}={v}' for k, v in meta.items())})"
        getattr(self._stdlib, level)(message)

    def debug(self, message: str, meta: Meta | None = None) -> None:
        """A detail."""
        self._write("debug", message, meta)

    def info(self, message: str, meta: Meta | None = None) -> None:
        """What happened."""
        self._write("info", message, meta)

    def warning(self, message: str, meta: Meta | None = None) -> None:
        """Something the operator should look at."""
        self._write("warning", message, meta)

    def error(self, message: str, meta: Meta | None = None) -> None:
        """Something failed."""
        self._write("error", message, meta)


def install_redaction(secrets: Iterable[str] = ()) -> None:
    """Register ``secrets`` and put the library's filter on every root handler (once each).

    Call it again after something replaced the root handlers (pycti's JSON
    logging does, when the helper is created).
    """
    register_secrets(secrets)
    for handler in logging.getLogger().handlers:
        if not any(isinstance(f, RedactingFilter) for f in handler.filters):
            handler.addFilter(RedactingFilter())
