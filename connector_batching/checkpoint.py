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
from connector_batching.dates import CURSOR_STEP, format_instant, parse_instant, utc_now
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


def unsorted_cursor(
    safe: dt.datetime | None, committed: dt.datetime | None, start: dt.datetime | None
) -> dt.datetime | None:
    """A cursor write while dates are not known to arrive sorted.

    Items not seen yet may be older than anything delivered, so the cursor
    never moves past ``start`` (the cursor stored before the run; unknown:
    the earliest instant).  A stored cursor that passes no known undelivered
    item is left alone; one that does is moved back to ``min(safe, start)``.
    """
    if committed is None or (safe is not None and committed <= safe):
        return None
    cap = start if start is not None else EARLIEST
    return cap if safe is None else min(safe, cap)


class Checkpoint:
    """Delivered dates, the last cursor written, and the writing of new ones.

    ``sorted`` says whether dates are trusted to arrive non-decreasing: then
    the cursor advances after every delivered batch; once not (``is_sorted``
    False, or an out-of-order item seen), mid-run writes never pass the cursor
    stored at the start of the run, and the cursor moves forward only with the
    final write (``update_final_state``), when every item of the run was seen.
    """

    def __init__(
        self,
        state_key: str,
        write: Callable[[str, str], None],
        logger: Any,
        *,
        read: Callable[[], Any] | None = None,
        is_sorted: bool | None = None,
    ) -> None:
        self.state_key = state_key
        self._write = write
        self._read = read
        self._logger = logger
        self.sorted = is_sorted is not False
        self._start: dt.datetime | None = None
        self._start_read = False
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

    def cursor(
        self, floor: dt.datetime | None, *, final: bool, dated: bool, undelivered: bool
    ) -> dt.datetime | None:
        """The cursor to write now (None: write nothing), by the order rules above."""
        safe = self.safe(floor)
        if final:  # the run is over: every item was seen, the safe cursor is safe
            return final_cursor(safe, dated=dated, undelivered=undelivered)
        return safe if self.sorted else unsorted_cursor(safe, self.committed, self.start())

    def start(self) -> dt.datetime | None:
        """The cursor stored before this run wrote any (read once; None: unknown)."""
        if not self._start_read:
            self._start_read = True
            if self._read is not None and self.committed is None:
                try:
                    self._start = parse_instant(self._read())
                except Exception as exc:
                    self._logger.warning(
                        f"Cursor {self.state_key}: the stored value could not be read "
                        f"({exc!r}); an unsorted feed then rewinds it to the earliest instant"
                    )
        return self._start

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
        self.start()  # the value before this run's first write
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
