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
from collections import Counter
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from connector_batching import GenericBatchProcessor, GenericBatchProcessorConfig
from connector_batching.cursor import parse_instant
from tests.unit.fakes import RecordingWorkManager

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
