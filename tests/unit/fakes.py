"""Test doubles: the public recording manager, and a manager with only the seed's methods."""

from __future__ import annotations

from typing import Any

from connector_batching.testing import (
    InjectedFault,
    RecordedWork,
    RecordingWorkManager,
    member_ids,
)

Work = RecordedWork
__all__ = ["InjectedFault", "RecordingWorkManager", "SeedWorkManager", "Work", "member_ids"]


class SeedWorkManager:
    """A manager written to the seed's four-method interface, nothing more."""

    def __init__(self) -> None:
        self.works: dict[str, str] = {}
        self.bundles: list[tuple[str, list[Any]]] = []
        self.state: dict[str, str] = {}
        self._n = 0

    def initiate_work(self, work_name: str, entity_type: str) -> str:
        self._n += 1
        work_id = f"seed-{self._n}"
        self.works[work_id] = "in_progress"
        return work_id

    def send_bundle(self, work_id: str, objects: list[Any]) -> None:
        self.bundles.append((work_id, list(objects)))

    def work_to_process(self, work_id: str) -> None:
        self.works[work_id] = "processed"

    def update_state(self, state_key: str, date_str: str) -> None:
        self.state[state_key] = date_str
