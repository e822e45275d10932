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
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

from connector_batching.config import GenericBatchProcessorConfig
from connector_batching.cursor import format_instant
from connector_batching.dead_letters import DeadLetterStore
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


def _row_ids(payloads: Iterable[Any]) -> set[str]:
    """URLhaus ids (the indicators' ``external_id``) of the rows in ``payloads``."""
    ids: set[str] = set()
    for payload in payloads:
        for obj in payload if type(payload) is list else [payload]:
            if type(obj) is dict and obj.get("type") == "indicator":
                for ref in obj.get("external_references") or ():
                    if ref.get("source_name") == "urlhaus" and ref.get("external_id"):
                        ids.add(str(ref["external_id"]))
    return ids


class RowSpool:
    """A temporary on-disk table of feed rows, read back ordered by ``dateadded``.

    With ``max_rows``, at most the ``max_rows`` oldest rows are kept (disk use
    stays bounded whatever the feed's size): :meth:`finish` cuts at a
    ``dateadded`` second, so the rows kept are exactly those before some
    instant and a cursor at the last of them never passes a row left out.
    """

    _COLUMNS = "added, id_num, line, id, url, url_status, last_online, threat, tags, link, reporter"
    _ORDER = "added, id_num, line"
    _ORDER_DESC = "added DESC, id_num DESC, line DESC"

    def __init__(self, max_rows: int | None = None) -> None:
        self._tmp = tempfile.TemporaryDirectory(prefix="urlhaus-spool-")
        self._db = sqlite3.connect(Path(self._tmp.name) / "spool.db")
        self._db.execute("PRAGMA journal_mode=OFF")
        self._db.execute("PRAGMA synchronous=OFF")
        self._db.execute(f"CREATE TABLE rows ({self._COLUMNS})")
        self._pending: list[tuple[Any, ...]] = []
        self._max_rows = max_rows
        self._slack = 0 if max_rows is None else max(1000, max_rows // 4)
        self._added = 0  # rows given to add()
        self._stored = 0  # rows in the table
        self._count = 0  # rows kept (after finish())
        #: Rows left out by the ``max_rows`` limit (known after :meth:`finish`).
        self.deferred = 0
        #: The ``dateadded`` from which rows were left out, or ``None``.
        self.deferred_from: dt.datetime | None = None

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
        self._added += 1
        self._count = self._added
        if len(self._pending) >= 1000:
            self._write()

    def _write(self) -> None:
        if self._pending:
            self._db.executemany(f"INSERT INTO rows VALUES ({', '.join('?' * 11)})", self._pending)
            self._stored += len(self._pending)
            self._pending.clear()
        if self._max_rows is not None and self._stored > self._max_rows + 1 + self._slack:
            self._keep_oldest(self._max_rows + 1)

    def _keep_oldest(self, keep: int) -> None:
        excess = self._stored - keep
        if excess > 0:
            self._db.execute(
                "DELETE FROM rows WHERE rowid IN (SELECT rowid FROM rows"
                f" ORDER BY {self._ORDER_DESC} LIMIT ?)",
                (excess,),
            )
            self._stored = keep

    def finish(self) -> int:
        """Apply the row limit once every row was added; returns the rows kept."""
        self._write()
        if self._max_rows is not None and self._stored > self._max_rows:
            self._keep_oldest(self._max_rows + 1)
            (cut,) = self._db.execute(
                f"SELECT added FROM rows ORDER BY {self._ORDER} LIMIT 1 OFFSET ?",
                (self._max_rows,),
            ).fetchone()
            self._db.execute("DELETE FROM rows WHERE added >= ?", (cut,))
            (self._stored,) = self._db.execute("SELECT COUNT(*) FROM rows").fetchone()
            self.deferred = self._added - self._stored
            self.deferred_from = dt.datetime.fromisoformat(cut).replace(tzinfo=dt.UTC)
        self._count = self._stored
        return self._count

    def __len__(self) -> int:
        return self._count

    def rows(self) -> Iterator[FeedRow]:
        """The spooled rows, oldest ``dateadded`` first (then by URLhaus id, line)."""
        self._write()
        query = f"SELECT {self._COLUMNS} FROM rows ORDER BY {self._ORDER}"
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
    rows_deferred: int = 0
    row_limit: int | None = None
    rows_queued: int = 0
    dead_letters_before: int = 0
    dead_letters_resent: int = 0
    dead_letters_remaining: int = 0
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
        ]
        if self.rows_deferred:
            lines.append(
                ("rows deferred (limit)", f"{self.rows_deferred}  (max {self.row_limit} per run)")
            )
        lines += [
            ("rows delivered", f"{self.rows_delivered} of {self.rows_queued}"),
            (
                "dead letters",
                f"{self.dead_letters_resent} re-sent, {self.dead_letters_remaining} remaining",
            ),
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

    Dead letters are always on: the rows of a batch that fails for good are
    kept in the SQLite file ``dead_letter_path`` (default: the
    ``urlhaus.dead_letter_path`` setting), hold the cursor, and are re-sent
    first by the next run.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        helper: Any = None,
        work_manager: Any = None,
        logger: logging.Logger | None = None,
        stop_event: threading.Event | None = None,
        dead_letter_path: str | Path | None = None,
    ) -> None:
        self.settings = settings
        self.dead_letter_path = Path(dead_letter_path or settings.urlhaus.dead_letter_path)
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

        ``on_delivered(items, work_id)`` runs after each delivered batch.  Every
        batch carries the author and the marking (:meth:`_with_shared`), so a
        batch of dead letters re-sent first by a new process — which has not
        seen the author yet — is reference-complete too.
        """
        options = self.settings.urlhaus
        return GenericBatchProcessorConfig(
            dead_letter_path=str(self.dead_letter_path),
            preprocessing_function=self._with_shared,
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

    def dead_letter_rows(self) -> set[str]:
        """URLhaus ids of the rows waiting in the dead-letter store."""
        if not self.dead_letter_path.exists():
            return set()
        store = DeadLetterStore(self.dead_letter_path)
        try:
            return _row_ids(payload for _row, payload, _span in store.load(STATE_KEY))
        finally:
            store.close()

    def _with_shared(self, items: list[Any]) -> list[Any]:
        """A batch's items preceded by the author and the marking (one group)."""
        return [self.converter.shared_objects, *items]

    def run_once(
        self,
        feed: str | None = None,
        *,
        batch_size: int | None = None,
        progress: ProgressCallback | None = None,
        now: dt.datetime | None = None,
    ) -> RunSummary:
        """Import the feed once; returns what was done.  Raises ``FeedError``.

        The rows of earlier runs' failed batches (dead letters) are sent first;
        feed rows among them are not sent twice.  Rows dated after ``now``
        (default: the current time) plus ``future_date_margin`` are rejected.
        """
        options = self.settings.urlhaus
        source = feed or options.feed_url
        started = time.monotonic()
        cursor = self.get_cursor(STATE_KEY)
        summary = RunSummary(
            feed=redact_url(source),
            cursor_before=None if cursor is None else format_instant(cursor),
            row_limit=options.max_rows_per_run,
        )
        reader = FeedReader(
            source,
            timeout=options.request_timeout,
            retries=options.request_retries,
            not_after=(now or dt.datetime.now(dt.UTC)) + options.future_margin,
            logger=self.logger,
        )
        self.running.set()
        try:
            dead_rows = self.dead_letter_rows()
            summary.dead_letters_before = len(dead_rows)
            with RowSpool(max_rows=options.max_rows_per_run) as spool:
                for row in reader.rows():
                    if self.stop_event.is_set():
                        summary.stopped = True
                        break
                    if cursor is not None and row.dateadded <= cursor:
                        summary.rows_skipped += 1
                        continue
                    if row.id in dead_rows:  # re-sent from the dead letters
                        continue
                    spool.add(row)
                summary.rows_read = reader.stats.rows_read
                summary.rows_rejected = reader.stats.rows_rejected
                summary.rejected_by_reason = dict(reader.stats.rejected)
                summary.rows_queued = spool.finish() + len(dead_rows)
                summary.rows_deferred = spool.deferred
                if spool.deferred:
                    self._log_row_limit(spool, options.max_rows_per_run)
                if not summary.stopped:
                    resend = bool(dead_rows) or self.dead_letter_path.exists()
                    self._deliver(spool, summary, batch_size, progress, resend=resend)
            left = self.dead_letter_rows()
            summary.dead_letters_remaining = len(left)
            summary.dead_letters_resent = len(dead_rows - left)
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

    def _log_row_limit(self, spool: RowSpool, limit: int) -> None:
        kept_until = "-" if spool.deferred_from is None else format_instant(spool.deferred_from)
        if len(spool) == 0:
            self.logger.error(
                "URLHAUS_MAX_ROWS_PER_RUN (%d) reached and more rows than that share the "
                "second %s: nothing can be delivered without splitting it; raise "
                "URLHAUS_MAX_ROWS_PER_RUN (urlhaus.max_rows_per_run)",
                limit,
                kept_until,
            )
            return
        self.logger.warning(
            "URLHAUS_MAX_ROWS_PER_RUN (%d) reached: delivering the %d oldest new rows; "
            "%d rows from %s on wait for the next run (the cursor stops before them)",
            limit,
            len(spool),
            spool.deferred,
            kept_until,
        )

    def _deliver(
        self,
        spool: RowSpool,
        summary: RunSummary,
        batch_size: int | None,
        progress: ProgressCallback | None,
        *,
        resend: bool = False,
    ) -> None:
        total = len(spool)
        if total == 0 and not resend:
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
            group = converter.group(pending)  # author and marking: see _with_shared
            produced += len(group) + (len(converter.shared_objects) if done == 0 else 0)
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
                if resend:
                    self._resend_dead_letters(processor)
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

    def _resend_dead_letters(self, processor: Any) -> None:
        """Queue the earlier runs' dead letters ahead of the feed's rows."""
        try:
            requeued = processor.retry_failed()
        except Exception as exc:  # a full batch of them was sent at once and failed again
            self.logger.error("re-sending dead letters failed for good: %s", exc)
            return
        self.logger.info("re-sending %d dead-letter items first", requeued)

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
