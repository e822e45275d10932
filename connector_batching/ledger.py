"""The ledger: every accepted item not delivered yet, and so the cursor floor.

An accepted item is, at any moment, in exactly one place: the buffer
(pending), a batch in flight, the failed items, or a dead-letter row of an
earlier run not re-queued yet.  :meth:`Ledger.floor` is the earliest date among
all of them; it is the only source of the cursor's limit.  Dead-letter rows
travel with their items (``Batch.rows``), so a delivered item's row is removed
and a failed one's is counted again, without keying anything by identity.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

from connector_batching.batch import Batch, DateSpan, earliest
from connector_batching.buffer import Buffer
from connector_batching.dead_letters import DeadLetterStore


class Ledger:
    """Pending, in-flight, failed and dead-lettered items (guarded by the processor's lock)."""

    def __init__(
        self, buffer: Buffer, store: DeadLetterStore | None, state_key: str, logger: Any
    ) -> None:
        self.buffer = buffer
        self.store = store
        self._key = state_key
        self._logger = logger
        self.in_flight: dict[int, dt.datetime | None] = {}  # batch number -> earliest date
        self.failed: list[Any] = []
        self._failed_dates: list[DateSpan] = []
        self._failed_rows: list[int | None] = []
        self._failed_min: dt.datetime | None = None
        self._live_rows: set[int] = set()  # rows whose items are in memory (any place)
        self._stored_floor: dt.datetime | None = None  # earliest row not in memory
        if store is not None:
            _count, self._stored_floor = store.summary(state_key)

    # ----------------------------------------------------------------- reading

    def floor(self) -> dt.datetime | None:
        """The earliest date of any accepted item not delivered."""
        floor = earliest(earliest(self.buffer.earliest, self._failed_min), self._stored_floor)
        for start in self.in_flight.values():
            floor = earliest(floor, start)
        return floor

    def has_undelivered(self) -> bool:
        """True while anything accepted is not delivered (or dead letters wait)."""
        return bool(
            self.buffer.items or self.failed or self.in_flight or self._stored_floor is not None
        )

    def undelivered_count(self) -> int:
        """Pending plus failed items (in memory)."""
        return len(self.buffer.items) + len(self.failed)

    # ------------------------------------------------------------ transitions

    def sent(self, batch: Batch) -> None:
        """``batch`` left the buffer for delivery."""
        self.in_flight[batch.number] = batch.min_date

    def delivered(self, batch: Batch) -> None:
        """``batch`` was delivered: its dead letters, if any, are removed."""
        self.in_flight.pop(batch.number, None)
        rows = [row for row in batch.rows if row is not None]
        if rows:
            self._live_rows.difference_update(rows)
            self._write(lambda store: store.remove(rows))

    def failed_for_good(self, batch: Batch, reason: str) -> None:
        """``batch`` failed for good: its items are kept as failed (and persisted)."""
        self.in_flight.pop(batch.number, None)
        rows = batch.rows or [None] * len(batch.items)
        if self.store is not None:
            rows = self._persist(batch, rows, reason)
        self.failed.extend(batch.items)
        self._failed_dates.extend(batch.dates)
        self._failed_rows.extend(rows)
        self._failed_min = earliest(self._failed_min, batch.min_date)

    def requeue(self) -> int:
        """Move the failed items, then the stored rows of earlier runs, to the
        head of the buffer; returns how many were queued."""
        payloads, spans, rows = self.failed, self._failed_dates, self._failed_rows
        self.failed, self._failed_dates, self._failed_rows = [], [], []
        self._failed_min = None
        if self.store is not None:
            stored = self._read(lambda store: store.load(self._key))
            if stored is not None:
                for row, payload, span in stored:
                    if row not in self._live_rows:
                        payloads.append(payload)
                        spans.append(span)
                        rows.append(row)
                        self._live_rows.add(row)
                self._stored_floor = None
        if payloads:
            self.buffer.requeue(payloads, spans, rows)
        return len(payloads)

    def clear_failed(self) -> None:
        """Forget the failed items and every stored row not queued again (earlier
        runs' included): handled, they no longer hold the cursor."""
        mine = {row for row in self._failed_rows if row is not None}
        self._live_rows -= mine
        self.failed, self._failed_dates, self._failed_rows = [], [], []
        self._failed_min = None
        if self.store is not None:
            keep = set(self._live_rows)
            if self._write(lambda store: store.discard(self._key, keep=keep)):
                self._stored_floor = None

    # -------------------------------------------------------------- the store

    def _persist(self, batch: Batch, rows: list[int | None], reason: str) -> list[int | None]:
        known = [row for row in rows if row is not None]
        fresh = [
            (payload, span)
            for payload, span, row in zip(batch.items, batch.dates, rows, strict=True)
            if row is None
        ]
        if known:
            self._write(lambda store: store.failed_again(known, reason))
        if not fresh:
            return rows
        added = self._read(lambda store: store.add(self._key, fresh, reason))
        if added is None:
            return rows  # kept in memory only; the error was logged
        new_rows = iter(added)
        out = [next(new_rows) if row is None else row for row in rows]
        self._live_rows.update(row for row in out if row is not None)
        return out

    def _write(self, action: Callable[[DeadLetterStore], object]) -> bool:
        """Run ``action`` on the store; False (logged) when it failed."""
        return self._read(action) is not None

    def _read(self, action: Callable[[DeadLetterStore], Any]) -> Any:
        """``action``'s result (True for None), or None (logged) when it failed."""
        store = self.store
        assert store is not None
        try:
            result = action(store)
        except Exception as exc:  # the items stay in memory; say so
            self._logger.error(f"Dead-letter store {store.path} could not be used: {exc!r}")
            return None
        return True if result is None else result
