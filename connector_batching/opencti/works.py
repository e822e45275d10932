"""Works: the ones this manager opened (:class:`OpenWorks`), opening and closing them.

A batch's work is a multipart OpenCTI work (``workAdd`` with
``isMultiPartWork``); its first expectations come with a placeholder of the
manager's own (:class:`~connector_batching.opencti.expectations.Expectations`).
Closing it:

1. its expected count is set to what the worker will report — the reports of
   the messages the broker confirmed (a failed send's others are taken back);
2. ``workToProcessed``;
3. the placeholder is reported: the work completes once the worker's reports
   are in (at once if they already are), and never before step 2.

When the helper does not send to a queue it opens none; the batch then gets a
local id (``no-work--…``) and nothing is asked of the platform for it.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from connector_batching.opencti.expectations import Expectations
from connector_batching.opencti.messages import Message
from connector_batching.opencti.metrics import MetricEvents
from connector_batching.opencti.port import HelperPort

NO_WORK_PREFIX = "no-work--"


def platform_id(work_id: str) -> str | None:
    """The platform's id of ``work_id``; ``None`` for a batch without a platform work."""
    return None if work_id.startswith(NO_WORK_PREFIX) else work_id


@dataclass
class BatchProgress:
    """One batch's messages in its work, and which of them the broker confirmed."""

    fingerprint: int
    messages: list[Message]
    #: whether their expectations were added to the work
    counted: bool = False
    confirmed: set[int] = field(default_factory=set)

    def pending(self) -> list[int]:
        return [i for i in range(len(self.messages)) if i not in self.confirmed]

    def confirm(self, indexes: Iterable[int]) -> tuple[int, int]:
        """Mark ``indexes`` confirmed; (messages newly confirmed, the reports they make)."""
        new = [index for index in indexes if index not in self.confirmed]
        self.confirmed.update(new)
        return len(new), sum(self.messages[index].reports for index in new)


class OpenWorks:
    """The works this manager opened and has not closed, with their sends' progress."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._objects: dict[str, int] = {}  # work id -> objects in its last send
        self._attempts: dict[str, int] = {}
        self._progress: dict[str, BatchProgress] = {}
        self._reports: dict[str, int] = {}  # work id -> reports the worker will make
        self._processed: set[str] = set()
        self._unclosed: dict[str, tuple[bool, str | None]] = {}  # close failed: how it was asked
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

    def resume(
        self, work_id: str, fingerprint: int, build: Callable[[], list[Message]]
    ) -> BatchProgress:
        """This very batch's (same ``fingerprint``) progress in ``work_id``: an earlier
        attempt's, or a new one of the messages ``build()`` makes."""
        with self._lock:
            progress = self._progress.get(work_id)
        if progress is not None and progress.fingerprint == fingerprint:
            return progress
        progress = BatchProgress(fingerprint, build())
        with self._lock:
            self._progress[work_id] = progress
        return progress

    def delivered(self, work_id: str, reports: int) -> None:
        """The broker confirmed messages for which the worker will make ``reports``."""
        with self._lock:
            self._reports[work_id] = self._reports.get(work_id, 0) + reports

    def reports(self, work_id: str) -> int:
        """Reports the worker will make for what the broker confirmed in ``work_id``."""
        with self._lock:
            return self._reports.get(work_id, 0)

    def close_failed(self, work_id: str, in_error: bool, message: str | None) -> None:
        with self._lock:
            self._unclosed[work_id] = (in_error, message)

    def unclosed(self) -> dict[str, tuple[bool, str | None]]:
        """Works whose last close failed, with how they were to be closed."""
        with self._lock:
            return dict(self._unclosed)

    def mark_processed(self, work_id: str) -> None:
        with self._lock:
            self._processed.add(work_id)

    def marked_processed(self, work_id: str) -> bool:
        """Whether ``workToProcessed`` of ``work_id`` succeeded (a close retry skips it)."""
        with self._lock:
            return work_id in self._processed

    def objects(self, work_id: str) -> int:
        with self._lock:
            return self._objects.get(work_id, 0)

    def closed(self, work_id: str) -> None:
        with self._lock:
            self._objects.pop(work_id, None)
            self._attempts.pop(work_id, None)
            self._progress.pop(work_id, None)
            self._reports.pop(work_id, None)
            self._processed.discard(work_id)
            self._unclosed.pop(work_id, None)


class Works:
    """Open and close the works of batches."""

    def __init__(
        self,
        port: HelperPort,
        events: MetricEvents,
        registry: OpenWorks,
        close_orphans: Callable[[str], None],
        expectations: Expectations,
    ) -> None:
        self._port = port
        self._events = events
        self._registry = registry
        self._close_orphans = close_orphans
        self._expectations = expectations

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

    def _settle(self, work_id: str) -> None:
        """Set the expected count to the worker's reports (plus the placeholder)."""
        placeholder = 1 if self._expectations.held(work_id) else 0
        surplus = (
            self._expectations.expected(work_id) - placeholder - self._registry.reports(work_id)
        )
        if surplus == 0 or not self._expectations.exclusive:
            return
        with self._port.failing("Cannot correct the work's expectations", {"work_id": work_id}):
            self._expectations.add(work_id, -surplus)
        if surplus > 0:
            self._events.emit("expectations_withdrawn", surplus)

    def close(self, work_id: str, in_error: bool = False, message: str | None = None) -> None:
        """Close the work; ``in_error=True`` marks it failed with ``message``.

        When it fails, the work is remembered and closed again, as asked, by
        :meth:`close_unclosed` (before the next work opens).
        """
        try:
            self._close(work_id, in_error, message)
        except Exception:
            self._registry.close_failed(work_id, in_error, message)
            raise

    def close_unclosed(self) -> int:
        """Close again the works whose close failed (the caller gave up); never raises.

        A work marked processed whose placeholder was not reported would stay in
        progress for ever on the platform: this reports it.  Returns how many closed.
        """
        closed = 0
        for work_id, (in_error, message) in self._registry.unclosed().items():
            try:
                self._close(work_id, in_error, message)
            except Exception:
                continue
            closed += 1
        return closed

    def _close(self, work_id: str, in_error: bool, message: str | None) -> None:
        count = self._registry.objects(work_id)
        if message is None:
            message = "Batch failed" if in_error else f"Batch delivered: {count} objects"
        message = self._port.redact(message)
        remote = platform_id(work_id)
        if remote is not None:
            meta = {"work_id": work_id, "in_error": in_error}
            self._settle(remote)
            with self._port.failing("Cannot close the work", meta):
                if not self._registry.marked_processed(remote):
                    self._port.close_work(remote, message, in_error)
                    self._registry.mark_processed(remote)
                self._expectations.release(remote)
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
