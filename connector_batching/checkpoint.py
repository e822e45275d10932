"""The cursor: how far delivered data reaches, and what was last written."""

from __future__ import annotations

import datetime as dt
from typing import Any

from connector_batching.batch import latest
from connector_batching.cursor import CURSOR_STEP, format_instant

#: The earliest instant a cursor can hold.
EARLIEST = dt.datetime.min.replace(tzinfo=dt.UTC)


class Checkpoint:
    """Tracks the delivered dates and writes the cursor through a work manager.

    The cursor written is the latest delivered date that passes no undelivered
    item: at most one microsecond before the earliest undelivered date (the
    *floor*).  It may move back when an older item fails after a newer
    checkpoint was written.
    """

    def __init__(self, state_key: str) -> None:
        self.state_key = state_key
        self.delivered: dt.datetime | None = None
        self.committed: dt.datetime | None = None
        self.committed_text: str | None = None
        self.errors = 0

    def covered(self, instant: dt.datetime | None) -> None:
        """Data up to ``instant`` was delivered."""
        self.delivered = latest(self.delivered, instant)

    def safe(self, floor: dt.datetime | None) -> dt.datetime | None:
        """The furthest cursor that passes no undelivered date (``floor``)."""
        candidate = self.delivered
        if floor is None:
            return candidate
        # One step before the floor; at the earliest representable instant the
        # floor itself (nothing can be earlier: the cursor stays as far back as it goes).
        limit = floor - CURSOR_STEP if floor > EARLIEST else EARLIEST
        if candidate is not None and candidate > limit:
            return limit
        if candidate is None and self.committed is not None and self.committed > limit:
            return limit
        return candidate

    def write(self, manager: Any, cursor: dt.datetime | None, logger: Any) -> None:
        """Save ``cursor`` unless it is what was last written; never raises.

        One immediate retry: a cursor moved back for safety matters.
        """
        if cursor is None:
            return
        text = format_instant(cursor)
        if text == self.committed_text:
            return
        for attempt in (1, 2):
            try:
                manager.update_state(state_key=self.state_key, date_str=text)
                break
            except Exception as exc:
                self.errors += 1
                if attempt == 2:
                    logger.warning(
                        f"Saving cursor {self.state_key}={text} failed ({exc!r}); "
                        "it will be written again at the next checkpoint"
                    )
                    return
        self.committed = cursor
        self.committed_text = text
