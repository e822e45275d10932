"""The `WorkManager` protocol: what the batch processor talks to.

A manager written to the seed's four methods works unchanged.  Managers may
also offer the richer optional methods below; the processor detects and uses
them:

* ``work_to_process(work_id, in_error=False, message=None)`` — close a work
  in error with a reason when a batch fails for good;
* ``get_state(state_key) -> str | None`` — read a cursor back.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable


@runtime_checkable
class WorkManager(Protocol):
    """What a batch processor needs to deliver batches and save cursors."""

    def initiate_work(self, work_name: str, entity_type: str) -> str:
        """Create a new work and return its id."""
        ...

    def send_bundle(self, work_id: str, objects: Sequence[Any]) -> None:
        """Send one batch of STIX objects as part of ``work_id``."""
        ...

    def work_to_process(self, work_id: str) -> None:
        """Mark the work as complete (ready for processing)."""
        ...

    def update_state(self, state_key: str, date_str: str) -> None:
        """Persist ``date_str`` (ISO 8601 UTC) as the cursor under ``state_key``."""
        ...


@runtime_checkable
class ErrorClosingWorkManager(WorkManager, Protocol):
    """A manager that can close a work in error with a reason."""

    def work_to_process(
        self, work_id: str, in_error: bool = False, message: str | None = None
    ) -> None:
        """Close the work; ``in_error=True`` marks it failed with ``message``."""
        ...


@runtime_checkable
class StateReadingWorkManager(WorkManager, Protocol):
    """A manager that can read a cursor back."""

    def get_state(self, state_key: str) -> str | None:
        """Return the cursor stored under ``state_key``, or ``None``."""
        ...


REQUIRED_METHODS = ("initiate_work", "send_bundle", "work_to_process", "update_state")


def check_work_manager(manager: object) -> None:
    """Raise ``TypeError`` naming the missing methods if ``manager`` is unusable."""
    missing = [name for name in REQUIRED_METHODS if not callable(getattr(manager, name, None))]
    if missing:
        raise TypeError(
            f"work_manager {type(manager).__name__} lacks required method(s): "
            f"{', '.join(missing)} (see connector_batching.WorkManager)"
        )


def supports_error_closing(manager: object) -> bool:
    """True when ``manager.work_to_process`` accepts ``in_error`` and ``message``."""
    method = getattr(manager, "work_to_process", None)
    if method is None:
        return False
    try:
        params = inspect.signature(method).parameters
    except (TypeError, ValueError):
        return False
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return True
    return "in_error" in params and "message" in params


class ManagerCalls:
    """The calls the engine makes on a work manager, bound once at construction.

    The processor never calls a manager's methods directly: this is the one
    place that knows their parameter names and whether a work can be closed
    in error.
    """

    __slots__ = ("_close", "_initiate", "_send", "_state", "error_closing")

    def __init__(self, manager: Any) -> None:
        check_work_manager(manager)
        self._initiate: Any = manager.initiate_work
        self._send: Any = manager.send_bundle
        self._close: Any = manager.work_to_process
        self._state: Any = manager.update_state
        self.error_closing = supports_error_closing(manager)

    def open(self, work_name: str, entity_type: str) -> str:
        """A new work's id."""
        return str(self._initiate(work_name=work_name, entity_type=entity_type))

    def send(self, work_id: str, objects: list[Any]) -> None:
        """Send one batch's objects in ``work_id``."""
        self._send(work_id=work_id, objects=objects)

    def close(self, work_id: str) -> None:
        """Mark ``work_id`` processed."""
        self._close(work_id=work_id)

    def close_in_error(self, work_id: str, message: str) -> None:
        """Mark ``work_id`` processed in error with ``message`` (plainly closed
        when the manager cannot say "in error")."""
        if self.error_closing:
            self._close(work_id=work_id, in_error=True, message=message)
        else:
            self._close(work_id=work_id)

    def write_state(self, state_key: str, date_str: str) -> None:
        """Save the cursor."""
        self._state(state_key=state_key, date_str=date_str)
