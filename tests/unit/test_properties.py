"""Property-based tests of the engine's invariants under random faults.

Random item streams (random dates with mixed offsets, out of order), random
batch sizes and retry budgets, and a work manager that fails at random calls
of each operation (initiate, send, close, state).  After the run:

* nothing lost: every accepted item was delivered in a completed work or is
  reported failed;
* nothing delivered twice in successful batches;
* the persisted cursor never passes an undelivered item's date;
* every initiated work is closed, one work per batch.

Each scenario runs synchronously or pipelined (``max_in_flight_batches``).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import shutil
import tempfile
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from connector_batching import GenericBatchProcessor, GenericBatchProcessorConfig
from connector_batching.checkpoint import EARLIEST
from connector_batching.dates import parse_instant
from connector_batching.dead_letters import DeadLetterStore
from tests.unit.fakes import InjectedFault, RecordingWorkManager

OFFSETS = [dt.timezone(dt.timedelta(minutes=m)) for m in (-600, -180, 0, 60, 330, 840)]

dates = st.builds(
    lambda seconds, tz: dt.datetime(2020, 1, 1, tzinfo=dt.UTC) + dt.timedelta(seconds=seconds),
    st.integers(min_value=0, max_value=10 * 24 * 3600),
    st.sampled_from(OFFSETS),
).flatmap(lambda d: st.sampled_from(OFFSETS).map(lambda tz: d.astimezone(tz).isoformat()))


def isolated_failures(max_call: int = 60) -> st.SearchStrategy[frozenset[int]]:
    """Random failing call numbers, never two in a row (a persistent outage cannot be won)."""
    return st.sets(st.integers(1, max_call), max_size=12).map(
        lambda calls: frozenset(c for c in calls if c - 1 not in calls)
    )


@st.composite
def scenarios(draw: st.DrawFn) -> dict[str, Any]:
    items = draw(
        st.lists(st.one_of(st.none(), dates), min_size=0, max_size=80).map(
            lambda ds: [
                {
                    "type": "x-item",
                    "id": f"x-item--{n:08d}-0000-4000-8000-000000000000",
                    **({"modified": d} if d is not None else {}),
                }
                for n, d in enumerate(ds)
            ]
        )
    )
    return {
        "items": items,
        "batch_size": draw(st.integers(1, 12)),
        "max_retries": draw(st.integers(0, 3)),
        "faults": {
            op: draw(
                isolated_failures()
                if op in ("close", "state")
                else st.sets(st.integers(1, 40), max_size=15)
            )
            for op in ("initiate", "send", "close", "state")
        },
        "group_every": draw(st.integers(0, 5)),
        "max_in_flight_batches": draw(st.sampled_from([0, 0, 1, 3])),
    }


class Group:
    def __init__(self, members: list[dict[str, Any]]) -> None:
        self.members = members

    def to_stix(self) -> list[dict[str, Any]]:
        return self.members


def run(scenario: dict[str, Any]) -> tuple[RecordingWorkManager, GenericBatchProcessor, list[Any]]:
    faults = scenario["faults"]
    manager = RecordingWorkManager(
        fail={op: (lambda n, calls=calls: n in calls) for op, calls in faults.items()}
    )
    config = GenericBatchProcessorConfig(
        batch_size=scenario["batch_size"],
        work_name_template="Batch #{batch_num}",
        state_key="cursor",
        entity_type="x-item",
        display_name="items",
        max_retries=scenario["max_retries"],
        retry_delay=0.0,
        date_extraction_function=lambda obj: obj.get("modified"),
        max_in_flight_batches=scenario["max_in_flight_batches"],
    )
    processor = GenericBatchProcessor(config, manager)
    # Some consecutive items are added as one group (a mapper returning a list).
    units: list[Any] = []
    items, every = scenario["items"], scenario["group_every"]
    i = 0
    while i < len(items):
        if every and i % every == 0 and i + 1 < len(items):
            units.append(Group(items[i : i + 2]))
            i += 2
        else:
            units.append(items[i])
            i += 1
    for unit in units:
        with contextlib.suppress(Exception):  # a failed batch keeps its items as failed
            processor.add_item(unit)
    with contextlib.suppress(Exception):
        processor.flush()
    with contextlib.suppress(Exception):  # pipelined: a failure not yet reported
        processor.close()
    processor.update_final_state()
    return manager, processor, units


def failed_objects(processor: GenericBatchProcessor) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for payload in processor.get_failed_items():
        out.extend(payload if isinstance(payload, list) else [payload])
    return out


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenarios())
def test_invariants_hold_under_random_faults(scenario: dict[str, Any]) -> None:
    manager, processor, _units = run(scenario)
    all_ids = {obj["id"] for obj in scenario["items"]}
    delivered = Counter(manager.delivered_ids())
    failed = failed_objects(processor)
    failed_ids = {obj["id"] for obj in failed}

    # Nothing delivered twice in successful batches.
    assert all(count == 1 for count in delivered.values()), delivered.most_common(3)
    # Nothing lost: delivered or reported failed, never both.
    assert set(delivered) | failed_ids == all_ids
    assert not set(delivered) & failed_ids

    # Every work closed; one work per batch; a completed work got exactly one send.
    stats = processor.get_statistics()
    assert all(w.status != "in_progress" for w in manager.works.values())
    completed = [w for w in manager.works.values() if w.status == "complete"]
    assert len(completed) == stats["total_batches_processed"]
    assert len(manager.works) - len(completed) <= stats["failed_batches"]
    assert all(w.sends == 1 for w in completed)

    # The persisted cursor never passes an undelivered item's date ...
    cursor = parse_instant(manager.state.get("cursor"))
    undelivered = [parse_instant(o["modified"]) for o in failed if "modified" in o]
    if cursor is not None and undelivered:
        assert cursor < min(d for d in undelivered if d is not None)
    # ... and never passes what was delivered.
    delivered_dates = [
        parse_instant(o["modified"])
        for o in scenario["items"]
        if o["id"] in delivered and "modified" in o
    ]
    if cursor is not None:
        assert delivered_dates and cursor <= max(d for d in delivered_dates if d is not None)
    # With everything delivered, the cursor is the latest date.
    if not failed and delivered_dates:
        assert cursor == max(d for d in delivered_dates if d is not None)


@settings(max_examples=150, deadline=None)
@given(scenarios())
def test_statistics_add_up(scenario: dict[str, Any]) -> None:
    _manager, processor, units = run(scenario)
    stats = processor.get_statistics()
    assert stats["total_items_accepted"] == len(units)
    assert stats["total_items_processed"] + stats["failed_items_count"] == len(units)
    assert stats["current_batch_size"] == 0


# --------------------------------------------------------------- state machine


class FaultyManager(RecordingWorkManager):
    """Fails or interrupts the *next* call of an operation on request, and checks
    every cursor write against the items added and not yet delivered."""

    def __init__(self) -> None:
        super().__init__()
        self.next_fault: dict[str, type[BaseException]] = {}
        self.outage: set[str] = set()  # operations failing until the outage ends
        self.pending: dict[str, dt.datetime | None] = {}
        self.completed: set[str] = set()  # ids delivered in completed works
        self.violations: list[str] = []

    def added(self, objects: list[dict[str, Any]]) -> None:
        """The call that added ``objects`` returned: from now on no cursor write
        may pass one of them until it is delivered."""
        with self.lock:
            for obj in objects:
                if obj["id"] not in self.completed:
                    self.pending[obj["id"]] = parse_instant(obj["modified"])

    def _call(self, operation: str) -> None:
        with self.lock:
            fault = self.next_fault.pop(operation, None)
        if fault is not None:
            raise fault(f"{operation} {fault.__name__}")
        if operation in self.outage:
            raise InjectedFault(f"{operation} is down")
        super()._call(operation)

    def work_to_process(
        self, work_id: str, in_error: bool = False, message: str | None = None
    ) -> None:
        super().work_to_process(work_id, in_error, message)
        if not in_error:
            with self.lock:
                for wid, objects in self.delivered:
                    if wid == work_id:
                        for obj in objects:
                            self.completed.add(obj["id"])
                            self.pending.pop(obj["id"], None)

    def update_state(self, state_key: str, date_str: str) -> None:
        cursor = parse_instant(date_str)
        assert cursor is not None
        with self.lock:
            # Held at the earliest instant there is, a cursor cannot go further back.
            passed = [
                k
                for k, d in self.pending.items()
                if d is not None and d <= cursor and not d == cursor == EARLIEST
            ]
        if passed:
            self.violations.append(f"{date_str} passes undelivered {passed[:2]}")
        super().update_state(state_key, date_str)


class ProcessorMachine(RuleBasedStateMachine):
    """Adversarial moves through the public API; after each, nothing is lost or
    doubled, and no cursor write ever passed an added, undelivered item."""

    def __init__(self) -> None:
        super().__init__()
        self.directory = tempfile.mkdtemp(prefix="cb-machine-")
        self.manager = FaultyManager()
        self.accepted: set[str] = set()
        self.discarded: set[str] = set()
        self.next_id = 0
        self.processor: GenericBatchProcessor | None = None

    @initialize(
        batch_size=st.integers(1, 5),
        in_flight=st.sampled_from([0, 0, 2]),
        retries=st.integers(0, 2),
    )
    def start(self, batch_size: int, in_flight: int, retries: int) -> None:
        self.settings = {"batch_size": batch_size, "in_flight": in_flight, "retries": retries}
        self.processor = self._new_processor()

    def _new_processor(self) -> GenericBatchProcessor:
        config = GenericBatchProcessorConfig(
            batch_size=self.settings["batch_size"],
            work_name_template="Batch #{batch_num}",
            state_key="cursor",
            entity_type="x-item",
            display_name="items",
            max_retries=self.settings["retries"],
            retry_delay=0.0,
            date_extraction_function=lambda obj: obj.get("modified"),
            max_in_flight_batches=self.settings["in_flight"],
            dead_letter_path=os.path.join(self.directory, "dead.sqlite"),
        )
        return GenericBatchProcessor(config, self.manager)

    def _items(self, dates: list[int]) -> list[dict[str, Any]]:
        out = []
        for seconds in dates:
            self.next_id += 1
            # -1: the earliest instant there is (Go's zero time, .NET's MinValue)
            date = (
                dt.datetime.min.replace(tzinfo=dt.UTC)
                if seconds < 0
                else dt.datetime(2024, 1, 1, tzinfo=dt.UTC) + dt.timedelta(seconds=seconds)
            )
            obj = {
                "type": "x-item",
                "id": f"x-item--{self.next_id:08d}-0000-4000-8000-000000000000",
                "modified": date.isoformat(),
            }
            out.append(obj)
        return out

    def _add(self, objects: list[dict[str, Any]], bulk: bool) -> None:
        """Hand ``objects`` to the processor (one call, or one call each); every
        object taken is accepted (a dict with id and type always is)."""
        processor = self.processor
        assert processor is not None
        taken: list[dict[str, Any]] = []

        def consumed() -> Iterator[dict[str, Any]]:
            for obj in objects:
                taken.append(obj)
                yield obj

        try:
            if bulk:
                with contextlib.suppress(Exception, KeyboardInterrupt):
                    processor.add_items(consumed())
            else:
                for obj in consumed():
                    with contextlib.suppress(Exception, KeyboardInterrupt):
                        processor.add_item(obj)
        finally:
            with self.manager.lock:
                self.accepted.update(obj["id"] for obj in taken)
            self.manager.added(taken)

    def _quietly(self, call: Callable[[], Any]) -> None:
        with contextlib.suppress(Exception, KeyboardInterrupt):
            call()

    @rule(dates=st.lists(st.integers(-1, 3600), min_size=1, max_size=6))
    def add_one_by_one(self, dates: list[int]) -> None:
        assert self.processor is not None
        self._add(self._items(dates), bulk=False)

    @rule(dates=st.lists(st.integers(0, 3600), min_size=1, max_size=12))
    def add_in_bulk(self, dates: list[int]) -> None:
        assert self.processor is not None
        items = self._items(dates)

        self._add(items, bulk=True)

    @rule(threads=st.integers(2, 3), dates=st.lists(st.integers(0, 3600), min_size=3, max_size=9))
    def add_from_threads(self, threads: int, dates: list[int]) -> None:
        assert self.processor is not None
        chunks = [self._items(dates) for _ in range(threads)]

        def produce(chunk: list[dict[str, Any]]) -> None:
            self._add(chunk, bulk=True)

        workers = [threading.Thread(target=produce, args=(c,)) for c in chunks]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join(timeout=60)
            assert not worker.is_alive(), "a producer thread is stuck"

    @rule(operation=st.sampled_from(["initiate", "send", "close", "state"]))
    def fail_next_call(self, operation: str) -> None:
        self.manager.next_fault[operation] = InjectedFault

    @rule(operation=st.sampled_from(["initiate", "send", "close", "state"]))
    def interrupt_next_call(self, operation: str) -> None:
        self.manager.next_fault[operation] = KeyboardInterrupt

    @rule(operation=st.sampled_from(["initiate", "send"]), down=st.booleans())
    def outage(self, operation: str, down: bool) -> None:
        (self.manager.outage.add if down else self.manager.outage.discard)(operation)

    @rule()
    def flush(self) -> None:
        assert self.processor is not None
        self._quietly(self.processor.flush)

    @rule()
    def retry_failed(self) -> None:
        assert self.processor is not None
        self._quietly(self.processor.retry_failed)

    @rule()
    def clear_failed_items(self) -> None:
        assert self.processor is not None
        self._quietly(self.processor.flush)  # settle in-flight batches first
        for payload in self.processor.get_failed_items():
            self.discarded.add(payload["id"])
        for _row, payload, _span in DeadLetterStore(self._dead_path()).load("cursor"):
            self.discarded.add(payload["id"])
        self.processor.clear_failed_items()
        left = {p["id"] for _r, p, _s in DeadLetterStore(self._dead_path()).load("cursor")}
        assert not left & self.discarded, "cleared dead letters are still stored"
        assert self.processor.get_statistics()["dead_letters"] == 0
        with self.manager.lock:
            for oid in self.discarded:
                self.manager.pending.pop(oid, None)

    @rule()
    def restart(self) -> None:
        """The process stops (closing the processor) and a new one starts."""
        assert self.processor is not None
        self.manager.next_fault.clear()
        self._quietly(self.processor.close)
        self.processor.update_final_state()
        self.processor = self._new_processor()

    @precondition(lambda self: self.settings["in_flight"] > 0)
    @rule(count=st.integers(1, 12))
    def close_while_a_producer_adds(self, count: int) -> None:
        assert self.processor is not None
        items = self._items(list(range(count)))
        done = threading.Event()

        def produce() -> None:
            try:
                self._add(items, bulk=False)
            finally:
                done.set()

        producer = threading.Thread(target=produce)
        producer.start()
        while not done.is_set():
            self._quietly(self.processor.close)
        producer.join(timeout=60)
        assert not producer.is_alive(), "the producer is stuck behind a stranded batch"

    def _dead_path(self) -> str:
        return os.path.join(self.directory, "dead.sqlite")

    @invariant()
    def no_cursor_write_passed_an_undelivered_item(self) -> None:
        assert self.manager.violations == []

    def teardown(self) -> None:
        if self.processor is None:
            shutil.rmtree(self.directory, ignore_errors=True)
            return
        try:
            # Settle: faults off, everything delivered or failed, then check the ledger.
            self.manager.next_fault.clear()
            self.manager.outage.clear()
            self._quietly(self.processor.close)
            self._quietly(self.processor.flush)
            self.processor.update_final_state()
            delivered = Counter(self.manager.delivered_ids())
            assert all(c == 1 for c in delivered.values()), delivered.most_common(2)
            failed = {p["id"] for p in self.processor.get_failed_items()}
            dead = {p["id"] for _r, p, _s in DeadLetterStore(self._dead_path()).load("cursor")}
            kept = set(delivered) | failed | dead | self.discarded
            assert self.accepted <= kept, sorted(self.accepted - kept)[:3]
            assert not set(delivered) & failed
            assert all(w.status != "in_progress" for w in self.manager.works.values())
            assert self.manager.violations == []
        finally:
            shutil.rmtree(self.directory, ignore_errors=True)


ProcessorMachine.TestCase.settings = settings(
    max_examples=int(os.environ.get("STATE_MACHINE_EXAMPLES", "60")),
    stateful_step_count=15,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
test_processor_state_machine = ProcessorMachine.TestCase
