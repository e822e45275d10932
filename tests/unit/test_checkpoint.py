"""The cursor rules and the checkpoint's writes, on their own."""

from __future__ import annotations

import datetime as dt
import logging
import threading

from hypothesis import given
from hypothesis import strategies as st

from connector_batching.checkpoint import EARLIEST, Checkpoint, final_cursor, safe_cursor
from connector_batching.dates import CURSOR_STEP

instants = st.datetimes(timezones=st.just(dt.UTC)) | st.just(EARLIEST)
maybe = st.none() | instants


@given(maybe, maybe, maybe)
def test_the_safe_cursor_never_passes_the_floor_nor_what_was_delivered(
    delivered: dt.datetime | None, committed: dt.datetime | None, floor: dt.datetime | None
) -> None:
    cursor = safe_cursor(delivered, committed, floor)
    if cursor is None:
        assert delivered is None
        return
    if floor is not None:
        assert cursor < floor or cursor == floor == EARLIEST
    if delivered is not None:
        assert cursor <= delivered


def test_the_cursor_moves_back_below_an_older_failure() -> None:
    t = dt.datetime(2024, 1, 2, tzinfo=dt.UTC)
    assert safe_cursor(None, t, t - dt.timedelta(days=1)) == t - dt.timedelta(days=1) - CURSOR_STEP


def test_the_final_cursor_is_now_only_without_dates_and_with_nothing_undelivered() -> None:
    assert final_cursor(None, dated=True, undelivered=False) is None
    assert final_cursor(None, dated=False, undelivered=True) is None
    assert final_cursor(None, dated=False, undelivered=False) is not None


def test_writes_skip_repeats_retry_once_and_never_raise() -> None:
    calls: list[str] = []
    failures = iter([True, False, True, True])

    def write(key: str, text: str) -> None:
        calls.append(text)
        if next(failures, False):
            raise RuntimeError("platform down")

    checkpoint = Checkpoint("cursor", write, logging.getLogger("test"))
    t = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
    with checkpoint.lock:
        checkpoint.write(t)  # fails, then succeeds on the immediate retry
        checkpoint.write(t)  # unchanged: skipped
        checkpoint.write(t + dt.timedelta(seconds=1))  # fails twice: given up, logged
    assert calls == ["2024-01-01T00:00:00Z"] * 2 + ["2024-01-01T00:00:01Z"] * 2
    assert checkpoint.committed_text == "2024-01-01T00:00:00Z" and checkpoint.errors == 3


def test_commit_computes_and_writes_under_the_checkpoint_lock() -> None:
    seen: list[bool] = []
    checkpoint = Checkpoint("cursor", lambda k, t: seen.append(checkpoint.lock.locked()), None)
    lock = threading.RLock()
    t = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
    checkpoint.commit(lambda: t, lock, pipelined=True)
    checkpoint.commit(lambda: t + CURSOR_STEP, lock, pipelined=False)
    assert seen == [True, True]
