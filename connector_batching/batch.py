"""A batch cut for delivery, and the date spans its items carry."""

from __future__ import annotations

import datetime as dt
from typing import Any

DateSpan = tuple[dt.datetime, dt.datetime] | None
"""An item's (earliest, latest) date: a group's members may differ; None: undated."""


def earliest(a: dt.datetime | None, b: dt.datetime | None) -> dt.datetime | None:
    """The earlier of two optional instants."""
    if a is None:
        return b
    if b is None:
        return a
    return a if a <= b else b


def latest(a: dt.datetime | None, b: dt.datetime | None) -> dt.datetime | None:
    """The later of two optional instants."""
    if a is None:
        return b
    if b is None:
        return a
    return a if a >= b else b


def spans_start(spans: list[DateSpan]) -> dt.datetime | None:
    """The earliest date in ``spans``."""
    dated = [span[0] for span in spans if span is not None]
    return min(dated) if dated else None


class Batch:
    """Items cut for delivery, with their date spans and the range they cover."""

    __slots__ = ("dates", "items", "max_date", "min_date", "number", "rows", "work_id")

    def __init__(self, number: int, items: list[Any], dates: list[DateSpan]) -> None:
        self.number = number
        self.items = items
        self.dates = dates
        spans = [span for span in dates if span is not None]
        self.min_date = min(span[0] for span in spans) if spans else None
        self.max_date = max(span[1] for span in spans) if spans else None
        self.work_id: str | None = None
        self.rows: list[int | None] = []  # dead-letter rows, parallel to items (or empty)
