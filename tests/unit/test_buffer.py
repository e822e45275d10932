"""The buffer on its own: append, re-queue at the head, cut a batch at a time."""

from __future__ import annotations

import datetime as dt

from connector_batching.buffer import Buffer

T0 = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)


def span(hours: int) -> tuple[dt.datetime, dt.datetime]:
    at = T0 + dt.timedelta(hours=hours)
    return (at, at)


class Clock:
    now = 100.0

    def __call__(self) -> float:
        return self.now


def test_an_oversized_buffer_is_cut_a_batch_at_a_time_and_the_rest_keeps_its_floor() -> None:
    buffer = Buffer(Clock())
    buffer.extend(list("abcde"), [span(5), span(1), span(4), span(2), span(3)])
    assert buffer.earliest == T0 + dt.timedelta(hours=1)
    first = buffer.cut(1, 2)
    assert first.items == ["a", "b"] and first.min_date == T0 + dt.timedelta(hours=1)
    assert buffer.items == ["c", "d", "e"]
    assert buffer.earliest == T0 + dt.timedelta(hours=2)  # recomputed over the rest
    last = buffer.cut(2, None)
    assert last.items == ["c", "d", "e"] and len(buffer) == 0 and buffer.earliest is None


def test_requeued_items_go_first_and_carry_their_rows_into_their_batch() -> None:
    buffer = Buffer(Clock())
    buffer.extend(["new"], [None])
    buffer.requeue(["old1", "old2"], [span(1), None], [7, None])
    assert buffer.items == ["old1", "old2", "new"]
    batch = buffer.cut(1, 2)
    assert batch.items == ["old1", "old2"] and batch.rows == [7, None]
    rest = buffer.cut(2, 2)
    assert rest.items == ["new"] and rest.rows == []


def test_the_age_clock_starts_with_the_first_item() -> None:
    clock = Clock()
    buffer = Buffer(clock)
    assert not buffer.is_stale(10)
    buffer.extend(["a"], [None])
    clock.now += 9.9
    assert not buffer.is_stale(10)
    clock.now += 0.1
    assert buffer.is_stale(10) and not buffer.is_stale(None)
