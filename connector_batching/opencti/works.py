"""Works: the ones this manager opened (:class:`OpenWorks`), opening and closing them.

A batch's work is an OpenCTI work (``workAdd``, closed with ``workToProcessed``).
When the helper does not send to a queue it opens none; the batch then gets a
local id (``no-work--…``) and nothing is asked of the platform for it.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable

from connector_batching.opencti.metrics import MetricEvents
from connector_batching.opencti.port import HelperPort

NO_WORK_PREFIX = "no-work--"


def platform_id(work_id: str) -> str | None:
    """The platform's id of ``work_id``; ``None`` for a batch without a platform work."""
    return None if work_id.startswith(NO_WORK_PREFIX) else work_id


class OpenWorks:
    """The works this manager opened and has not closed, with their sends' progress."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._objects: dict[str, int] = {}  # work id -> objects in its last send
        self._attempts: dict[str, int] = {}
        self._parts_done: dict[str, tuple[int, int]] = {}  # work id -> (batch hash, parts)
        self._uncertain_names: set[str] = set()

    def ids(self) -> list[str]:
        with self._lock:
            return list(self._objects)

    def opened(self, work_id: str, work_name: str) -> bool:
        """Record a new work; whether an earlier open of ``work_name`` had an unknown outcome."""
        with self._lock:
            self._objects[work_id] = 0
            uncertain = work_name in self._uncertain_names
            self._uncertain_names.discard(work_name)
        return uncertain

    def open_failed(self, work_name: str) -> None:
        """The platform may have created the work before its answer was lost."""
        with self._lock:
            self._uncertain_names.add(work_name)

    def attempt(self, work_id: str, objects: int) -> int:
        """Count one more send of ``work_id`` holding ``objects``; its attempt number."""
        with self._lock:
            attempt = self._attempts.get(work_id, 0) + 1
            self._attempts[work_id] = attempt
            self._objects[work_id] = objects
        return attempt

    def parts_done(self, work_id: str, fingerprint: int) -> int:
        """Parts of this very batch (same ``fingerprint``) an earlier attempt sent."""
        with self._lock:
            done_hash, done = self._parts_done.get(work_id, (fingerprint, 0))
        return done if done_hash == fingerprint else 0

    def part_sent(self, work_id: str, fingerprint: int, parts: int) -> None:
        with self._lock:
            self._parts_done[work_id] = (fingerprint, parts)

    def objects(self, work_id: str) -> int:
        with self._lock:
            return self._objects.get(work_id, 0)

    def closed(self, work_id: str) -> None:
        with self._lock:
            self._objects.pop(work_id, None)
            self._attempts.pop(work_id, None)
            self._parts_done.pop(work_id, None)


class Works:
    """Open and close the works of batches."""

    def __init__(
        self,
        port: HelperPort,
        events: MetricEvents,
        registry: OpenWorks,
        close_orphans: Callable[[str], None],
    ) -> None:
        self._port = port
        self._events = events
        self._registry = registry
        self._close_orphans = close_orphans

    def open(self, work_name: str, entity_type: str) -> str:
        """Open an OpenCTI work (or a local id when the helper opens none)."""
        meta = {"work_name": work_name, "entity_type": entity_type}
        try:
            with self._port.failing("Cannot create the work", meta):
                work_id = self._port.initiate_work(work_name)
        except Exception:
            # The platform may have created the work before the answer was lost (a
            # timeout, a cut connection): look for it once a retry got a work.
            self._registry.open_failed(work_name)
            raise
        if not work_id:  # the helper does not send to the queue: no platform work
            work_id = f"{NO_WORK_PREFIX}{uuid.uuid4()}"
        work_id = str(work_id)
        uncertain = self._registry.opened(work_id, work_name)
        self._port.log("info", "Work created", {"work_id": work_id, **meta})
        if uncertain and platform_id(work_id) is not None:
            self._close_orphans(work_name)
        return work_id

    def close(self, work_id: str, in_error: bool = False, message: str | None = None) -> None:
        """Close the work; ``in_error=True`` marks it failed with ``message``."""
        count = self._registry.objects(work_id)
        if message is None:
            message = "Batch failed" if in_error else f"Batch delivered: {count} objects"
        message = self._port.redact(message)
        remote = platform_id(work_id)
        if remote is not None:
            with self._port.failing(
                "Cannot close the work", {"work_id": work_id, "in_error": in_error}
            ):
                self._port.close_work(remote, message, in_error)
        self._registry.closed(work_id)
        self._events.emit("batch_closed", outcome="error" if in_error else "success")
        if in_error:
            self._events.emit("error")
            self._events.emit("items_failed", count)
            self._port.log(
                "warning",
                "Work closed in error",
                {"work_id": work_id, "objects": count, "reason": message},
            )
        else:
            self._port.log("info", "Work closed", {"work_id": work_id, "objects": count})
