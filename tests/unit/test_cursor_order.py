"""The cursor is safe whatever order the feed comes in (``is_sorted``).

Whole streams known to the test — sorted, newest first, shuffled, two sorted
runs one after the other — with random failures.  Every cursor write is
checked against the items of the stream not delivered yet, *including those
not added yet*: the processor cannot know them, so it must not checkpoint as
if it did.
"""

from __future__ import annotations

import contextlib
import datetime as dt
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from connector_batching import GenericBatchProcessor, GenericBatchProcessorConfig, parse_instant
from connector_batching.checkpoint import EARLIEST
from connector_batching.testing import RecordingWorkManager

T0 = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)


def shaped(draw: st.DrawFn, hours: list[int]) -> list[int]:
    shape = draw(st.sampled_from(["sorted", "newest-first", "shuffled", "two-runs"]))
    if shape == "sorted":
        return sorted(hours)
    if shape == "newest-first":
        return sorted(hours, reverse=True)
    if shape == "two-runs":
        cut = len(hours) // 2
        return sorted(hours[:cut]) + sorted(hours[cut:])
    return draw(st.permutations(hours))


@st.composite
def runs(draw: st.DrawFn) -> dict[str, Any]:
    hours = draw(st.lists(st.integers(0, 500), min_size=1, max_size=40))
    return {
        "hours": shaped(draw, hours),
        "batch_size": draw(st.integers(1, 6)),
        "failing_sends": draw(st.sets(st.integers(1, 20), max_size=4)),
        "stored": draw(st.none() | st.integers(-50, 300)),  # the cursor before the run
        "is_sorted": draw(st.sampled_from([None, False])),
    }


class Watch(RecordingWorkManager):
    """Checks every cursor write against the whole stream."""

    def __init__(self, stream: list[dict[str, Any]], stored: dt.datetime | None, **kw: Any):
        super().__init__(**kw)
        self.stream = {o["id"]: parse_instant(o["modified"]) for o in stream}
        self.stored = stored
        self.added: set[str] = set()
        self.strict = False  # from the first out-of-order item on (or is_sorted=False)
        self.violations: list[str] = []
        if stored is not None:
            self.state["cursor"] = stored.isoformat()

    def undelivered(self) -> dict[str, dt.datetime]:
        done = set(self.delivered_ids())
        return {k: d for k, d in self.stream.items() if k not in done and d is not None}

    def passes(self, cursor: dt.datetime, ids: dict[str, dt.datetime]) -> list[str]:
        floor = self.stored
        return [
            k
            for k, d in ids.items()
            if d <= cursor
            and not (floor is not None and d <= floor)  # covered by the previous run
            and not (d == cursor == EARLIEST)
        ]

    def update_state(self, state_key: str, date_str: str) -> None:
        cursor = parse_instant(date_str)
        assert cursor is not None
        pending = self.undelivered()
        scope = pending if self.strict else {k: d for k, d in pending.items() if k in self.added}
        if passed := self.passes(cursor, scope):
            self.violations.append(f"{date_str} passes {passed[:2]} (strict={self.strict})")
        super().update_state(state_key, date_str)


def play(run: dict[str, Any]) -> tuple[Watch, GenericBatchProcessor]:
    stream = [
        {"type": "x", "id": f"x--{n}", "modified": (T0 + dt.timedelta(hours=h)).isoformat()}
        for n, h in enumerate(run["hours"])
    ]
    stored = None if run["stored"] is None else T0 + dt.timedelta(hours=run["stored"])
    failing = run["failing_sends"]
    manager = Watch(stream, stored, fail={"send": lambda n: n in failing})
    manager.strict = run["is_sorted"] is False
    config = GenericBatchProcessorConfig(
        batch_size=run["batch_size"],
        work_name_template="B{batch_num}",
        state_key="cursor",
        entity_type="x",
        display_name="xs",
        is_sorted=run["is_sorted"],
    )
    processor = GenericBatchProcessor(config, manager)
    latest: dt.datetime | None = None
    for obj in stream:
        date = parse_instant(obj["modified"])
        assert date is not None
        out_of_order = latest is not None and date < latest
        manager.added.add(obj["id"])
        with contextlib.suppress(Exception):
            processor.add_item(obj, date=obj["modified"])  # the source's date
        if out_of_order and not manager.strict:
            manager.strict = True
            # Right after add_item returns for it, the stored cursor no longer passes it.
            stored_now = parse_instant(manager.state.get("cursor"))
            if stored_now is not None and obj["id"] in manager.undelivered():
                passed = manager.passes(stored_now, {obj["id"]: date})
                assert not passed, f"stored {stored_now} still passes {obj['id']} at {date}"
        latest = date if latest is None else max(latest, date)
    with contextlib.suppress(Exception):
        processor.flush()
    processor.update_final_state()
    return manager, processor


@settings(max_examples=300, deadline=None)
@given(runs())
def test_no_cursor_write_passes_an_item_not_delivered_yet(run: dict[str, Any]) -> None:
    manager, processor = play(run)
    assert manager.violations == []
    # The final write: every item of the run was seen, so the cursor reaches the
    # latest delivered date when nothing failed.
    if not processor.get_failed_items():
        final = parse_instant(manager.state["cursor"])
        latest = max(d for d in manager.stream.values() if d is not None)
        assert final == latest


@settings(max_examples=150, deadline=None)
@given(st.lists(st.integers(0, 500), min_size=1, max_size=40).map(sorted), st.integers(1, 6))
def test_sorted_input_keeps_progress_after_every_batch(hours: list[int], size: int) -> None:
    manager = RecordingWorkManager()
    config = GenericBatchProcessorConfig(
        batch_size=size,
        work_name_template="B{batch_num}",
        state_key="cursor",
        entity_type="x",
        display_name="xs",
        is_sorted=True,
    )
    processor = GenericBatchProcessor(config, manager)
    for n, h in enumerate(hours):
        processor.add_item({"type": "x", "id": f"x--{n}"}, date=T0 + dt.timedelta(hours=h))
        if (n + 1) % size == 0:  # a batch was just delivered: its latest date, exactly
            expected = T0 + dt.timedelta(hours=hours[n])
            assert parse_instant(manager.state["cursor"]) == expected
    assert processor.get_statistics()["out_of_order_items"] == 0


def test_newest_first_feed_killed_after_two_batches_loses_nothing_on_rerun() -> None:
    """The ported-feed scenario: newest first, the process dies after batch 2."""
    hours = list(range(100, 0, -1))  # newest first
    rows = [{"type": "x", "id": f"x--{h}"} for h in hours]
    manager = RecordingWorkManager()

    def processor() -> GenericBatchProcessor:
        config = GenericBatchProcessorConfig(
            batch_size=10,
            work_name_template="B{batch_num}",
            state_key="cursor",
            entity_type="x",
            display_name="xs",
        )
        return GenericBatchProcessor(config, manager)

    first = processor()
    for h, row in zip(hours[:20], rows[:20], strict=True):  # 2 batches, then SIGKILL
        first.add_item(row, date=T0 + dt.timedelta(hours=h))
    cursor = parse_instant(manager.state.get("cursor"))
    # The rerun fetches what is newer than the stored cursor: nothing may be skipped.
    rerun = [
        (h, r)
        for h, r in zip(hours, rows, strict=True)
        if cursor is None or T0 + dt.timedelta(hours=h) > cursor
    ]
    second = processor()
    for h, row in rerun:
        second.add_item(row, date=T0 + dt.timedelta(hours=h))
    second.flush()
    second.update_final_state()
    assert set(manager.delivered_ids()) == {r["id"] for r in rows}
    assert manager.state["cursor"] == (T0 + dt.timedelta(hours=100)).isoformat().replace(
        "+00:00", "Z"
    )
