"""Statistics: counters fed by the processor's outcomes, and their snapshot.

The keys of :meth:`Statistics.snapshot` are the public ``get_statistics()``
dict: the seed's keys first, then this library's.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from connector_batching.dates import format_instant


class Statistics:
    """Counts of what was accepted, rejected, delivered, failed and retried.

    Plain attributes, updated under the processor's lock; the hot path bumps
    ``accepted`` directly.
    """

    def __init__(self) -> None:
        self.accepted = 0
        self.rejected: dict[str, int] = {}
        self.unreported: dict[str, int] = {}  # rejections since the last report
        self.date_errors = 0
        self.items_processed = 0
        self.items_sent = 0
        self.objects_sent = 0
        self.batches_processed = 0
        self.batches_failed = 0
        self.retries = 0
        self.references_added = 0
        self.references_unresolved = 0
        self.close_errors = 0
        self.hook_errors = 0
        self.out_of_order = 0
        self.first_item_at: float | None = None
        self.last_delivery_at: float | None = None

    def reject(self, reason: str) -> None:
        """One item refused at the door, for ``reason``."""
        self.rejected[reason] = self.rejected.get(reason, 0) + 1
        self.unreported[reason] = self.unreported.get(reason, 0) + 1

    def take_unreported(self) -> dict[str, int]:
        """Rejections not reported yet (then forgotten)."""
        counts, self.unreported = self.unreported, {}
        return counts

    def delivered(self, items: int, sent: int, objects: int, now: float) -> None:
        """A batch of ``items`` (``sent`` after preprocessing, ``objects`` in the bundle)."""
        self.batches_processed += 1
        self.items_processed += items
        self.items_sent += sent
        self.objects_sent += objects
        self.last_delivery_at = now

    def snapshot(
        self,
        *,
        batch_size: int,
        pending: int,
        failed: int,
        latest: dt.datetime | None,
        committed: str | None,
        state_errors: int,
        dead_letters: int,
        now: float,
    ) -> dict[str, Any]:
        """The ``get_statistics()`` dict (dates as ISO 8601 UTC ``Z``)."""
        elapsed = 0.0
        if self.first_item_at is not None:
            end = self.last_delivery_at or now
            elapsed = max(end - self.first_item_at, 0.0)
        return {
            "total_items_processed": self.items_processed,
            "total_batches_processed": self.batches_processed,
            "total_items_sent": self.items_sent,
            "current_batch_size": pending,
            "failed_items_count": failed,
            "latest_date": None if latest is None else format_instant(latest),
            "batch_size_limit": batch_size,
            "total_items_accepted": self.accepted,
            "rejected_items": sum(self.rejected.values()),
            "rejected_by_reason": dict(self.rejected),
            "date_errors": self.date_errors,
            "failed_batches": self.batches_failed,
            "retries": self.retries,
            "total_objects_sent": self.objects_sent,
            "reference_objects_added": self.references_added,
            "unresolved_references": self.references_unresolved,
            "committed_cursor": committed,
            "state_update_errors": state_errors,
            "work_close_errors": self.close_errors,
            "hook_errors": self.hook_errors,
            "dead_letters": dead_letters,
            "items_per_second": (self.items_processed / elapsed) if elapsed > 0 else 0.0,
            "out_of_order_items": self.out_of_order,
        }


def _by_reason(counts: dict[str, int]) -> str:
    """``reason=n, …`` in reason order."""
    return ", ".join(f"{reason}={n}" for reason, n in sorted(counts.items()))


class BatchLog:
    """The processor's log lines: one per batch outcome, never one per item."""

    def __init__(self, logger: Any, display_name: str, max_retries: int) -> None:
        self.logger = logger
        self._name = display_name
        self._tries = max_retries + 1

    def delivered(
        self, number: int, sent: int, objects: int, work_id: str, attempts: int, cursor: str | None
    ) -> None:
        retried = f" after {attempts} attempts" if attempts > 1 else ""
        self.logger.info(
            f"Batch #{number}: {sent} {self._name} ({objects} objects) delivered in work "
            f"{work_id}{retried}; cursor {cursor or 'unchanged'}"
        )

    def failed(self, number: int, items: int, reason: str) -> None:
        self.logger.error(
            f"Batch #{number}: {items} {self._name} failed for good ({reason}); "
            "kept as failed items, cursor held"
        )

    def timed_out(self, number: int, timeout: float | None, attempts: int, error: object) -> None:
        self.logger.warning(
            f"Batch #{number}: work_timeout of {timeout}s reached after {attempts} attempt(s); "
            f"last error: {error}"
        )

    def retrying(self, number: int, attempt: int, delay: float, exc: BaseException) -> None:
        self.logger.warning(
            f"Batch #{number} attempt {attempt}/{self._tries} failed "
            f"({type(exc).__name__}: {exc}); retrying in {delay:.2f}s"
        )

    def close_failed(self, work_id: str, exc: BaseException) -> None:
        self.logger.error(f"Work {work_id} could not be closed: {exc!r}")

    def hook_failed(self, number: int, exc: BaseException) -> None:
        self.logger.error(
            f"Batch #{number}: postprocessing_function raised {exc!r} (the batch was delivered)"
        )

    def out_of_order(
        self, state_key: str, date: dt.datetime, latest: dt.datetime, is_sorted: bool | None
    ) -> None:
        promise = "is_sorted=True, but an item" if is_sorted else "An item"
        self.logger.warning(
            f"{promise} dated {format_instant(date)} arrived after {format_instant(latest)}: "
            f"the feed is not sorted by date, so cursor {state_key} no longer moves mid-run; "
            "it moves at the end of the run, once everything accepted was delivered"
        )

    def rejected(self, counts: dict[str, int]) -> None:
        """Rejected items since the last report, by reason (WARNING: bad input is news)."""
        if counts:
            self.logger.warning(
                f"{sum(counts.values())} {self._name} rejected since the last report "
                f"({_by_reason(counts)}); they are counted in rejected_by_reason, details at DEBUG"
            )

    def nothing_accepted(self, rejected: dict[str, int]) -> None:
        """The end of a run that accepted nothing: ERROR when everything was rejected."""
        if rejected:
            self.logger.error(
                f"Nothing was delivered: all {sum(rejected.values())} {self._name} offered "
                f"were rejected ({_by_reason(rejected)})"
            )
        else:
            self.logger.warning(f"Nothing was delivered: no {self._name} were offered")

    def held(self, state_key: str, committed: str | None, undelivered: int) -> None:
        self.logger.warning(
            f"Cursor {state_key} held at {committed or 'its stored value'}: "
            f"{undelivered} item(s) are not delivered"
        )
