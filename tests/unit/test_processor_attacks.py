"""Guarantees under attack: each test is a reproduced violation (issue 9), fixed.

Every test goes through the public API with a work manager that fails (or is
interrupted) at chosen calls, and checks the guarantee that broke: nothing
lost, the cursor never past an undelivered item, every work closed.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import datetime as dt
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from connector_batching import GenericBatchProcessor, GenericBatchProcessorConfig
from connector_batching.dates import parse_instant
from tests.unit.fakes import InjectedFault, RecordingWorkManager, member_ids
from tests.unit.test_processor import item


def config(**overrides: Any) -> GenericBatchProcessorConfig:
    base: dict[str, Any] = {
        "batch_size": 2,
        "work_name_template": "Batch #{batch_num}",
        "state_key": "cursor",
        "entity_type": "indicators",
        "display_name": "indicators",
        "date_extraction_function": lambda obj: obj.get("modified"),
        "retry_delay": 0.0,
    }
    return GenericBatchProcessorConfig(**{**base, **overrides})


def day(n: int) -> str:
    return f"2024-01-{n:02d}T00:00:00Z"


def accounted(processor: GenericBatchProcessor, manager: RecordingWorkManager) -> set[str]:
    """Ids delivered in completed works or held as failed (each once)."""
    delivered = manager.delivered_ids()
    failed = member_ids(processor.get_failed_items())
    assert not set(delivered) & set(failed), "an item is both delivered and failed"
    counts = collections.Counter(delivered)
    assert all(c == 1 for c in counts.values()), counts.most_common(2)
    return set(delivered) | set(failed)


class WatchedManager(RecordingWorkManager):
    """Records, at every cursor write, whether it passes an item not yet delivered."""

    def __init__(self, pending: dict[str, dt.datetime], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.pending = pending  # id -> date of every item offered, until delivered
        self.violations: list[str] = []

    def send_bundle(self, work_id: str, objects: list[Any]) -> None:
        super().send_bundle(work_id, objects)

    def work_to_process(
        self, work_id: str, in_error: bool = False, message: str | None = None
    ) -> None:
        super().work_to_process(work_id, in_error, message)
        if not in_error:
            for wid, objects in self.delivered:
                if wid == work_id:
                    for obj in objects:
                        self.pending.pop(obj["id"], None)

    def update_state(self, state_key: str, date_str: str) -> None:
        cursor = parse_instant(date_str)
        assert cursor is not None
        passed = [oid for oid, date in self.pending.items() if date <= cursor]
        if passed:
            self.violations.append(f"{date_str} passes undelivered {passed[:3]}")
        super().update_state(state_key, date_str)


# ------------------------------------------------------- 1, 2: retry_failed


def test_retry_failed_keeps_the_rest_when_a_resent_batch_fails_again() -> None:
    manager = RecordingWorkManager(fail={"send": lambda n: n <= 4})
    processor = GenericBatchProcessor(config(), manager)
    items = [item(n, day(n)) for n in range(1, 7)]
    for obj in items:
        with contextlib.suppress(InjectedFault, Exception):
            processor.add_item(obj)
    with contextlib.suppress(Exception):
        processor.flush()
    assert len(processor.get_failed_items()) == 6
    # Sends 3 and 4 fail too: the first re-sent batch fails again.
    with pytest.raises(Exception, match="failed"):
        processor.retry_failed()
    processor.flush()
    assert accounted(processor, manager) == {obj["id"] for obj in items}
    stats = processor.get_statistics()
    assert stats["total_items_processed"] + stats["failed_items_count"] == 6


def test_retry_failed_never_checkpoints_past_requeued_items_still_waiting() -> None:
    newer = item(50, day(20))
    older = [item(n, day(n)) for n in range(1, 7)]
    pending: dict[str, dt.datetime] = {}
    manager = WatchedManager(pending, fail={"send": lambda n: 2 <= n <= 4})
    processor = GenericBatchProcessor(config(batch_size=1), manager)

    def add(obj: dict[str, Any]) -> None:
        date = parse_instant(obj["modified"])
        assert date is not None
        pending[obj["id"]] = date  # from now on no cursor write may pass it
        with contextlib.suppress(Exception):
            processor.add_item(obj)

    add(newer)  # delivered: the cursor may reach day 20 ...
    for obj in older:  # ... but 1..3 fail: held at day 1 - 1 µs
        add(obj)
    assert len(processor.get_failed_items()) == 3
    # Items 4..6 were delivered; the cursor is held by the three failed ones.
    assert processor.retry_failed() == 3
    processor.update_final_state()
    assert manager.violations == []
    assert manager.state["cursor"] == day(20)


# ------------------------------------------------- 3: the earliest instant


def test_an_item_at_the_earliest_instant_is_delivered_and_the_cursor_written() -> None:
    manager = RecordingWorkManager()
    processor = GenericBatchProcessor(config(), manager)
    processor.add_item(item(1, "0001-01-01T00:00:00Z"))
    processor.add_item(item(2, day(3)))  # the batch is delivered here: no exception
    assert processor.get_statistics()["total_batches_processed"] == 1
    processor.update_final_state()
    assert manager.state["cursor"] == day(3)


def test_a_failed_item_at_the_earliest_instant_holds_the_cursor_without_raising() -> None:
    manager = RecordingWorkManager(fail={"send": lambda n: n == 2})
    processor = GenericBatchProcessor(config(batch_size=1), manager)
    processor.add_item(item(1, day(3)))
    assert manager.state["cursor"] == day(3)
    with pytest.raises(Exception, match="failed"):
        processor.add_item(item(2, "0001-01-01T00:00:00Z"))
    processor.update_final_state()  # documented never to raise
    cursor = parse_instant(manager.state["cursor"])
    assert cursor == dt.datetime.min.replace(tzinfo=dt.UTC)  # as far back as it goes
    assert processor.get_statistics()["failed_items_count"] == 1


@pytest.mark.parametrize(
    "value", ["9999-12-31T23:59:59-01:00", "0001-01-01T00:00:00+01:00", 1e300, float("nan")]
)
def test_set_latest_date_raises_value_error_at_the_edges(value: Any) -> None:
    processor = GenericBatchProcessor(config(), RecordingWorkManager())
    with pytest.raises(ValueError):
        processor.set_latest_date(value)


# ------------------------------------------ 4: Ctrl-C while closing a work


def test_ctrl_c_during_the_last_close_of_a_delivered_batch_closes_and_accounts_it() -> None:
    # close 1 fails (the retry loop gives up after max_retries), close 2 -- the
    # final close attempt made after the loop -- is interrupted.
    manager = RecordingWorkManager(
        fail={"close": lambda n: n == 1}, interrupt={"close": lambda n: n == 2}
    )
    processor = GenericBatchProcessor(config(max_retries=0), manager)
    processor.add_item(item(1, day(1)))
    with pytest.raises(KeyboardInterrupt):
        processor.add_item(item(2, day(2)))
    assert all(w.status != "in_progress" for w in manager.works.values())
    stats = processor.get_statistics()
    assert stats["total_items_processed"] + stats["failed_items_count"] == 2
    processor.update_final_state()
    if stats["failed_items_count"]:
        assert "cursor" not in manager.state or manager.state["cursor"] < day(1)


def test_ctrl_c_during_closing_a_failed_work_in_error_keeps_items_failed() -> None:
    manager = RecordingWorkManager(
        fail={"send": lambda n: True}, interrupt={"close": lambda n: n == 1}
    )
    processor = GenericBatchProcessor(config(), manager)
    processor.add_item(item(1, day(1)))
    with pytest.raises(KeyboardInterrupt):
        processor.add_item(item(2, day(2)))
    assert all(w.status != "in_progress" for w in manager.works.values())
    assert len(processor.get_failed_items()) == 2
    assert processor.get_statistics()["current_batch_size"] == 0
    processor.add_item(item(3, day(3)))  # the processor stays usable
    assert processor.get_current_batch_size() == 1


# -------------------------------------- 5: shapes add_item accepts never poison


@dataclasses.dataclass(slots=True)
class SlotsIndicator:
    id: str
    type: str
    name: str


Indicator = collections.namedtuple("Indicator", ["id", "type", "name"])


def oddities() -> list[Any]:
    return [
        item(1, granular_markings=["not-a-dict", 7, None]),
        item(2, **{"x_key": "v"}) | {3: "a non-str key"},
        SlotsIndicator("x-item--00000003-0000-4000-8000-000000000000", "x-item", "slots"),
        Indicator("x-item--00000004-0000-4000-8000-000000000000", "x-item", "tuple"),
    ]


@pytest.mark.parametrize("odd", oddities(), ids=["granular", "int-key", "slots", "namedtuple"])
def test_an_odd_but_accepted_item_never_fails_its_batch(odd: Any, tmp_path: Path) -> None:
    manager = RecordingWorkManager()
    processor = GenericBatchProcessor(
        config(batch_size=3, date_extraction_function=None, dead_letter_path=str(tmp_path / "d")),
        manager,
    )
    good = [item(10), item(11)]
    added = [processor.add_item(good[0]), processor.add_item(odd), processor.add_item(good[1])]
    stats = processor.get_statistics()
    assert stats["failed_batches"] == 0
    assert processor.get_failed_items() == []
    delivered = set(manager.delivered_ids())
    assert {obj["id"] for obj in good} <= delivered
    if added[1]:
        assert stats["total_items_processed"] == 3
    else:
        assert stats["rejected_items"] == 1


@pytest.mark.parametrize("odd", oddities(), ids=["granular", "int-key", "slots", "namedtuple"])
def test_an_odd_item_of_a_failed_batch_is_kept_as_a_dead_letter(odd: Any, tmp_path: Path) -> None:
    path = str(tmp_path / "dead.sqlite")
    manager = RecordingWorkManager(fail={"send": lambda n: n == 1})
    processor = GenericBatchProcessor(
        config(batch_size=1, date_extraction_function=None, dead_letter_path=path), manager
    )
    try:
        added = processor.add_item(odd)
    except Exception:  # its batch failed (send call 1): it is a dead letter now
        added = True
    if not added:
        return  # rejected at the door: counted, fine
    assert processor.get_statistics()["dead_letters"] == 1
    assert processor.retry_failed() == 1
    assert processor.get_statistics()["dead_letters"] == 0
    assert len(manager.delivered_ids()) == 1


# ------------------------------------------- 6: add_items racing add_item


def test_add_items_keeps_its_chunk_when_another_caller_filled_the_batch() -> None:
    manager = RecordingWorkManager(fail={"send": lambda n: n == 1})
    processor = GenericBatchProcessor(config(batch_size=2, date_extraction_function=None), manager)
    intruder = item(99)
    offered = {intruder["id"]}

    def chunk() -> Iterator[dict[str, Any]]:
        for n in (1, 2, 3):
            offered.add(item(n)["id"])  # consumed from the caller's iterable
            yield item(n)
            if n == 1:  # while add_items holds its chunk (outside the lock) ...
                processor.add_item(intruder)  # ... another caller fills the batch

    with pytest.raises(Exception, match="failed"):
        processor.add_items(chunk())
    processor.flush()
    assert accounted(processor, manager) == offered


def test_add_items_from_threads_with_failures_loses_nothing() -> None:
    manager = RecordingWorkManager(fail={"send": lambda n: n % 3 == 0})
    processor = GenericBatchProcessor(config(batch_size=5, date_extraction_function=None), manager)
    start = threading.Barrier(4)
    offered: set[str] = set()

    def chunk(base: int, numbers: range) -> Iterator[dict[str, Any]]:
        for n in numbers:
            obj = item(base + n)
            offered.add(obj["id"])  # consumed from the caller's iterable
            yield obj

    def produce(base: int) -> None:
        start.wait()
        for k in range(0, 200, 7):
            with contextlib.suppress(Exception):
                processor.add_items(chunk(base, range(k, min(k + 7, 200))))

    threads = [threading.Thread(target=produce, args=(1000 * t,)) for t in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    with contextlib.suppress(Exception):
        processor.flush()
    assert len(offered) > 400
    assert accounted(processor, manager) == offered


# ------------------------------------- 7: pipelined close() racing a producer


def test_pipelined_close_racing_a_producer_never_strands_a_batch() -> None:
    manager = RecordingWorkManager()
    processor = GenericBatchProcessor(
        config(batch_size=1, date_extraction_function=None, max_in_flight_batches=1), manager
    )
    done = threading.Event()
    errors: list[BaseException] = []

    def produce() -> None:
        try:
            for n in range(300):
                processor.add_item(item(n))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)
        finally:
            done.set()

    producer = threading.Thread(target=produce)
    producer.start()
    closes = 0
    while not done.is_set():
        processor.close()  # races the producer's submits
        closes += 1
    producer.join(timeout=60)
    assert not producer.is_alive(), "the producer is stuck behind a batch nobody sends"
    processor.close()
    assert errors == []
    assert len(manager.delivered_ids()) == 300


# ------------------------- 8: pipelined empty process_current_batch's write


class OneWriterAtATime(RecordingWorkManager):
    """Blocks the first cursor write until released; records overlapping writes."""

    def __init__(self) -> None:
        super().__init__()
        self.writing = 0
        self.overlaps = 0
        self.first_write_started = threading.Event()
        self.release_first_write = threading.Event()
        self.second_write_started = threading.Event()

    def update_state(self, state_key: str, date_str: str) -> None:
        with self.lock:
            self.writing += 1
            if self.writing > 1:
                self.overlaps += 1
            first = not self.first_write_started.is_set()
        if first:
            self.first_write_started.set()
            self.release_first_write.wait(timeout=60)
        else:
            self.second_write_started.set()
        try:
            super().update_state(state_key, date_str)
        finally:
            with self.lock:
                self.writing -= 1


def test_pipelined_empty_process_current_batch_never_writes_beside_the_sender() -> None:
    manager = OneWriterAtATime()
    processor = GenericBatchProcessor(config(batch_size=1, max_in_flight_batches=2), manager)
    processor.add_item(item(1, day(1)))  # the sender delivers it and blocks in its write
    assert manager.first_write_started.wait(timeout=60)
    caller = threading.Thread(target=processor.process_current_batch)  # an empty batch
    caller.start()
    # If the empty batch's write is not ordered behind the sender's, it starts
    # now. Waiting can only let a bad write in: it cannot fail a correct one.
    manager.second_write_started.wait(timeout=0.5)
    manager.release_first_write.set()
    caller.join(timeout=60)
    processor.close()
    assert manager.overlaps == 0
    assert manager.state["cursor"] == day(1)


# ------------------------------ 9: clear_failed_items across a restart


def test_clear_failed_items_after_a_restart_discards_earlier_dead_letters(tmp_path: Path) -> None:
    path = str(tmp_path / "dead.sqlite")
    first = GenericBatchProcessor(
        config(dead_letter_path=path), RecordingWorkManager(fail={"send": lambda n: True})
    )
    first.add_item(item(1, day(1)))
    with pytest.raises(Exception, match="failed"):
        first.add_item(item(2, day(2)))
    first.close()

    manager = RecordingWorkManager()
    restarted = GenericBatchProcessor(config(dead_letter_path=path), manager)
    assert restarted.get_statistics()["dead_letters"] == 2
    restarted.clear_failed_items()
    assert restarted.get_statistics()["dead_letters"] == 0
    restarted.add_item(item(3, day(3)))
    restarted.add_item(item(4, day(4)))
    restarted.update_final_state()
    assert manager.state["cursor"] == day(4)  # no longer held by the discarded rows
    assert restarted.retry_failed() == 0
