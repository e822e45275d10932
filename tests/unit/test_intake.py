"""Intake on its own: one item in, a payload and a date span out, or a counted rejection."""

from __future__ import annotations

import datetime as dt
import logging
import threading
from typing import Any

from connector_batching import GenericBatchProcessorConfig
from connector_batching.intake import Intake
from connector_batching.statistics import Statistics


def intake(**hooks: Any) -> tuple[Intake, Statistics]:
    config = GenericBatchProcessorConfig(
        batch_size=5,
        work_name_template="B{batch_num}",
        state_key="k",
        entity_type="x",
        display_name="xs",
        **hooks,
    )
    stats = Statistics()
    return Intake(config, stats, threading.RLock(), logging.getLogger("test")), stats


class Group:
    def to_stix(self) -> list[dict[str, str]]:
        return [
            {"type": "x", "id": "x--1", "modified": "2024-01-02T00:00:00Z"},
            {"type": "x", "id": "x--2", "modified": "2024-01-01T00:00:00+01:00"},
        ]


def test_a_group_keeps_together_and_spans_its_members_dates() -> None:
    door, _stats = intake(date_extraction_function=lambda o: o.get("modified"))
    prepared = door.prepare(Group())
    assert prepared is not None
    payload, span = prepared
    assert [m["id"] for m in payload] == ["x--1", "x--2"] and door.groups_seen
    assert span == (
        dt.datetime(2023, 12, 31, 23, tzinfo=dt.UTC),
        dt.datetime(2024, 1, 2, tzinfo=dt.UTC),
    )


def test_rejections_are_counted_by_reason_never_raised() -> None:
    def validate(obj: Any) -> bool:
        if obj["id"] == "x--boom":
            raise ValueError("boom")
        return obj["id"] != "x--bad"

    door, stats = intake(validation_function=validate)
    offered = [{"id": 1}, {"type": "x", "id": "x--bad"}, {"type": "x", "id": "x--boom"}, object()]
    assert [door.prepare(item) for item in offered] == [None] * 4
    assert stats.rejected == {"not_stix": 2, "invalid": 1, "validation_error": 1}


def test_a_bad_date_leaves_the_item_undated_and_is_counted() -> None:
    door, stats = intake(date_extraction_function=lambda o: "yesterday-ish CET")
    assert door.prepare({"type": "x", "id": "x--1"}) == ({"type": "x", "id": "x--1"}, None)
    assert stats.date_errors == 1


def test_a_chunk_of_plain_dicts_is_taken_in_one_check() -> None:
    door, _ = intake()
    chunk = [{"type": "x", "id": f"x--{n}"} for n in range(3)]
    payloads, spans = door.prepare_many(chunk, plain=True)
    assert payloads is chunk and spans is None
    payloads, _ = door.prepare_many([*chunk, {"no": "id"}], plain=True)
    assert len(payloads) == 3
