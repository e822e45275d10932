"""Managers written to the reference implementation's real signatures work unchanged."""

from __future__ import annotations

from typing import Any

import pytest

from connector_batching import GenericBatchProcessor, GenericBatchProcessorConfig
from connector_batching.manager_calls import ManagerCalls


class ReferenceWorkManager:
    """The signatures of google-ti-feeds' WorkManager (the reference's real caller)."""

    def __init__(self, fail_sends: int = 0) -> None:
        self.works: dict[str, dict[str, Any]] = {}
        self.bundles: list[tuple[str, list[Any]]] = []
        self.state: dict[str, str] = {}
        self.fail_sends = fail_sends

    def initiate_work(self, name: str, work_counter: int | None = None) -> str:
        work_id = f"w{len(self.works) + 1}"
        self.works[work_id] = {"name": name, "status": "in_progress"}
        return work_id

    def send_bundle(self, work_id: str, bundle: Any) -> None:
        if self.fail_sends:
            self.fail_sends -= 1
            raise ConnectionError("queue down")
        self.bundles.append((work_id, list(bundle)))

    def work_to_process(
        self, work_id: str, error_flag: bool = False, error_message: str | None = None
    ) -> None:
        self.works[work_id].update(
            status="error" if error_flag else "complete", message=error_message
        )

    def update_state(self, state_key: str, date_str: str = "", error_flag: bool = False) -> None:
        if not error_flag:
            self.state[state_key] = date_str


def config(**overrides: Any) -> GenericBatchProcessorConfig:
    base: dict[str, Any] = {
        "batch_size": 2,
        "work_name_template": "Batch #{batch_num}",
        "state_key": "cursor",
        "entity_type": "indicators",
        "display_name": "indicators",
        "date_extraction_function": lambda o: o.get("modified"),
        "retry_delay": 0.0,
    }
    return GenericBatchProcessorConfig(**{**base, **overrides})


def item(n: int) -> dict[str, str]:
    return {"type": "x", "id": f"x--{n}", "modified": f"2024-01-0{n}T00:00:00Z"}


def test_a_reference_manager_delivers_and_its_failed_works_close_in_error() -> None:
    manager = ReferenceWorkManager(fail_sends=1)
    processor = GenericBatchProcessor(config(), manager)
    with pytest.raises(Exception, match="queue down"):
        processor.add_items([item(1), item(2)])
    processor.add_items([item(3), item(4)])
    processor.update_final_state()
    assert manager.works["w1"] == {
        "name": "Batch #1",
        "status": "error",
        "message": "ConnectionError: queue down",
    }
    assert manager.works["w2"]["status"] == "complete"
    assert [o["id"] for o in manager.bundles[0][1]] == ["x--3", "x--4"]
    assert manager.state["cursor"] == "2023-12-31T23:59:59.999999Z"  # held before item 1


def test_the_seed_names_and_kwargs_managers_keep_working() -> None:
    class KwargsManager:
        def __init__(self) -> None:
            self.calls: list[tuple[str, dict[str, Any]]] = []

        def initiate_work(self, **kwargs: Any) -> str:
            self.calls.append(("initiate", kwargs))
            return "w"

        def send_bundle(self, **kwargs: Any) -> None:
            self.calls.append(("send", kwargs))

        def work_to_process(self, **kwargs: Any) -> None:
            self.calls.append(("close", kwargs))

        def update_state(self, **kwargs: Any) -> None:
            self.calls.append(("state", kwargs))

    manager = KwargsManager()
    calls = ManagerCalls(manager)
    calls.open("n", "t")
    calls.send("w", [])
    calls.close_in_error("w", "why")
    assert [c[1] for c in manager.calls] == [
        {"work_name": "n", "entity_type": "t"},
        {"work_id": "w", "objects": []},
        {"work_id": "w", "in_error": True, "message": "why"},
    ]


def test_a_manager_taking_neither_set_of_names_is_refused_at_construction() -> None:
    class Odd(ReferenceWorkManager):
        def send_bundle(self, work, payload):  # type: ignore[no-untyped-def, override]
            pass

    with pytest.raises(TypeError, match=r"send_bundle\(payload, work\).*objects or bundle"):
        GenericBatchProcessor(config(), Odd())


def test_a_connector_written_for_the_reference_runs_unchanged() -> None:
    """As google-ti-feeds drives it: one big manual batch per run, hooks, a template
    changed at run time, the reference's config helpers."""
    manager = ReferenceWorkManager()
    seen: list[tuple[int, str]] = []
    cfg = GenericBatchProcessorConfig(
        batch_size=9999,
        work_name_template="Google TI Feeds - Reports #{batch_num}",
        state_key="next_cursor_date",
        entity_type="reports",
        display_name="reports",
        auto_process=False,
        validation_function=lambda obj: obj["id"] != "x--bad",
        postprocessing_function=lambda items, work_id: seen.append((len(items), work_id)),
        date_extraction_function=lambda obj: obj.get("modified"),
    )
    processor = GenericBatchProcessor(cfg, manager)
    assert processor.add_items([item(1), item(2), {"type": "x", "id": "x--bad"}]) == 2
    assert processor.process_current_batch() == "w1"
    cfg.work_name_template = "Google TI Feeds - Reports (run 2) #{batch_num}"
    processor.add_item(item(3))
    processor.flush()
    processor.update_final_state()
    assert [w["name"] for w in manager.works.values()] == [
        "Google TI Feeds - Reports #1",
        "Google TI Feeds - Reports (run 2) #2",
    ]
    assert seen == [(2, "w1"), (1, "w2")]
    assert manager.state["next_cursor_date"] == "2024-01-03T00:00:00Z"
    # the reference's config helpers, with its meaning
    assert cfg.extract_date(item(1)) == "2024-01-01T00:00:00Z"
    assert cfg.validate_item({"type": "x", "id": "x--bad"}) is False
    assert cfg.format_work_name(7, entity_type="ignored") == "Google TI Feeds - Reports (run 2) #7"
    error = cfg.create_exception("boom", batch_number=3)
    assert str(error) == "boom" and error.batch_number == 3  # type: ignore[attr-defined]
