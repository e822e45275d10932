"""The engine's guarantees (DESIGN §3), one behaviour per test."""

from __future__ import annotations

import datetime as dt
import threading
import tracemalloc
from typing import Any

import pytest
import stix2

from connector_batching import GenericBatchProcessor, GenericBatchProcessorConfig
from tests.unit.fakes import InjectedFault, RecordingWorkManager, member_ids

MARKING = stix2.TLP_RED
AUTHOR = stix2.Identity(
    id="identity--d1b6ff6a-27a2-5f8a-9c52-cd5f5a0e7c11",
    name="Example Feed",
    identity_class="organization",
)


def config(**overrides: Any) -> GenericBatchProcessorConfig:
    base: dict[str, Any] = {
        "batch_size": 3,
        "work_name_template": "Batch #{batch_num}",
        "state_key": "cursor",
        "entity_type": "indicators",
        "display_name": "indicators",
    }
    return GenericBatchProcessorConfig(**{**base, **overrides})


def item(n: int, date: str | None = None, **extra: Any) -> dict[str, Any]:
    obj: dict[str, Any] = {"type": "x-item", "id": f"x-item--{n:08d}-0000-4000-8000-000000000000"}
    if date is not None:
        obj["modified"] = date
    obj.update(extra)
    return obj


def by_modified(obj: Any) -> Any:
    return obj.get("modified") if isinstance(obj, dict) else None


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


# ------------------------------------------------------------------- cursor


def test_dates_compare_as_instants_and_cursor_is_utc_z() -> None:
    manager = RecordingWorkManager()
    processor = GenericBatchProcessor(
        config(batch_size=10, date_extraction_function=by_modified), manager
    )
    # 10:00+05:00 is 05:00Z: earlier than 06:00Z although it sorts later as text.
    processor.add_item(item(1, "2024-03-01T10:00:00+05:00"))
    processor.add_item(item(2, "2024-03-01T06:00:00Z"))
    processor.add_item(item(3, "2024-03-01T01:30:00-03:00"))  # 04:30Z
    processor.flush()
    processor.update_final_state()  # not sorted: the cursor moves at the end of the run
    assert manager.state["cursor"] == "2024-03-01T06:00:00Z"
    assert processor.get_statistics()["latest_date"] == "2024-03-01T06:00:00Z"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (dt.datetime(2024, 5, 1, 12, 0), "2024-05-01T12:00:00Z"),  # naive = UTC
        (
            dt.datetime(2024, 5, 1, 14, 0, tzinfo=dt.timezone(dt.timedelta(hours=2))),
            "2024-05-01T12:00:00Z",
        ),
        (1714564800, "2024-05-01T12:00:00Z"),  # epoch seconds
        (1714564800000, "2024-05-01T12:00:00Z"),  # epoch milliseconds
        ("2024-05-01 12:00:00", "2024-05-01T12:00:00Z"),  # naive string = UTC
        ("2024-05-01T12:00:00.250Z", "2024-05-01T12:00:00.250000Z"),
    ],
)
def test_date_forms(value: Any, expected: str) -> None:
    manager = RecordingWorkManager()
    processor = GenericBatchProcessor(
        config(batch_size=1, date_extraction_function=lambda _obj: value), manager
    )
    processor.add_item(item(1))
    assert manager.state["cursor"] == expected


def test_checkpoint_after_each_delivered_batch() -> None:
    manager = RecordingWorkManager()
    processor = GenericBatchProcessor(
        config(batch_size=2, date_extraction_function=by_modified), manager
    )
    for n in range(6):
        processor.add_item(item(n, f"2024-01-0{n + 1}T00:00:00Z"))
    assert manager.state_history == [
        ("cursor", "2024-01-02T00:00:00Z"),
        ("cursor", "2024-01-04T00:00:00Z"),
        ("cursor", "2024-01-06T00:00:00Z"),
    ]


def test_failed_batch_holds_the_cursor_below_its_earliest_date() -> None:
    manager = RecordingWorkManager(fail={"send": lambda n: n == 2})
    processor = GenericBatchProcessor(
        config(batch_size=2, date_extraction_function=by_modified), manager
    )
    processor.add_items([item(1, "2024-01-01T00:00:00Z"), item(2, "2024-01-02T00:00:00Z")])
    with pytest.raises(Exception, match="Batch #2"):
        processor.add_items([item(3, "2024-01-03T00:00:00Z"), item(4, "2024-01-04T00:00:00Z")])
    processor.add_items([item(5, "2024-01-05T00:00:00Z"), item(6, "2024-01-06T00:00:00Z")])
    processor.update_final_state()
    # Batch 3 was delivered, but batch 2 (from 01-03) was not: the cursor stays before it.
    assert manager.state["cursor"] == "2024-01-02T23:59:59.999999Z"
    assert processor.get_statistics()["failed_items_count"] == 2
    processor.clear_failed_items()
    processor.update_final_state()
    assert manager.state["cursor"] == "2024-01-06T00:00:00Z"


def test_cursor_moves_back_when_an_older_item_fails_after_a_newer_checkpoint() -> None:
    manager = RecordingWorkManager(fail={"send": lambda n: n == 2})
    processor = GenericBatchProcessor(
        config(batch_size=1, date_extraction_function=by_modified), manager
    )
    processor.add_item(item(1, "2024-01-10T00:00:00Z"))
    assert manager.state["cursor"] == "2024-01-10T00:00:00Z"
    with pytest.raises(Exception, match="Batch #2"):
        processor.add_item(item(2, "2024-01-05T00:00:00Z"))  # out of order, then lost
    # Out of order: back to the cursor stored before the run (none: the earliest instant).
    assert manager.state["cursor"] == "0001-01-01T00:00:00Z"
    processor.update_final_state()  # the run is over: just before the lost item
    assert manager.state["cursor"] == "2024-01-04T23:59:59.999999Z"


def test_unflushed_items_hold_the_final_cursor() -> None:
    manager = RecordingWorkManager()
    processor = GenericBatchProcessor(
        config(batch_size=2, auto_process=False, date_extraction_function=by_modified), manager
    )
    processor.add_item(item(1, "2024-01-01T00:00:00Z"))
    processor.update_final_state()
    assert "cursor" not in manager.state


def test_without_date_extraction_final_state_is_now() -> None:
    manager = RecordingWorkManager()
    processor = GenericBatchProcessor(config(), manager)
    before = dt.datetime.now(dt.UTC)
    processor.add_item(item(1))
    processor.flush()
    processor.update_final_state()
    written = dt.datetime.fromisoformat(manager.state["cursor"].replace("Z", "+00:00"))
    assert before - dt.timedelta(seconds=1) <= written <= dt.datetime.now(dt.UTC)
    assert manager.state["cursor"].endswith("Z")


def test_with_date_extraction_and_nothing_dated_the_stored_cursor_is_kept() -> None:
    manager = RecordingWorkManager(state={"cursor": "2023-01-01T00:00:00Z"})
    processor = GenericBatchProcessor(config(date_extraction_function=by_modified), manager)
    processor.update_final_state()
    assert manager.state == {"cursor": "2023-01-01T00:00:00Z"}


def test_date_extraction_errors_count_and_keep_the_item() -> None:
    manager = RecordingWorkManager()
    processor = GenericBatchProcessor(
        config(batch_size=2, date_extraction_function=lambda obj: obj["modified"]), manager
    )
    assert processor.add_item(item(1))  # KeyError: accepted, undated
    assert processor.add_item(item(2, "not a date at all"))
    stats = processor.get_statistics()
    assert stats["date_errors"] == 2 and stats["total_items_sent"] == 2


def test_set_latest_date() -> None:
    manager = RecordingWorkManager()
    processor = GenericBatchProcessor(config(date_extraction_function=by_modified), manager)
    processor.set_latest_date("2024-02-01T00:00:00+01:00")
    processor.set_latest_date("2024-01-01T00:00:00Z")  # earlier: ignored
    processor.update_final_state()
    assert manager.state["cursor"] == "2024-01-31T23:00:00Z"
    with pytest.raises(ValueError):
        processor.set_latest_date("yesterday-ish")


# ---------------------------------------------------------------- retries


def test_retry_reuses_the_work_and_backs_off_exponentially() -> None:
    manager = RecordingWorkManager(fail={"send": lambda n: n <= 3})
    clock = FakeClock()
    processor = GenericBatchProcessor(
        config(max_retries=5, retry_delay=0.5), manager, clock=clock, sleep=clock.sleep
    )
    processor.add_items([item(1), item(2), item(3)])
    assert clock.sleeps == [0.5, 1.0, 2.0]
    assert list(manager.works) == ["work-1"]
    assert manager.works["work-1"].status == "complete"
    assert processor.get_statistics()["retries"] == 3


def test_initiate_failure_is_retried_without_orphan_works() -> None:
    manager = RecordingWorkManager(fail={"initiate": lambda n: n == 1})
    processor = GenericBatchProcessor(config(max_retries=1, retry_delay=0), manager)
    processor.add_items([item(1), item(2), item(3)])
    assert [w.status for w in manager.works.values()] == ["complete"]


def test_close_failure_is_retried_without_sending_twice() -> None:
    manager = RecordingWorkManager(fail={"close": lambda n: n == 1})
    processor = GenericBatchProcessor(config(max_retries=2, retry_delay=0), manager)
    processor.add_items([item(1), item(2), item(3)])
    assert manager.calls["send"] == 1
    assert manager.works["work-1"].status == "complete"


def test_delivered_batch_whose_close_keeps_failing_is_not_lost_or_resent() -> None:
    manager = RecordingWorkManager(fail={"close": lambda n: n <= 2})
    processor = GenericBatchProcessor(config(max_retries=0), manager)
    processor.add_items([item(1), item(2), item(3)])
    # The bundle went out; the last-resort close marks the work in error.
    assert manager.calls["send"] == 1
    assert manager.works["work-1"].status == "error"
    assert processor.get_statistics()["failed_items_count"] == 0


def test_max_retries_zero_is_one_attempt() -> None:
    manager = RecordingWorkManager(fail={"send": lambda n: True})
    processor = GenericBatchProcessor(config(), manager)
    with pytest.raises(Exception, match="after 1 attempt"):
        processor.add_items([item(1), item(2), item(3)])
    assert manager.calls["send"] == 1


def test_work_timeout_bounds_all_attempts() -> None:
    manager = RecordingWorkManager(fail={"send": lambda n: True})
    clock = FakeClock()
    processor = GenericBatchProcessor(
        config(max_retries=20, retry_delay=1.0, work_timeout=10.0),
        manager,
        clock=clock,
        sleep=clock.sleep,
    )
    with pytest.raises(Exception, match="failed after 4 attempt"):
        processor.add_items([item(1), item(2), item(3)])
    assert clock.sleeps == [1.0, 2.0, 4.0]  # the next 8 s delay would pass 10 s
    assert manager.works["work-1"].status == "error"


def test_retry_max_delay_caps_backoff() -> None:
    manager = RecordingWorkManager(fail={"send": lambda n: n <= 4})
    clock = FakeClock()
    processor = GenericBatchProcessor(
        config(max_retries=4, retry_delay=1.0, retry_max_delay=3.0),
        manager,
        clock=clock,
        sleep=clock.sleep,
    )
    processor.add_items([item(1), item(2), item(3)])
    assert clock.sleeps == [1.0, 2.0, 3.0, 3.0]


def test_retry_jitter_spreads_delays() -> None:
    manager = RecordingWorkManager(fail={"send": lambda n: n <= 4})
    clock = FakeClock()
    processor = GenericBatchProcessor(
        config(max_retries=4, retry_delay=1.0, retry_jitter=True),
        manager,
        clock=clock,
        sleep=clock.sleep,
    )
    processor.add_items([item(1), item(2), item(3)])
    for n, slept in enumerate(clock.sleeps, start=1):
        full = 2.0 ** (n - 1)
        assert full / 2 <= slept <= full
    assert len(set(clock.sleeps)) > 1


def test_exception_class_without_keyword_arguments() -> None:
    class PlainError(Exception):
        pass

    manager = RecordingWorkManager(fail={"send": lambda n: True})
    processor = GenericBatchProcessor(config(exception_class=PlainError), manager)
    with pytest.raises(PlainError) as info:
        processor.add_items([item(1), item(2), item(3)])
    assert info.value.batch_number == 1  # type: ignore[attr-defined]
    assert isinstance(info.value.__cause__, InjectedFault)


def test_interrupt_mid_send_closes_the_work_and_keeps_items() -> None:
    class Interrupting(RecordingWorkManager):
        def send_bundle(self, work_id: str, objects: list[Any]) -> None:
            raise KeyboardInterrupt

    manager = Interrupting()
    processor = GenericBatchProcessor(config(), manager)
    with pytest.raises(KeyboardInterrupt):
        processor.add_items([item(1), item(2), item(3)])
    assert manager.works["work-1"].status == "error"
    assert "interrupted" in (manager.works["work-1"].message or "")
    assert len(processor.get_failed_items()) == 3


def test_retry_failed_redelivers() -> None:
    manager = RecordingWorkManager(fail={"send": lambda n: n == 1})
    processor = GenericBatchProcessor(config(date_extraction_function=by_modified), manager)
    with pytest.raises(Exception, match="Batch #1"):
        processor.add_items([item(n, f"2024-01-0{n}T00:00:00Z") for n in (1, 2, 3)])
    assert processor.retry_failed() == 3
    processor.flush()
    assert sorted(manager.delivered_ids()) == sorted(member_ids([item(1), item(2), item(3)]))
    assert processor.get_failed_items() == []
    assert manager.state["cursor"] == "2024-01-03T00:00:00Z"


# ----------------------------------------------------------- batch shaping


def test_empty_batch_behaviors() -> None:
    manager = RecordingWorkManager()
    assert (
        GenericBatchProcessor(config(empty_batch_behavior="skip"), manager).process_current_batch()
        is None
    )
    assert manager.state == {} and manager.works == {}
    GenericBatchProcessor(
        config(empty_batch_behavior="update_state"), manager
    ).process_current_batch()
    assert "cursor" in manager.state and manager.works == {}

    class Empty(Exception):
        pass

    with pytest.raises(Empty, match="empty"):
        GenericBatchProcessor(
            config(empty_batch_behavior="error", exception_class=Empty), manager
        ).process_current_batch()


def test_flush_of_an_empty_batch_does_nothing() -> None:
    manager = RecordingWorkManager()
    processor = GenericBatchProcessor(config(empty_batch_behavior="error"), manager)
    assert processor.flush() is None
    assert manager.works == {}


def test_max_batch_age_processes_a_slow_batch() -> None:
    manager = RecordingWorkManager()
    clock = FakeClock()
    processor = GenericBatchProcessor(
        config(batch_size=100, max_batch_age=30.0), manager, clock=clock, sleep=clock.sleep
    )
    processor.add_item(item(1))
    clock.now += 10
    processor.add_item(item(2))
    assert manager.delivered == []
    assert processor.process_if_due() is None
    clock.now += 25
    processor.add_item(item(3))  # the batch's oldest item is 35 s old
    assert [len(objs) for _, objs in manager.delivered] == [3]
    processor.add_item(item(4))
    clock.now += 31
    assert processor.process_if_due() == "work-2"


class Group:
    """A mapper producing several objects that must stay together."""

    def __init__(self, n: int) -> None:
        self.n = n

    def to_stix(self) -> list[dict[str, Any]]:
        return [item(self.n * 10 + k, created_by_ref=AUTHOR.id) for k in range(3)]


def test_groups_are_never_split_and_count_as_one_item() -> None:
    manager = RecordingWorkManager()
    processor = GenericBatchProcessor(config(batch_size=2), manager)
    processor.add_items([Group(n) for n in range(5)])
    processor.flush()
    sizes = [len([o for o in objs if o.get("type") == "x-item"]) for _, objs in manager.delivered]
    assert sizes == [6, 6, 3]
    assert processor.get_statistics()["total_items_sent"] == 5


def test_every_bundle_carries_the_marking_and_author_it_references() -> None:
    manager = RecordingWorkManager()
    processor = GenericBatchProcessor(config(batch_size=2), manager)
    processor.add_item(MARKING)
    processor.add_item(AUTHOR)
    indicators = [
        stix2.Indicator(
            pattern=f"[url:value = 'http://{n}.example.com/']",
            pattern_type="stix",
            created_by_ref=AUTHOR.id,
            object_marking_refs=[MARKING.id],
        )
        for n in range(7)
    ]
    processor.add_items(indicators)
    processor.flush()
    for _, objects in manager.delivered:
        ids = {o["id"] for o in objects}
        for obj in objects:
            for ref in obj.get("object_marking_refs", []):
                assert ref in ids
            if "created_by_ref" in obj:
                assert obj["created_by_ref"] in ids
    assert processor.get_statistics()["unresolved_references"] == 0


def test_standard_tlp_markings_are_added_even_if_never_seen() -> None:
    manager = RecordingWorkManager()
    processor = GenericBatchProcessor(config(batch_size=1), manager)
    processor.add_item(item(1, object_marking_refs=[stix2.TLP_AMBER.id]))
    objects = manager.delivered[0][1]
    assert objects[0]["id"] == stix2.TLP_AMBER.id


def test_relationship_endpoints_from_earlier_batches_travel_along() -> None:
    manager = RecordingWorkManager()
    processor = GenericBatchProcessor(config(batch_size=1), manager)
    source, target = item(1), item(2)
    processor.add_items([source, target])
    rel = {
        "type": "relationship",
        "id": "relationship--00000000-0000-4000-8000-000000000009",
        "relationship_type": "related-to",
        "source_ref": source["id"],
        "target_ref": target["id"],
    }
    processor.add_item(rel)
    assert {o["id"] for o in manager.delivered[-1][1]} == {source["id"], target["id"], rel["id"]}


def test_reference_cache_is_bounded_but_markings_are_pinned() -> None:
    manager = RecordingWorkManager()
    processor = GenericBatchProcessor(config(batch_size=50, reference_cache_size=100), manager)
    processor.add_item(AUTHOR)
    processor.add_items(item(n) for n in range(5000))
    processor.flush()
    processor.add_item(item(99999, created_by_ref=AUTHOR.id))
    processor.add_item(item(99998, target_ref=item(0)["id"]))  # evicted long ago
    processor.flush()
    ids = {o["id"] for o in manager.delivered[-1][1]}
    assert AUTHOR.id in ids and item(0)["id"] not in ids
    assert processor.get_statistics()["unresolved_references"] == 1


# ---------------------------------------------------------------- inputs


def test_bad_items_are_counted_never_raised() -> None:
    class Broken:
        def to_stix(self) -> Any:
            raise RuntimeError("mapper bug")

    class Nothing:
        def to_stix(self) -> list[Any]:
            return []

    processor = GenericBatchProcessor(config(), RecordingWorkManager())
    bad = [None, 42, "text", {"id": "x"}, {"type": "x"}, Broken(), Nothing(), object()]
    assert processor.add_items(bad) == 0
    stats = processor.get_statistics()
    assert stats["rejected_items"] == len(bad)
    assert stats["rejected_by_reason"] == {"not_stix": 6, "conversion_failed": 2}


def test_validation_function_raising_rejects_the_item() -> None:
    def explode(obj: Any) -> bool:
        raise ValueError("boom")

    processor = GenericBatchProcessor(config(validation_function=explode), RecordingWorkManager())
    assert processor.add_item(item(1)) is False
    assert processor.get_statistics()["rejected_by_reason"] == {"validation_error": 1}


def test_a_group_is_rejected_when_any_member_is_invalid() -> None:
    processor = GenericBatchProcessor(
        config(validation_function=lambda obj: obj["id"] != item(11)["id"]),
        RecordingWorkManager(),
    )
    assert processor.add_item(Group(1)) is False
    assert processor.add_item(Group(2)) is True


def test_manager_missing_methods_is_refused() -> None:
    class Half:
        def initiate_work(self, work_name: str, entity_type: str) -> str:
            return "w"

    with pytest.raises(TypeError, match="send_bundle, work_to_process, update_state"):
        GenericBatchProcessor(config(), Half())


# --------------------------------------------------------- context manager


def test_context_manager_flushes_and_saves_state() -> None:
    manager = RecordingWorkManager()
    with GenericBatchProcessor(config(date_extraction_function=by_modified), manager) as p:
        p.add_items([item(1, "2024-01-01T00:00:00Z"), item(2, "2024-01-02T00:00:00Z")])
    assert len(manager.delivered_ids()) == 2
    assert manager.state["cursor"] == "2024-01-02T00:00:00Z"


def test_context_manager_on_error_flushes_then_reraises() -> None:
    manager = RecordingWorkManager()
    processor = GenericBatchProcessor(config(date_extraction_function=by_modified), manager)
    with pytest.raises(RuntimeError, match="source died"), processor as p:
        p.add_item(item(1, "2024-01-01T00:00:00Z"))
        raise RuntimeError("source died")
    assert len(manager.delivered_ids()) == 1
    assert manager.state["cursor"] == "2024-01-01T00:00:00Z"


def test_context_manager_flush_failure_keeps_cursor_safe_and_raises() -> None:
    manager = RecordingWorkManager(fail={"send": lambda n: n == 2})
    with (
        pytest.raises(Exception, match="Batch #2"),
        GenericBatchProcessor(
            config(batch_size=2, date_extraction_function=by_modified), manager
        ) as p,
    ):
        p.add_items([item(n, f"2024-01-0{n}T00:00:00Z") for n in (1, 2, 3)])
    assert manager.state["cursor"] == "2024-01-02T00:00:00Z"
    assert all(w.status != "in_progress" for w in manager.works.values())


# ------------------------------------------------------ threads and memory


def test_several_producer_threads_lose_and_duplicate_nothing() -> None:
    manager = RecordingWorkManager()
    processor = GenericBatchProcessor(config(batch_size=97), manager)
    per_thread, threads = 5_000, 4

    def produce(t: int) -> None:
        for n in range(per_thread):
            processor.add_item(item(t * per_thread + n))

    workers = [threading.Thread(target=produce, args=(t,)) for t in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    processor.flush()
    ids = manager.delivered_ids()
    assert len(ids) == per_thread * threads
    assert len(set(ids)) == len(ids)
    assert all(len(objs) <= 97 for _, objs in manager.delivered)


class CountingManager:
    """Keeps only counts, so memory measures the processor alone."""

    def __init__(self) -> None:
        self.sent = 0
        self.n = 0

    def initiate_work(self, work_name: str, entity_type: str) -> str:
        self.n += 1
        return str(self.n)

    def send_bundle(self, work_id: str, objects: list[Any]) -> None:
        self.sent += len(objects)

    def work_to_process(self, work_id: str) -> None:
        pass

    def update_state(self, state_key: str, date_str: str) -> None:
        pass


def test_memory_is_bounded_by_batch_and_cache_not_stream_length() -> None:
    def stream(count: int) -> Any:
        for n in range(count):
            yield {"type": "x-item", "id": f"x-item--{n}", "modified": "2024-01-01T00:00:00Z"}

    def peak(count: int) -> int:
        manager = CountingManager()
        processor = GenericBatchProcessor(
            config(batch_size=500, reference_cache_size=1_000), manager
        )
        tracemalloc.start()
        processor.add_items(stream(count))
        processor.flush()
        _, top = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        assert manager.sent == count
        return top

    small, large = peak(20_000), peak(200_000)
    assert large < small * 1.5  # ten times the stream, about the same memory
    assert large < 8 * 1024 * 1024


def test_errors_marked_not_retryable_fail_at_once() -> None:
    class TooBig(ValueError):
        retryable = False

    class Refusing(RecordingWorkManager):
        def send_bundle(self, work_id: str, objects: list[Any]) -> None:
            self._call("send")
            raise TooBig("this batch can never be sent")

    manager = Refusing()
    processor = GenericBatchProcessor(config(max_retries=5, retry_delay=0), manager)
    with pytest.raises(Exception, match="after 1 attempt"):
        processor.add_items([item(1), item(2), item(3)])
    assert manager.calls["send"] == 1
    assert manager.works["work-1"].status == "error"
