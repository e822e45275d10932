"""An in-memory work manager that records every call, with scripted faults."""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from connector_batching.stix import iter_members, object_id


class InjectedFault(RuntimeError):
    """A failure the test asked for."""


@dataclass
class Work:
    work_id: str
    name: str
    entity_type: str
    status: str = "in_progress"
    in_error: bool = False
    message: str | None = None
    sends: int = 0


@dataclass
class RecordingWorkManager:
    """Full-featured manager: error closing and state reading.

    ``fail`` maps an operation name (initiate, send, close, state) to a
    predicate on the call number of that operation (1-based); a true answer
    makes that call raise :class:`InjectedFault`.  ``interrupt`` is the same
    for ``KeyboardInterrupt`` (Ctrl-C arriving during that call).
    """

    fail: dict[str, Callable[[int], bool]] = field(default_factory=dict)
    interrupt: dict[str, Callable[[int], bool]] = field(default_factory=dict)
    works: dict[str, Work] = field(default_factory=dict)
    delivered: list[tuple[str, list[Any]]] = field(default_factory=list)
    state: dict[str, str] = field(default_factory=dict)
    state_history: list[tuple[str, str]] = field(default_factory=list)
    calls: dict[str, int] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)
    _ids: Any = field(default_factory=lambda: itertools.count(1))

    def _call(self, operation: str) -> None:
        with self.lock:
            n = self.calls.get(operation, 0) + 1
            self.calls[operation] = n
        stop = self.interrupt.get(operation)
        if stop is not None and stop(n):
            raise KeyboardInterrupt(f"{operation} call {n} interrupted")
        predicate = self.fail.get(operation)
        if predicate is not None and predicate(n):
            raise InjectedFault(f"{operation} call {n} failed")

    def initiate_work(self, work_name: str, entity_type: str) -> str:
        self._call("initiate")
        work_id = f"work-{next(self._ids)}"
        self.works[work_id] = Work(work_id, work_name, entity_type)
        return work_id

    def send_bundle(self, work_id: str, objects: list[Any]) -> None:
        assert self.works[work_id].status == "in_progress", "send to a closed work"
        self._call("send")
        self.works[work_id].sends += 1
        self.delivered.append((work_id, list(objects)))

    def work_to_process(
        self, work_id: str, in_error: bool = False, message: str | None = None
    ) -> None:
        self._call("close")
        work = self.works[work_id]
        work.status = "error" if in_error else "complete"
        work.in_error = in_error
        work.message = message

    def update_state(self, state_key: str, date_str: str) -> None:
        self._call("state")
        self.state[state_key] = date_str
        self.state_history.append((state_key, date_str))

    def get_state(self, state_key: str) -> str | None:
        return self.state.get(state_key)

    # -- reading back ---------------------------------------------------------

    def delivered_ids(self) -> list[str]:
        """Ids of all objects sent in works that completed without error."""
        ok = {w.work_id for w in self.works.values() if w.status == "complete"}
        return [object_id(o) for wid, objs in self.delivered if wid in ok for o in objs]


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


def member_ids(payloads: list[Any]) -> list[str]:
    return [object_id(m) for p in payloads for m in iter_members(p)]
