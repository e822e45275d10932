"""Dead letters: failed items persisted, kept across restarts, re-sent first, then removed."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest
import stix2

from connector_batching import GenericBatchProcessor, GenericBatchProcessorConfig
from tests.unit.fakes import RecordingWorkManager


def config(path: Path, **overrides: Any) -> GenericBatchProcessorConfig:
    base: dict[str, Any] = {
        "batch_size": 2,
        "work_name_template": "Batch #{batch_num}",
        "state_key": "cursor",
        "entity_type": "items",
        "display_name": "items",
        "dead_letter_path": str(path),
        "date_extraction_function": lambda obj: obj.get("modified"),
    }
    return GenericBatchProcessorConfig(**{**base, **overrides})


def item(n: int) -> dict[str, Any]:
    return {
        "type": "x-item",
        "id": f"x-item--{n:08d}-0000-4000-8000-000000000000",
        "modified": f"2024-01-{n:02d}T00:00:00Z",
    }


def rows(path: Path) -> list[tuple[Any, ...]]:
    with sqlite3.connect(path) as db:
        return db.execute(
            "SELECT payload, attempts, error FROM dead_letters ORDER BY id"
        ).fetchall()


def test_failed_items_survive_a_restart_and_are_resent_first(tmp_path: Path) -> None:
    store = tmp_path / "dead.db"
    down = RecordingWorkManager(fail={"send": lambda n: n == 2})
    first = GenericBatchProcessor(config(store), down)
    first.add_items([item(1), item(2)])
    with pytest.raises(Exception, match="Batch #2"):
        first.add_items([item(3), item(4)])
    first.add_items([item(5), item(6)])
    first.update_final_state()
    assert down.state["cursor"] == "2024-01-02T23:59:59.999999Z"
    assert [r[1] for r in rows(store)] == [1, 1]
    assert "InjectedFault" in rows(store)[0][2]
    assert first.get_statistics()["dead_letters"] == 2

    # A new process: the stored items still hold the cursor ...
    up = RecordingWorkManager(state=dict(down.state))
    second = GenericBatchProcessor(config(store), up)
    second.add_items([item(7), item(8)])
    second.update_final_state()
    assert up.state["cursor"] == "2024-01-02T23:59:59.999999Z"
    # ... until they are re-sent, first, and leave the store.
    assert second.retry_failed() == 2
    second.flush()
    second.update_final_state()
    assert [o["id"] for o in up.delivered[-1][1]] == [item(3)["id"], item(4)["id"]]
    assert rows(store) == []
    assert up.state["cursor"] == "2024-01-08T00:00:00Z"


def test_failing_again_counts_attempts_without_duplicates(tmp_path: Path) -> None:
    store = tmp_path / "dead.db"
    manager = RecordingWorkManager(fail={"send": lambda n: True})
    processor = GenericBatchProcessor(config(store), manager)
    with pytest.raises(Exception, match="Batch #1"):
        processor.add_items([item(1), item(2)])
    for _ in range(2):
        with pytest.raises(Exception, match="failed"):
            processor.retry_failed()  # a full batch is sent at once
    assert len(processor.get_failed_items()) == 2
    assert [r[1] for r in rows(store)] == [3, 3]


def test_clear_failed_items_removes_their_dead_letters(tmp_path: Path) -> None:
    store = tmp_path / "dead.db"
    processor = GenericBatchProcessor(
        config(store), RecordingWorkManager(fail={"send": lambda n: True})
    )
    with pytest.raises(Exception, match="Batch #1"):
        processor.add_items([item(1), item(2)])
    assert len(rows(store)) == 2
    processor.clear_failed_items()
    assert rows(store) == []


def test_stix2_objects_and_groups_are_stored_as_stix_json(tmp_path: Path) -> None:
    store = tmp_path / "dead.db"
    indicator = stix2.Indicator(pattern="[url:value = 'http://a.example/']", pattern_type="stix")

    class Group:
        def to_stix(self) -> list[Any]:
            return [item(1), item(2)]

    down = RecordingWorkManager(fail={"send": lambda n: True})
    processor = GenericBatchProcessor(config(store), down)
    with pytest.raises(Exception, match="Batch #1"):
        processor.add_items([indicator, Group()])
    up = RecordingWorkManager()
    restarted = GenericBatchProcessor(config(store), up)
    assert restarted.retry_failed() == 2
    restarted.flush()
    sent = up.delivered[0][1]
    assert [o["id"] for o in sent] == [indicator.id, item(1)["id"], item(2)["id"]]
    assert sent[0]["pattern"] == "[url:value = 'http://a.example/']"


def test_close_releases_the_store_and_the_processor_stays_usable(tmp_path: Path) -> None:
    store = tmp_path / "dead.db"
    manager = RecordingWorkManager(fail={"send": lambda n: n == 1})
    processor = GenericBatchProcessor(config(store), manager)
    with pytest.raises(Exception, match="Batch #1"):
        processor.add_items([item(1), item(2)])
    processor.close()
    assert processor.dead_letter_store is not None
    assert processor.dead_letter_store._connection is None
    assert processor.get_statistics()["dead_letters"] == 2  # reopened on use
    processor.retry_failed()
    processor.close()
    assert rows(store) == []
