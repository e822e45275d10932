"""The current batch: the only place items are appended and batches cut.

Items are accepted into the buffer, then cut into batches from its head.
Re-queued items (``retry_failed``) are put at the head, with the dead-letter
row each one came from, so the rows travel with their batch (no identity keys).
The buffer may hold more than one batch's worth (a bulk add, a re-queue): it
is cut a batch at a time, and what is not cut yet stays here, pending.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

from connector_batching.batch import Batch, DateSpan, spans_start


class Buffer:
    """Pending items with their date spans, earliest date and age.

    ``items`` and ``dates`` are parallel lists whose identity never changes,
    so the processor's hot path may append to them directly (then call
    :meth:`noted` for a dated item).  Not thread-safe: the processor's lock
    guards it.
    """

    __slots__ = ("_clock", "dates", "earliest", "items", "rows", "started")

    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self.items: list[Any] = []
        self.dates: list[DateSpan] = []
        self.rows: list[int | None] = []  # dead-letter rows of the first len(rows) items
        self.earliest: dt.datetime | None = None
        self.started: float | None = None

    def __len__(self) -> int:
        return len(self.items)

    def start_if_empty(self) -> None:
        """Start the age clock when the first item arrives."""
        if not self.items:
            self.started = self._clock()

    def noted(self, span: tuple[dt.datetime, dt.datetime]) -> None:
        """Account for an appended item's dates (its earliest may hold the cursor)."""
        if self.earliest is None or span[0] < self.earliest:
            self.earliest = span[0]

    def extend(self, payloads: list[Any], spans: list[DateSpan]) -> None:
        """Append accepted items at the tail."""
        self.start_if_empty()
        self.items.extend(payloads)
        self.dates.extend(spans)
        for span in spans:
            if span is not None:
                self.noted(span)

    def requeue(self, payloads: list[Any], spans: list[DateSpan], rows: list[int | None]) -> None:
        """Put re-queued items at the head, ahead of anything waiting."""
        self.start_if_empty()
        self.items[:0] = payloads
        self.dates[:0] = spans
        self.rows[:0] = rows
        for span in spans:
            if span is not None:
                self.noted(span)

    def is_stale(self, max_age: float | None) -> bool:
        """True when the oldest pending item waited ``max_age`` seconds or more."""
        return (
            max_age is not None
            and self.started is not None
            and self._clock() - self.started >= max_age
        )

    def cut(self, number: int, limit: int | None) -> Batch:
        """Take the first ``limit`` items (all when ``None``) as batch ``number``."""
        items, dates, rows = self.items, self.dates, self.rows
        size = len(items) if limit is None else min(limit, len(items))
        batch = Batch(number, items[:size], dates[:size])
        if rows:
            batch.rows = rows[:size] + [None] * max(size - len(rows), 0)
            del rows[:size]
        del items[:size]
        del dates[:size]
        if items:
            self.earliest = spans_start(dates)
            self.started = self._clock()
        else:
            self.earliest = None
            self.started = None
        return batch
