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
