"""`RecordingWorkManager`: an in-memory work manager that records every call.

For connector authors' tests: hand it to a processor (or a connector built on
the mixin), run, then read what was delivered, which works were closed and
how, and every cursor written.  Faults are scripted per operation.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from connector_batching.stix import iter_members, object_id

OPERATIONS = ("initiate", "send", "close", "state")
"""The operations faults can be scripted for: ``initiate_work``, ``send_bundle``,
``work_to_process``, ``update_state``."""


class InjectedFault(RuntimeError):
    """A failure a test asked for."""


@dataclass
class RecordedWork:
    """One work as the recording manager saw it."""

    work_id: str
    name: str
    entity_type: str
    status: str = "in_progress"
    """``in_progress``, ``complete`` or ``error``."""
    in_error: bool = False
    message: str | None = None
    sends: int = 0


@dataclass
class RecordingWorkManager:
    """A full-featured manager (error closing, state reading) that records calls.

    ``fail`` maps an operation of :data:`OPERATIONS` to a predicate on the call
    number of that operation (1-based): a true answer makes that call raise
    :class:`InjectedFault`.  ``interrupt`` does the same with
    ``KeyboardInterrupt`` (Ctrl-C arriving during that call).  Thread-safe.
    """

    fail: dict[str, Callable[[int], bool]] = field(default_factory=dict)
    interrupt: dict[str, Callable[[int], bool]] = field(default_factory=dict)
    works: dict[str, RecordedWork] = field(default_factory=dict)
    delivered: list[tuple[str, list[Any]]] = field(default_factory=list)
    """Every bundle sent: (work id, objects), in order."""
    state: dict[str, str] = field(default_factory=dict)
    state_history: list[tuple[str, str]] = field(default_factory=list)
    calls: dict[str, int] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)
    _ids: Iterator[int] = field(default_factory=lambda: itertools.count(1))

    def __post_init__(self) -> None:
        unknown = (set(self.fail) | set(self.interrupt)) - set(OPERATIONS)
        if unknown:
            raise ValueError(f"unknown operation(s) {sorted(unknown)}; use {OPERATIONS}")

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
        """Open a work (``work-1``, ``work-2``, …)."""
        self._call("initiate")
        with self.lock:
            work_id = f"work-{next(self._ids)}"
            self.works[work_id] = RecordedWork(work_id, work_name, entity_type)
        return work_id

    def send_bundle(self, work_id: str, objects: list[Any]) -> None:
        """Record a bundle; sending to a closed work is a bug and raises ``AssertionError``."""
        assert self.works[work_id].status == "in_progress", "send to a closed work"
        self._call("send")
        with self.lock:
            self.works[work_id].sends += 1
            self.delivered.append((work_id, list(objects)))

    def work_to_process(
        self, work_id: str, in_error: bool = False, message: str | None = None
    ) -> None:
        """Close a work, in error with ``message`` when ``in_error``."""
        self._call("close")
        work = self.works[work_id]
        work.status = "error" if in_error else "complete"
        work.in_error = in_error
        work.message = message

    def update_state(self, state_key: str, date_str: str) -> None:
        """Store a cursor."""
        self._call("state")
        with self.lock:
            self.state[state_key] = date_str
            self.state_history.append((state_key, date_str))

    def get_state(self, state_key: str) -> str | None:
        """The stored cursor, or None."""
        return self.state.get(state_key)

    # -- reading back ---------------------------------------------------------

    def delivered_ids(self) -> list[str]:
        """Ids of all objects sent in works that completed without error."""
        ok = {w.work_id for w in self.works.values() if w.status == "complete"}
        return [object_id(o) for wid, objs in self.delivered if wid in ok for o in objs]

    def open_works(self) -> list[RecordedWork]:
        """Works still "in progress" (a processor must leave none)."""
        return [w for w in self.works.values() if w.status == "in_progress"]


def member_ids(payloads: list[Any]) -> list[str]:
    """The STIX ids of payloads (groups flattened), e.g. of ``get_failed_items()``."""
    return [object_id(m) for p in payloads for m in iter_members(p)]
