"""Intake: normalise, validate and date one item, or reject it (counted, never raised).

The processor's hot path (a plain STIX dict, no hooks) skips this; every other
item comes through :meth:`Intake.prepare`.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from connector_batching.batch import DateSpan, earliest, latest
from connector_batching.config import GenericBatchProcessorConfig
from connector_batching.dates import parse_instant
from connector_batching.statistics import Statistics
from connector_batching.stix import ItemRejected, iter_members, normalize_item


class Intake:
    """Turns an item into ``(payload, date span)``; counts rejections in ``stats``."""

    def __init__(
        self,
        config: GenericBatchProcessorConfig,
        stats: Statistics,
        lock: threading.RLock,
        logger: Any,
    ) -> None:
        self._validate = config.validation_function
        self._extract = config.date_extraction_function
        self._stats = stats
        self._lock = lock
        self._logger = logger
        self.groups_seen = False
        """Set once a group (a list payload) was accepted: bundles then flatten."""
        self.dated = False
        """Set once an item was given a date (by the source or the function)."""

    def prepare(self, item: Any, date: Any = None) -> tuple[Any, DateSpan] | None:
        """The item's payload and dates; None when it is rejected.  ``date`` (from
        the source) wins over the date extraction function."""
        try:
            payload = normalize_item(item)
        except ItemRejected as exc:
            self.reject(exc.reason, str(exc))
            return None
        if type(payload) is list:
            self.groups_seen = True
        validate = self._validate
        if validate is not None:
            try:
                valid = all(validate(member) for member in iter_members(payload))
            except Exception as exc:
                self.reject("validation_error", f"validation_function raised {exc!r}")
                return None
            if not valid:
                self.reject("invalid", "validation_function returned False")
                return None
        if date is not None:
            try:
                instant = parse_instant(date)
            except Exception:  # InvalidDate: undated, counted
                with self._lock:
                    self._stats.date_errors += 1
                instant = None
            if instant is not None:
                self.dated = True
                return payload, (instant, instant)
        extract = self._extract
        if extract is None:
            return payload, None
        span = self._date(extract, payload)
        if span is not None:
            self.dated = True
        return payload, span

    def _date(self, extract: Callable[[Any], Any], payload: Any) -> DateSpan:
        first = last = None
        for member in iter_members(payload):
            try:
                date = parse_instant(extract(member))
            except Exception:  # InvalidDate or the function's own error: undated
                with self._lock:
                    self._stats.date_errors += 1
                continue
            first, last = earliest(first, date), latest(last, date)
        if first is None or last is None:
            return None
        return (first, last)

    def reject(self, reason: str, detail: str) -> None:
        """Count a rejected item (details at DEBUG)."""
        with self._lock:
            self._stats.reject(reason)
        self._logger.debug(f"Rejected an item ({reason}): {detail}")

    def prepare_many(self, chunk: list[Any], plain: bool) -> tuple[list[Any], list[Any] | None]:
        """``prepare`` for a chunk: (payloads, spans) of the accepted items.  With
        ``plain`` (no hooks), a chunk made only of STIX dicts is taken in one check
        (spans ``None``: all undated)."""
        if plain and not [
            item
            for item in chunk
            if type(item) is not dict
            or type(item.get("id")) is not str
            or type(item.get("type")) is not str
        ]:
            return chunk, None
        prepared = [p for p in map(self.prepare, chunk) if p is not None]
        return [p[0] for p in prepared], [p[1] for p in prepared]
