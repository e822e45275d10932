"""Pipelined sending: order, back-pressure, cursor over a delivered prefix, errors."""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from connector_batching import GenericBatchProcessor, GenericBatchProcessorConfig
from tests.unit.fakes import RecordingWorkManager


def config(**overrides: Any) -> GenericBatchProcessorConfig:
    base: dict[str, Any] = {
        "batch_size": 2,
        "work_name_template": "Batch #{batch_num}",
        "state_key": "cursor",
        "entity_type": "items",
        "display_name": "items",
        "max_in_flight_batches": 2,
        "date_extraction_function": lambda obj: obj.get("modified"),
    }
    return GenericBatchProcessorConfig(**{**base, **overrides})


def item(n: int) -> dict[str, Any]:
    return {
        "type": "x-item",
        "id": f"x-item--{n:08d}-0000-4000-8000-000000000000",
        "modified": f"2024-01-01T00:00:{n:02d}Z",
    }


class GatedManager(RecordingWorkManager):
    """Sends block until the test opens the gate; records what was in flight."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.gate = threading.Event()
        self.sending = threading.Event()
        self.states_seen_while_blocked: list[str] = []

    def send_bundle(self, work_id: str, objects: list[Any]) -> None:
        self.sending.set()
        assert self.gate.wait(60), "test never opened the gate"
        super().send_bundle(work_id, objects)


def test_producer_keeps_adding_while_a_batch_is_sending() -> None:
    manager = GatedManager()
    processor = GenericBatchProcessor(config(), manager)
    processor.add_items([item(1), item(2)])  # batch 1 cut and handed to the sender
    assert manager.sending.wait(60)
    processor.add_items([item(3), item(4), item(5)])  # batch 2 queued, 5 pending
    assert manager.delivered == []  # nothing delivered yet, and we were not blocked
    assert "cursor" not in manager.state
    manager.gate.set()
    processor.flush()
    assert [w.name for w in manager.works.values()] == ["Batch #1", "Batch #2", "Batch #3"]
    assert manager.state["cursor"] == "2024-01-01T00:00:05Z"
    processor.close()


def _waiting_in(thread: threading.Thread, function: str) -> bool:
    """Whether ``thread`` is blocked in a ``threading`` wait called from ``function``."""
    frame = sys._current_frames().get(thread.ident or -1)
    names: list[str] = []
    while frame is not None:
        names.append(frame.f_code.co_name)
        frame = frame.f_back
    return bool(names) and names[0] == "wait" and function in names


def test_back_pressure_blocks_the_producer_beyond_the_limit() -> None:
    manager = GatedManager()
    processor = GenericBatchProcessor(config(max_in_flight_batches=1), manager)
    done = threading.Event()
    taken: list[int] = []

    def items() -> Iterator[dict[str, Any]]:
        for n in range(1, 9):  # four batches
            taken.append(n)
            yield item(n)

    def produce() -> None:
        processor.add_items(items())
        done.set()

    producer = threading.Thread(target=produce, daemon=True)
    producer.start()
    assert manager.sending.wait(60)
    # the event: the producer blocks in a wait inside add_items, or it ends (a failure)
    deadline = time.monotonic() + 60  # against a hang only
    while not done.is_set() and not _waiting_in(producer, "add_items"):
        assert time.monotonic() < deadline, "the producer neither blocked nor finished"
        time.sleep(0.001)
    assert not done.is_set(), "the producer was not held back"
    # blocked: batch 1 sending, batch 2 queued is the limit; the rest is not even read
    assert max(taken) <= 6
    assert manager.delivered == []
    assert processor.get_statistics()["current_batch_size"] <= 2
    manager.gate.set()
    producer.join(60)
    assert done.is_set()
    processor.close()
    assert len(manager.delivered_ids()) == 8


def test_failure_is_raised_at_the_next_call_and_cursor_holds() -> None:
    manager = RecordingWorkManager(fail={"send": lambda n: n == 1})
    processor = GenericBatchProcessor(config(), manager)
    processor.add_items([item(1), item(2)])
    deadline = time.monotonic() + 60  # against a hang only
    while processor.get_statistics()["batches_in_flight"]:  # the failed batch settles
        assert time.monotonic() < deadline, "the batch never settled"
        time.sleep(0.001)
    with pytest.raises(Exception, match="Batch #1"):
        processor.add_item(item(3))
    processor.add_item(item(4))  # reported once; the processor goes on
    processor.close()
    processor.update_final_state()
    assert len(processor.get_failed_items()) == 2
    assert manager.state["cursor"] == "2024-01-01T00:00:00.999999Z"  # before item 1
    assert all(w.status != "in_progress" for w in manager.works.values())


def test_flush_raises_the_pending_failure() -> None:
    manager = RecordingWorkManager(fail={"send": lambda n: True})
    processor = GenericBatchProcessor(config(), manager)
    processor.add_item(item(1))
    with pytest.raises(Exception, match="Batch #1"):
        processor.flush()
    processor.close()


def test_context_manager_stops_the_sender_thread() -> None:
    manager = RecordingWorkManager()
    before = set(threading.enumerate())
    with GenericBatchProcessor(config(), manager) as processor:
        processor.add_items(item(n) for n in range(1, 6))
        senders = {t for t in threading.enumerate() if t.name == "connector-batching-sender"}
        assert senders - before, "pipelined sending runs on its own thread"
    assert len(manager.delivered_ids()) == 5
    for thread in senders - before:
        thread.join(timeout=60)  # close() joined it already: returns at once
        assert not thread.is_alive()


def test_threads_and_pipeline_lose_and_duplicate_nothing() -> None:
    manager = RecordingWorkManager()
    processor = GenericBatchProcessor(
        config(batch_size=50, max_in_flight_batches=3, date_extraction_function=None), manager
    )

    def produce(t: int) -> None:
        for n in range(2_000):
            processor.add_item({"type": "x-item", "id": f"x-item--{t}-{n}"})

    workers = [threading.Thread(target=produce, args=(t,)) for t in range(4)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    processor.close()
    ids = manager.delivered_ids()
    assert len(ids) == 8_000 == len(set(ids))
