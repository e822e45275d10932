"""The cursor: how far delivered data reaches, the safe and final rules, the writes.

The cursor written is the latest delivered date that passes no undelivered
item: at most one microsecond before the earliest undelivered date (the
*floor*, from the ledger).  It may move back when an older item fails after a
newer checkpoint was written.  Writes are made one at a time under the
checkpoint's own lock, in the order they were computed, and a write equal to
the last one is skipped.
"""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Callable
from typing import Any

from connector_batching.batch import latest
from connector_batching.cursor import CURSOR_STEP, format_instant, utc_now
from connector_batching.retry import TWO_TRIES

#: The earliest instant a cursor can hold.
EARLIEST = dt.datetime.min.replace(tzinfo=dt.UTC)


def safe_cursor(
    delivered: dt.datetime | None, committed: dt.datetime | None, floor: dt.datetime | None
) -> dt.datetime | None:
    """The furthest cursor that passes no undelivered date (``floor``).

    ``None``: nothing to write.  At the earliest representable instant the
    floor itself is the limit (nothing can be earlier).
    """
    if floor is None:
        return delivered
    limit = floor - CURSOR_STEP if floor > EARLIEST else EARLIEST
    if delivered is not None and delivered > limit:
        return limit
    if delivered is None and committed is not None and committed > limit:
        return limit
    return delivered


def final_cursor(safe: dt.datetime | None, *, dated: bool, undelivered: bool) -> dt.datetime | None:
    """The end-of-run cursor: the safe one; without dates and with everything
    delivered, the current time (the seed's behaviour); else nothing."""
    if safe is not None:
        return safe
    if dated or undelivered:
        return None  # nothing dated was delivered: keep the stored cursor
    return utc_now()


class Checkpoint:
    """Delivered dates, the last cursor written, and the writing of new ones."""

    def __init__(self, state_key: str, write: Callable[[str, str], None], logger: Any) -> None:
        self.state_key = state_key
        self._write = write
        self._logger = logger
        self.lock = threading.Lock()
        """Held while a cursor is computed and written: writes never overlap."""
        self.delivered: dt.datetime | None = None
        self.committed: dt.datetime | None = None
        self.committed_text: str | None = None
        self.errors = 0

    def covered(self, instant: dt.datetime | None) -> None:
        """Data up to ``instant`` was delivered."""
        self.delivered = latest(self.delivered, instant)

    def safe(self, floor: dt.datetime | None) -> dt.datetime | None:
        """:func:`safe_cursor` for what this checkpoint knows."""
        return safe_cursor(self.delivered, self.committed, floor)

    def write(self, cursor: dt.datetime | None) -> None:
        """Save ``cursor`` unless it is what was last written; never raises.

        Call with :attr:`lock` held.  One immediate retry: a cursor moved back
        for safety matters.
        """
        if cursor is None:
            return
        text = format_instant(cursor)
        if text == self.committed_text:
            return
        attempts = TWO_TRIES.start(lambda: 0.0)
        while True:
            try:
                self._write(self.state_key, text)
                break
            except Exception as exc:
                self.errors += 1
                if attempts.next_delay(exc) is None:
                    self._logger.warning(
                        f"Saving cursor {self.state_key}={text} failed ({exc!r}); "
                        "it will be written again at the next checkpoint"
                    )
                    return
        self.committed = cursor
        self.committed_text = text

    def commit(
        self,
        compute: Callable[[], dt.datetime | None],
        processor_lock: threading.RLock,
        *,
        pipelined: bool,
    ) -> None:
        """Compute a cursor and write it, under this checkpoint's lock.

        Synchronous, the processor's lock is taken first (the delivering caller
        holds it already); pipelined, it is held only while computing, so the
        producer goes on adding during the write (a platform call).
        """
        if not pipelined:
            with processor_lock, self.lock:
                self.write(compute())
            return
        with self.lock:
            with processor_lock:
                cursor = compute()
            self.write(cursor)
