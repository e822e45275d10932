"""No silent no-op: rejected items and runs that deliver nothing are said at WARNING or above."""

from __future__ import annotations

import logging
from typing import Any

import pytest
import stix2

from connector_batching import GenericBatchProcessor, GenericBatchProcessorConfig
from connector_batching.testing import RecordingWorkManager


def processor(**overrides: Any) -> tuple[GenericBatchProcessor, RecordingWorkManager]:
    manager = RecordingWorkManager()
    config = GenericBatchProcessorConfig(
        **{
            "batch_size": 2,
            "work_name_template": "B{batch_num}",
            "state_key": "cursor",
            "entity_type": "indicators",
            "display_name": "indicators",
            **overrides,
        }
    )
    return GenericBatchProcessor(config, manager), manager


def test_rejections_are_reported_at_warning_once_per_batch(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, "connector_batching")
    proc, _ = processor()
    proc.add_item({"no": "id"})
    proc.add_item(object())
    proc.add_item({"type": "x", "id": "x--1"})
    proc.add_item({"type": "x", "id": "x--2"})  # the batch goes out
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == [
        "2 indicators rejected since the last report (not_stix=2); they are counted in "
        "rejected_by_reason, details at DEBUG"
    ]
    proc.flush()
    proc.update_final_state()
    assert len([r for r in caplog.records if "rejected since" in r.getMessage()]) == 1


def test_a_run_whose_items_were_all_rejected_says_nothing_was_delivered(
    caplog: pytest.LogCaptureFixture,
) -> None:
    proc, manager = processor()
    with proc:
        for _ in range(3):
            proc.add_item({"id": "not-stix"})
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors == ["Nothing was delivered: all 3 indicators offered were rejected (not_stix=3)"]
    assert manager.works == {}


def test_a_row_given_as_a_list_is_one_group_not_a_rejection() -> None:
    indicator = stix2.Indicator(pattern="[url:value = 'http://x.example/']", pattern_type="stix")
    observable = stix2.URL(value="http://x.example/")
    link = stix2.Relationship(indicator, "based-on", observable)
    proc, manager = processor(batch_size=1)
    assert proc.add_item([indicator, observable, link]) is True
    assert proc.add_item((observable,)) is True
    assert [len(objs) for _w, objs in manager.delivered] == [3, 1]
    assert proc.get_statistics()["rejected_items"] == 0
