"""One run's delivery: spooled rows → row groups → the batch processor, and what it did.

The rows of one ``dateadded`` second go to the engine as one group, so a batch
boundary never falls between them; earlier runs' dead letters are queued
first.  The counters live on :class:`RunDelivery` (the processor's
``postprocessing_function`` adds the rows delivered) and end in the run's
:class:`~example_connector.summary.RunSummary`.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from example_connector.rows import FeedRow
from example_connector.spool import RowSpool
from example_connector.state import count_rows
from example_connector.summary import RunSummary
from example_connector.threats import ThreatResolver

if TYPE_CHECKING:
    from example_connector.connector import URLhausConnector

__all__ = ["ProgressCallback", "RunDelivery"]

ProgressCallback = Callable[[int, int], None]
#: Objects a row always produces: observable, indicator, ``based-on`` relationship.
_ROW_OBJECTS = 3


class RunDelivery:
    """Delivers one run's spooled rows through a new batch processor of ``connector``."""

    def __init__(
        self, connector: URLhausConnector, spool: RowSpool, progress: ProgressCallback | None
    ) -> None:
        self.connector = connector
        self.spool = spool
        self.progress = progress
        self.total = len(spool)
        self.rows_done = 0  # rows handed to the processor
        self.rows_delivered = 0
        self.objects_produced = 0
        self.threat_links = 0
        self.threats: ThreatResolver | None = None

    def on_delivered(self, items: list[Any], work_id: str) -> None:
        """The processor's hook after each delivered batch."""
        self.rows_delivered += count_rows(items)

    def deliver(
        self,
        summary: RunSummary,
        batch_size: int | None,
        started: dt.datetime,
        *,
        resend: bool = False,
    ) -> None:
        """Send the dead letters (``resend``) and the spooled rows; fill ``summary``."""
        if self.total == 0 and not resend:
            return
        connector, log = self.connector, self.connector.log
        self.threats = connector.threat_resolver()
        config = connector.processor_config(
            batch_size, on_delivered=self.on_delivered, started=started
        )
        processor = connector.create_batch_processor(config, logger=log.target)
        pending: list[FeedRow] = []
        try:
            with processor:  # flushes and saves the cursor on exit, also on error
                if resend:
                    self._resend_dead_letters(processor)
                for row in self.spool.rows():
                    if pending and row.dateadded != pending[-1].dateadded:
                        self._add_group(processor, pending)  # one second: one group
                        if connector.stop_event.is_set():
                            summary.stopped = True
                            break
                    pending.append(row)
                if pending:
                    self._add_group(processor, pending)
        except Exception as exc:  # the final flush failed for good
            log.error(f"final batch delivery failed for good: {exc}")
        stats = processor.get_statistics()
        summary.objects_produced = self.objects_produced
        summary.rows_delivered = self.rows_delivered
        summary.rows_failed = count_rows(processor.get_failed_items())
        summary.objects_sent = stats.get("total_objects_sent", 0)
        summary.batches = stats["total_batches_processed"]
        summary.failed_batches = stats.get("failed_batches", 0)
        summary.threat_links = None if self.threats is None else self.threat_links

    def _add_group(self, processor: Any, pending: list[FeedRow]) -> None:
        converter = self.connector.converter
        group = converter.group(pending, threats=self.threats)  # author, marking: per batch
        shared = len(converter.shared_objects) if self.rows_done == 0 else 0
        self.objects_produced += len(group) + shared
        self.threat_links += len(group) - _ROW_OBJECTS * len(pending)
        self.rows_done += len(pending)
        pending.clear()
        try:
            processor.add_item(group)
        except Exception as exc:  # a batch failed for good: its rows are kept as failed
            self.connector.log.error(f"batch delivery failed for good: {exc}")
        if self.progress is not None:
            self.progress(self.rows_done, self.total)

    def _resend_dead_letters(self, processor: Any) -> None:
        """Queue the earlier runs' dead letters ahead of the feed's rows."""
        log = self.connector.log
        try:
            requeued = processor.retry_failed()
        except Exception as exc:  # a full batch of them was sent at once and failed again
            log.error(f"re-sending dead letters failed for good: {exc}")
            return
        log.info(f"re-sending {requeued} dead-letter items first", {"items": requeued})
