"""Every code sample of the seed document, run as written (import line changed)."""

from __future__ import annotations

import logging

import pytest
import stix2

from connector_batching import GenericBatchProcessor, GenericBatchProcessorConfig
from tests.unit.fakes import InjectedFault, RecordingWorkManager, SeedWorkManager

logger = logging.getLogger("seed-examples")


def make_indicators(n: int, start_day: int = 1) -> list[stix2.Indicator]:
    return [
        stix2.Indicator(
            pattern=f"[url:value = 'http://{i}.example.com/']",
            pattern_type="stix",
            valid_from="2024-01-01T00:00:00Z",
            created=f"2024-01-{start_day + i % 20:02d}T00:00:00Z",
            modified=f"2024-01-{start_day + i % 20:02d}T12:00:00Z",
        )
        for i in range(n)
    ]


class Entity:
    """A mutable application object with STIX id and type (seed's pre/post example)."""

    def __init__(self, n: int) -> None:
        self.id = f"x-entity--00000000-0000-4000-8000-{n:012d}"
        self.type = "x-entity"


class Mapper:
    """A mapper object with to_stix()."""

    def __init__(self, indicator: stix2.Indicator) -> None:
        self.indicator = indicator

    def to_stix(self) -> stix2.Indicator:
        return self.indicator


def test_basic_usage(capsys: pytest.CaptureFixture[str]) -> None:
    work_manager = SeedWorkManager()
    data_items = make_indicators(25)

    config = GenericBatchProcessorConfig(
        batch_size=10,
        work_name_template="Import Batch #{batch_num}",
        state_key="import_cursor",
        entity_type="threat_indicators",
        display_name="threat indicators",
    )
    processor = GenericBatchProcessor(config=config, work_manager=work_manager, logger=logger)
    for item in data_items:
        processor.add_item(item)
    processor.flush()
    processor.update_final_state()
    stats = processor.get_statistics()
    print(
        f"Processed {stats['total_items_processed']} items in "
        f"{stats['total_batches_processed']} batches"
    )

    assert capsys.readouterr().out.strip() == "Processed 25 items in 3 batches"
    assert [len(objs) for _, objs in work_manager.bundles] == [10, 10, 5]
    assert set(work_manager.works.values()) == {"processed"}
    assert "import_cursor" in work_manager.state  # current time: no date extraction
    assert config.display_name_singular == "threat indicator"


def test_with_validation() -> None:
    work_manager = RecordingWorkManager()

    def validate_item(item: object) -> bool:
        """Validates that an item has required fields."""
        return hasattr(item, "id") and hasattr(item, "type")

    config = GenericBatchProcessorConfig(
        batch_size=10,
        work_name_template="Validated Batch #{batch_num}",
        state_key="validated_cursor",
        entity_type="threat_indicators",
        display_name="threat indicators",
        validation_function=validate_item,
    )
    processor = GenericBatchProcessor(config, work_manager, logger)
    item = make_indicators(1)[0]
    added = processor.add_item(item)
    assert added is True
    # A dict has no attributes: this validation function rejects it, counted.
    assert processor.add_item({"id": "x--1", "type": "x"}) is False
    stats = processor.get_statistics()
    assert stats["rejected_items"] == 1
    assert stats["current_batch_size"] == 1


def test_with_date_extraction() -> None:
    work_manager = RecordingWorkManager()

    def extract_date(item: object) -> object:
        """Extract the date from an item."""
        if hasattr(item, "modified"):
            return item.modified
        return None

    config = GenericBatchProcessorConfig(
        batch_size=10,
        work_name_template="Dated Batch #{batch_num}",
        state_key="dated_cursor",
        entity_type="threat_indicators",
        display_name="threat indicators",
        date_extraction_function=extract_date,
    )
    processor = GenericBatchProcessor(config, work_manager, logger)
    data_items = make_indicators(30)
    for item in data_items:
        processor.add_item(item)
    processor.update_final_state()
    # All 30 were delivered in 3 full batches: the cursor is the latest date.
    assert work_manager.state["dated_cursor"] == "2024-01-20T12:00:00Z"
    assert processor.get_statistics()["latest_date"] == "2024-01-20T12:00:00Z"


def test_with_pre_and_post_processing() -> None:
    work_manager = RecordingWorkManager()

    def preprocess_batch(items: list[Entity]) -> list[Entity]:
        """Preprocess a batch of items before sending."""
        for item in items:
            item.status = "processing"  # type: ignore[attr-defined]
        return items

    def postprocess_batch(items: list[Entity], work_id: str) -> None:
        """Postprocess a batch of items after successful processing."""
        for item in items:
            item.work_id = work_id  # type: ignore[attr-defined]
            item.status = "processed"  # type: ignore[attr-defined]

    config = GenericBatchProcessorConfig(
        batch_size=10,
        work_name_template="Process Batch #{batch_num}",
        state_key="process_cursor",
        entity_type="threat_indicators",
        display_name="threat indicators",
        preprocessing_function=preprocess_batch,
        postprocessing_function=postprocess_batch,
    )
    processor = GenericBatchProcessor(config, work_manager, logger)
    entities = [Entity(i) for i in range(15)]
    for entity in entities:
        processor.add_item(entity)
    processor.flush()
    assert all(e.status == "processed" for e in entities)  # type: ignore[attr-defined]
    assert [e.work_id for e in entities] == ["work-1"] * 10 + ["work-2"] * 5  # type: ignore[attr-defined]
    # The pre-processed objects are what was sent.
    sent = work_manager.delivered[0][1]
    assert all(getattr(obj, "status", None) == "processed" for obj in sent)


def test_with_custom_error_handling_and_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    sleeps: list[float] = []
    monkeypatch.setattr("time.sleep", sleeps.append)
    work_manager = RecordingWorkManager(fail={"send": lambda n: True})

    class BatchProcessingError(Exception):
        def __init__(
            self, message: str, batch_number: int | None = None, work_id: str | None = None
        ) -> None:
            super().__init__(message)
            self.batch_number = batch_number
            self.work_id = work_id

    config = GenericBatchProcessorConfig(
        batch_size=10,
        work_name_template="Retry Batch #{batch_num}",
        state_key="retry_cursor",
        entity_type="threat_indicators",
        display_name="threat indicators",
        exception_class=BatchProcessingError,
        max_retries=3,
        retry_delay=2.0,  # Initial delay, doubles after each retry
    )
    processor = GenericBatchProcessor(config, work_manager, logger, sleep=sleeps.append)
    config_items = make_indicators(4)
    for item in config_items:
        processor.add_item(item)

    failed_items: list[object] = []
    try:
        processor.process_current_batch()
    except BatchProcessingError as e:
        print(f"Processing failed after {config.max_retries} retries: {e}")
        failed_items = processor.get_failed_items()
        assert e.batch_number == 1
        assert e.work_id == "work-1"
    assert failed_items == config_items
    assert sleeps == [2.0, 4.0, 8.0]
    assert work_manager.calls["send"] == 4
    assert work_manager.calls["initiate"] == 1  # one work, reused across retries
    work = work_manager.works["work-1"]
    assert work.status == "error" and work.in_error and "InjectedFault" in (work.message or "")


def test_manual_processing_control() -> None:
    work_manager = RecordingWorkManager()
    config = GenericBatchProcessorConfig(
        batch_size=10,
        work_name_template="Manual Batch #{batch_num}",
        state_key="manual_cursor",
        entity_type="threat_indicators",
        display_name="threat indicators",
        auto_process=False,
    )
    processor = GenericBatchProcessor(config, work_manager, logger)
    data_items = make_indicators(23)
    for item in data_items:
        processor.add_item(item)
    assert work_manager.delivered == []  # nothing processed automatically
    assert processor.get_current_batch_size() == 23

    work_id = processor.process_current_batch()
    assert work_id == "work-1"
    if processor.get_current_batch_size() > 0:
        processor.process_current_batch()
    assert [len(objs) for _, objs in work_manager.delivered] == [23]


def test_batch_processing_stix_objects() -> None:
    work_manager = RecordingWorkManager()
    config = GenericBatchProcessorConfig(
        batch_size=10,
        work_name_template="STIX Batch #{batch_num}",
        state_key="stix_cursor",
        entity_type="stix_objects",
        display_name="STIX objects",
    )
    processor = GenericBatchProcessor(config, work_manager, logger)
    stix_object, other = make_indicators(2)
    mapper_object = Mapper(other)
    stix_dict = {"id": "x-custom--7d4a9e0d-1c52-4c2c-8f49-0a1a2f3e4b5c", "type": "x-custom"}
    assert processor.add_item(stix_object)  # Direct STIX object
    assert processor.add_item(mapper_object)  # Object with to_stix() method
    assert processor.add_item(stix_dict)  # Dict with id and type fields
    processor.flush()
    sent = work_manager.delivered[0][1]
    assert sent == [stix_object, other, stix_dict]


def test_statistics_keys() -> None:
    processor = GenericBatchProcessor(
        GenericBatchProcessorConfig(
            batch_size=2,
            work_name_template="B{batch_num}",
            state_key="k",
            entity_type="t",
            display_name="things",
        ),
        RecordingWorkManager(),
    )
    stats = processor.get_statistics()
    for key in (
        "total_items_processed",
        "total_batches_processed",
        "total_items_sent",
        "current_batch_size",
        "failed_items_count",
        "latest_date",
    ):
        assert key in stats
    assert stats["latest_date"] is None


def test_seed_work_manager_failure_still_closes_work() -> None:
    """A four-method manager: a failed batch's work is still closed (no in_error)."""

    class Flaky(SeedWorkManager):
        def send_bundle(self, work_id: str, objects: list[object]) -> None:
            raise InjectedFault("down")

    manager = Flaky()
    processor = GenericBatchProcessor(
        GenericBatchProcessorConfig(
            batch_size=5,
            work_name_template="B{batch_num}",
            state_key="k",
            entity_type="t",
            display_name="things",
        ),
        manager,
    )
    processor.add_items(make_indicators(3))
    with pytest.raises(Exception, match="failed after 1 attempt"):
        processor.flush()
    assert manager.works == {"seed-1": "processed"}
    assert processor.get_statistics()["failed_items_count"] == 3


def test_manager_calls_use_the_seed_parameter_names() -> None:
    """Managers may take keyword-only parameters named as in the seed's interface."""
    calls: list[tuple[str, dict[str, object]]] = []

    class KeywordOnly:
        def initiate_work(self, *, work_name: str, entity_type: str) -> str:
            calls.append(("initiate_work", {"work_name": work_name, "entity_type": entity_type}))
            return "w-1"

        def send_bundle(self, *, work_id: str, objects: list[object]) -> None:
            calls.append(("send_bundle", {"work_id": work_id, "objects": len(objects)}))

        def work_to_process(self, *, work_id: str) -> None:
            calls.append(("work_to_process", {"work_id": work_id}))

        def update_state(self, *, state_key: str, date_str: str) -> None:
            calls.append(("update_state", {"state_key": state_key, "date_str": date_str}))

    processor = GenericBatchProcessor(
        GenericBatchProcessorConfig(
            batch_size=2,
            work_name_template="Import Batch #{batch_num}",
            state_key="import_cursor",
            entity_type="threat_indicators",
            display_name="threat indicators",
            date_extraction_function=lambda obj: obj.modified,
        ),
        KeywordOnly(),
    )
    processor.add_items(make_indicators(2))
    assert calls == [
        ("initiate_work", {"work_name": "Import Batch #1", "entity_type": "threat_indicators"}),
        ("send_bundle", {"work_id": "w-1", "objects": 2}),
        ("work_to_process", {"work_id": "w-1"}),
        ("update_state", {"state_key": "import_cursor", "date_str": "2024-01-02T12:00:00Z"}),
    ]


def test_patching_time_sleep_after_construction_is_honoured(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    manager = RecordingWorkManager(fail={"send": lambda n: n <= 2})
    processor = GenericBatchProcessor(
        GenericBatchProcessorConfig(
            batch_size=1,
            work_name_template="B{batch_num}",
            state_key="k",
            entity_type="t",
            display_name="things",
            max_retries=2,
            retry_delay=5.0,
        ),
        manager,
    )
    slept: list[float] = []
    monkeypatch.setattr("time.sleep", slept.append)
    processor.add_item(make_indicators(1)[0])
    assert slept == [5.0, 10.0]
