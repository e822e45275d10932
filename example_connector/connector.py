"""The URLhaus connector: feed rows → STIX groups → batches, with a safe cursor.

A run reads the feed once.  Rows at or before the saved cursor (the latest
delivered ``dateadded``) are skipped; the others are spooled to a temporary
SQLite file and then delivered oldest first, so the cursor the engine saves
after each batch never passes a row that is still to come — whatever order
the feed is published in (URLhaus publishes newest first).  Memory stays
bounded: rows stream from the feed to disk and from disk to the engine.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import sqlite3
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

from connector_batching.config import GenericBatchProcessorConfig
from connector_batching.cursor import format_instant
from connector_batching.mixin import BatchingConnectorMixin
from example_connector.client import FeedError, FeedReader, FeedRow, redact_url
from example_connector.converter import URLhausConverter
from example_connector.settings import Settings

__all__ = ["STATE_KEY", "RowSpool", "RunSummary", "URLhausConnector", "indicator_date"]

#: State key of the cursor (latest delivered ``dateadded``).
STATE_KEY = "urlhaus_last_dateadded"

ProgressCallback = Callable[[int, int], None]


def indicator_date(obj: Any) -> Any:
    """Date extraction for the engine: an indicator's ``valid_from`` is its row's ``dateadded``.

    Other members of a row's group (observable, relationship, author, marking)
    carry no feed date.
    """
    if type(obj) is dict and obj.get("type") == "indicator":
        return obj.get("valid_from")
    return None


def _count_rows(payloads: list[Any]) -> int:
    """Feed rows in normalised engine payloads: one indicator per row."""
    return sum(
        1
        for payload in payloads
        for obj in (payload if type(payload) is list else [payload])
        if type(obj) is dict and obj.get("type") == "indicator"
    )


class RowSpool:
    """A temporary on-disk table of feed rows, read back ordered by ``dateadded``."""

    _COLUMNS = "added, id_num, line, id, url, url_status, last_online, threat, tags, link, reporter"

    def __init__(self) -> None:
        self._tmp = tempfile.TemporaryDirectory(prefix="urlhaus-spool-")
        self._db = sqlite3.connect(Path(self._tmp.name) / "spool.db")
        self._db.execute("PRAGMA journal_mode=OFF")
        self._db.execute("PRAGMA synchronous=OFF")
        self._db.execute(f"CREATE TABLE rows ({self._COLUMNS})")
        self._pending: list[tuple[Any, ...]] = []
        self._count = 0

    def add(self, row: FeedRow) -> None:
        """Spool one row."""
        self._pending.append(
            (
                row.dateadded.strftime("%Y-%m-%dT%H:%M:%S.%f"),
                int(row.id) if row.id.isdigit() else None,
                row.line_number,
                row.id,
                row.url,
                row.url_status,
                None if row.last_online is None else row.last_online.isoformat(),
                row.threat,
                json.dumps(row.tags),
                row.urlhaus_link,
                row.reporter,
            )
        )
        self._count += 1
        if len(self._pending) >= 1000:
            self._write()

    def _write(self) -> None:
        if self._pending:
            self._db.executemany(f"INSERT INTO rows VALUES ({', '.join('?' * 11)})", self._pending)
            self._pending.clear()

    def __len__(self) -> int:
        return self._count

    def rows(self) -> Iterator[FeedRow]:
        """The spooled rows, oldest ``dateadded`` first (then by URLhaus id, line)."""
        self._write()
        query = f"SELECT {self._COLUMNS} FROM rows ORDER BY added, id_num, line"
        for (
            added,
            _num,
            line,
            row_id,
            url,
            status,
            last,
            threat,
            tags,
            link,
            rep,
        ) in self._db.execute(query):
            yield FeedRow(
                line_number=line,
                id=row_id,
                dateadded=dt.datetime.fromisoformat(added).replace(tzinfo=dt.UTC),
                url=url,
                url_status=status,
                last_online=None if last is None else dt.datetime.fromisoformat(last),
                threat=threat,
                tags=tuple(json.loads(tags)),
                urlhaus_link=link,
                reporter=rep,
            )

    def close(self) -> None:
        """Delete the spool."""
        self._db.close()
        self._tmp.cleanup()

    def __enter__(self) -> RowSpool:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


@dataclass
class RunSummary:
    """What one run did."""

    feed: str
    cursor_before: str | None = None
    cursor_after: str | None = None
    rows_read: int = 0
    rows_rejected: int = 0
    rejected_by_reason: dict[str, int] = field(default_factory=dict)
    rows_skipped: int = 0
    rows_queued: int = 0
    rows_delivered: int = 0
    rows_failed: int = 0
    objects_produced: int = 0
    objects_sent: int = 0
    batches: int = 0
    failed_batches: int = 0
    bundles_written: int | None = None
    elapsed: float = 0.0
    stopped: bool = False

    @property
    def rate(self) -> float:
        """Delivered rows per second."""
        return self.rows_delivered / self.elapsed if self.elapsed > 0 else 0.0

    @property
    def ok(self) -> bool:
        """True when nothing failed for good."""
        return self.failed_batches == 0 and self.rows_failed == 0

    def table(self) -> str:
        """The summary as an aligned two-column table."""
        rejected = str(self.rows_rejected)
        if self.rejected_by_reason:
            reasons = ", ".join(f"{k} {v}" for k, v in sorted(self.rejected_by_reason.items()))
            rejected += f"  ({reasons})"
        lines = [
            ("feed", self.feed),
            ("rows read", str(self.rows_read)),
            ("rows rejected", rejected),
            ("rows skipped (<= cursor)", str(self.rows_skipped)),
            ("rows delivered", f"{self.rows_delivered} of {self.rows_queued}"),
            ("rows failed", str(self.rows_failed)),
            ("objects (sent)", f"{self.objects_produced} ({self.objects_sent})"),
            ("batches (failed)", f"{self.batches} ({self.failed_batches})"),
        ]
        if self.bundles_written is not None:
            lines.append(("bundles written", str(self.bundles_written)))
        lines += [
            ("cursor", f"{self.cursor_before or '-'} -> {self.cursor_after or '-'}"),
            ("elapsed", f"{self.elapsed:.2f} s"),
            ("rate", f"{self.rate:,.0f} rows/s"),
        ]
        if self.stopped:
            lines.append(("stopped early", "yes (signal): rerun to continue"))
        width = max(len(name) for name, _ in lines)
        rule = "-" * min(72, width + 2 + max(len(value) for _, value in lines))
        body = "\n".join(f"{name.ljust(width)}  {value}" for name, value in lines)
        return f"{rule}\n{body}\n{rule}"


class URLhausConnector(BatchingConnectorMixin):
    """External-import connector for URLhaus-format CSV feeds.

    Online, pass the pycti ``helper`` (batches go through ``OpenCTIWorkManager``);
    offline, pass ``work_manager=LocalWorkManager(directory)`` and no helper.
    Set :attr:`stop_event` to stop a run early: reading stops, the current
    batch is flushed and the cursor saved.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        helper: Any = None,
        work_manager: Any = None,
        logger: logging.Logger | None = None,
        stop_event: threading.Event | None = None,
    ) -> None:
        self.settings = settings
        self.helper = helper
        if work_manager is not None:
            self.work_manager = work_manager
        self.logger = logger or logging.getLogger("example_connector")
        self.stop_event = stop_event or threading.Event()
        self.running = threading.Event()
        self.failed = False
        self.converter = URLhausConverter(
            tlp_level=settings.urlhaus.tlp_level, score=settings.urlhaus.score
        )

    def processor_config(
        self,
        batch_size: int | None = None,
        *,
        on_delivered: Callable[[list[Any], str], Any] | None = None,
    ) -> GenericBatchProcessorConfig:
        """The engine configuration: the rows of one ``dateadded`` second count as one item.

        ``on_delivered(items, work_id)`` runs after each delivered batch.
        """
        options = self.settings.urlhaus
        return GenericBatchProcessorConfig(
            postprocessing_function=on_delivered,
            batch_size=batch_size or options.batch_size,
            work_name_template="URLhaus import batch #{batch_num}",
            state_key=STATE_KEY,
            entity_type="indicator",
            display_name="URLhaus rows",
            display_name_singular="URLhaus row",
            date_extraction_function=indicator_date,
            max_retries=options.max_retries,
            retry_delay=options.retry_delay,
        )

    def run_once(
        self,
        feed: str | None = None,
        *,
        batch_size: int | None = None,
        progress: ProgressCallback | None = None,
    ) -> RunSummary:
        """Import the feed once; returns what was done.  Raises ``FeedError``."""
        options = self.settings.urlhaus
        source = feed or options.feed_url
        started = time.monotonic()
        cursor = self.get_cursor(STATE_KEY)
        summary = RunSummary(
            feed=redact_url(source),
            cursor_before=None if cursor is None else format_instant(cursor),
        )
        reader = FeedReader(
            source,
            timeout=options.request_timeout,
            retries=options.request_retries,
            logger=self.logger,
        )
        self.running.set()
        try:
            with RowSpool() as spool:
                for row in reader.rows():
                    if self.stop_event.is_set():
                        summary.stopped = True
                        break
                    if cursor is not None and row.dateadded <= cursor:
                        summary.rows_skipped += 1
                        continue
                    spool.add(row)
                summary.rows_read = reader.stats.rows_read
                summary.rows_rejected = reader.stats.rows_rejected
                summary.rejected_by_reason = dict(reader.stats.rejected)
                summary.rows_queued = len(spool)
                if not summary.stopped:
                    self._deliver(spool, summary, batch_size, progress)
        finally:
            self.running.clear()
        cursor_after = self.get_cursor(STATE_KEY)
        summary.cursor_after = None if cursor_after is None else format_instant(cursor_after)
        summary.elapsed = time.monotonic() - started
        self.logger.info(
            "URLhaus run done: %d rows read, %d rejected, %d skipped, %d delivered in %d "
            "batches, %d failed; cursor %s",
            summary.rows_read,
            summary.rows_rejected,
            summary.rows_skipped,
            summary.rows_delivered,
            summary.batches,
            summary.rows_failed,
            summary.cursor_after or "-",
        )
        return summary

    def _deliver(
        self,
        spool: RowSpool,
        summary: RunSummary,
        batch_size: int | None,
        progress: ProgressCallback | None,
    ) -> None:
        total = len(spool)
        if total == 0:
            return
        delivered = [0]

        def count_delivered(items: list[Any], work_id: str) -> None:
            delivered[0] += _count_rows(items)

        processor = self.create_batch_processor(
            self.processor_config(batch_size, on_delivered=count_delivered), logger=self.logger
        )
        converter = self.converter
        produced = done = 0
        pending: list[FeedRow] = []

        def add_pending() -> None:
            nonlocal produced, done
            group = converter.group(pending, with_shared=done == 0)
            produced += len(group)
            done += len(pending)
            pending.clear()
            try:
                processor.add_item(group)
            except Exception as exc:  # a batch failed for good: its rows are kept as failed
                self.logger.error("batch delivery failed for good: %s", exc)
            if progress is not None:
                progress(done, total)

        try:
            with processor:  # flushes and saves the cursor on exit, also on error
                for row in spool.rows():
                    if pending and row.dateadded != pending[-1].dateadded:
                        add_pending()  # rows of one second stay in one group
                        if self.stop_event.is_set():
                            summary.stopped = True
                            break
                    pending.append(row)
                if pending:
                    add_pending()
        except Exception as exc:  # the final flush failed for good
            self.logger.error("final batch delivery failed for good: %s", exc)
        stats = processor.get_statistics()
        summary.objects_produced = produced
        summary.rows_delivered = delivered[0]
        summary.rows_failed = _count_rows(processor.get_failed_items())
        summary.objects_sent = stats.get("total_objects_sent", 0)
        summary.batches = stats["total_batches_processed"]
        summary.failed_batches = stats.get("failed_batches", 0)

    def process(self) -> None:
        """One scheduled run against OpenCTI (the ``schedule_iso`` callback).

        A feed that cannot be read is logged and retried at the next run; any
        other error marks the connector :attr:`failed` and propagates to pycti
        (which stops the process).
        """
        try:
            summary = self.run_once()
        except FeedError as exc:
            self.logger.error("URLhaus run skipped, the next run retries: %s", exc)
            return
        except Exception:
            self.failed = True
            raise
        if self.helper is not None:
            message = (
                f"{summary.rows_delivered} rows delivered in {summary.batches} batches, "
                f"{summary.rows_rejected} rejected, {summary.rows_failed} failed; "
                f"cursor {summary.cursor_after or '-'}"
            )
            self.helper.connector_logger.info(message)
        if self.stop_event.is_set():
            raise SystemExit(0)
