"""The URLhaus connector: feed rows → STIX groups → batches, with a safe cursor.

A run reads the feed once.  Rows at or before the saved cursor (the latest
delivered ``dateadded``; on a first run after the upstream connector, its
``last_processed_entry``) are skipped, and so are rows whose ``url_status``
is "offline" when ``URLHAUS_IMPORT_OFFLINE`` is false.  The others are
spooled (:class:`~example_connector.spool.RowSpool`) and delivered oldest
first, so the cursor the engine saves after each batch never passes a row
still to come, whatever order the feed is published in.  Each run's works are
named by its start time and batch number (``URLhaus run @ … — batch #3``).
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from connector_batching import (
    BatchingConnectorMixin,
    DeadLetterStore,
    GenericBatchProcessorConfig,
    format_instant,
)
from example_connector.client import FeedError, FeedReader
from example_connector.converter import URLhausConverter
from example_connector.delivery import ProgressCallback, RunDelivery
from example_connector.logs import ConnectorLog
from example_connector.settings import Settings
from example_connector.spool import RowSpool
from example_connector.state import (
    STATE_KEY,
    UPSTREAM_STATE_KEY,
    indicator_date,
    row_ids,
    upstream_cursor,
)
from example_connector.summary import RunSummary
from example_connector.threats import ThreatResolver
from example_connector.urls import redact_url

__all__ = ["STATE_KEY", "RowSpool", "RunSummary", "URLhausConnector", "indicator_date"]


def run_label(moment: dt.datetime) -> str:
    """A run's start as it appears in its works' names: ``2026-12-02T10:00:00Z``."""
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class URLhausConnector(BatchingConnectorMixin):
    """External-import connector for URLhaus-format CSV feeds.

    Online, pass the pycti ``helper`` (batches go through ``OpenCTIWorkManager``,
    lines through ``helper.connector_logger``); offline, pass
    ``work_manager=LocalWorkManager(directory)`` and no helper (lines go to
    ``logger``, default the stdlib ``example_connector`` logger).  Set
    :attr:`stop_event` to stop a run early: reading stops, the current batch
    is flushed and the cursor saved.

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
        self.log = ConnectorLog(helper, logger)
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
        started: dt.datetime | None = None,
    ) -> GenericBatchProcessorConfig:
        """The engine configuration: the rows of one ``dateadded`` second count as one item.

        ``on_delivered(items, work_id)`` runs after each delivered batch; works
        are named after ``started`` (default: now).  Every batch carries the
        author and the marking (:meth:`_with_shared`), so a batch of dead
        letters re-sent first by a new process is reference-complete too.
        """
        options = self.settings.urlhaus
        label = run_label(started or dt.datetime.now(dt.UTC))
        return GenericBatchProcessorConfig(
            dead_letter_path=str(self.dead_letter_path),
            preprocessing_function=self._with_shared,
            postprocessing_function=on_delivered,
            batch_size=batch_size or options.batch_size,
            work_name_template=f"URLhaus run @ {label} — batch #{{batch_num}}",
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
            return row_ids(payload for _row, payload, _span in store.load(STATE_KEY))
        finally:
            store.close()

    def _with_shared(self, items: list[Any]) -> list[Any]:
        """A batch's items preceded by the author and the marking (one group)."""
        return [self.converter.shared_objects, *items]

    def start_cursor(self) -> tuple[dt.datetime | None, str | None]:
        """The cursor a run starts from, and the key it came from when not :data:`STATE_KEY`."""
        cursor = self.get_cursor(STATE_KEY)
        if cursor is not None:
            return cursor, None
        read = getattr(self.work_manager, "get_state", None)
        upstream = upstream_cursor(read(UPSTREAM_STATE_KEY)) if callable(read) else None
        if upstream is None:
            return None, None
        self.log.info(
            "Continuing from the upstream URLhaus connector's state: rows added at or "
            "before its last_processed_entry are skipped",
            {"last_processed_entry": format_instant(upstream)},
        )
        return upstream, UPSTREAM_STATE_KEY

    def threat_resolver(self) -> ThreatResolver | None:
        """A per-run threat lookup, when ``URLHAUS_THREATS_FROM_LABELS`` is on and a platform is."""
        if not self.settings.urlhaus.threats_from_labels:
            return None
        if self.helper is None:
            self.log.info(
                "URLHAUS_THREATS_FROM_LABELS: no platform to look threats up (file output); "
                "no threat relationships are made"
            )
            return None
        return ThreatResolver(self.helper, self.log)

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
        source = feed or options.csv_url
        started, clock = now or dt.datetime.now(dt.UTC), time.monotonic()
        self.running.set()
        try:
            cursor, cursor_source = self.start_cursor()
            summary = RunSummary(
                feed=redact_url(source),
                started_at=run_label(started),
                cursor_before=None if cursor is None else format_instant(cursor),
                cursor_source=cursor_source,
                row_limit=options.max_rows_per_run,
            )
            reader = FeedReader(
                source,
                timeout=options.request_timeout,
                retries=options.request_retries,
                not_after=started + options.future_margin,
                log=self.log,
            )
            dead_rows = self.dead_letter_rows()
            summary.dead_letters_before = len(dead_rows)
            with RowSpool(max_rows=options.max_rows_per_run) as spool:
                for row in reader.rows():
                    if self.stop_event.is_set():
                        summary.stopped = True
                        break
                    if cursor is not None and row.dateadded <= cursor:
                        summary.rows_skipped += 1
                    elif not options.import_offline and row.url_status.lower() == "offline":
                        summary.rows_offline_skipped += 1
                    elif row.id not in dead_rows:  # those are re-sent from the dead letters
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
                    run = RunDelivery(self, spool, progress)
                    run.deliver(summary, batch_size, started, resend=resend)
            left = self.dead_letter_rows()
            summary.dead_letters_remaining = len(left)
            summary.dead_letters_resent = len(dead_rows - left)
        finally:
            self.running.clear()
        cursor_after = self.get_cursor(STATE_KEY)
        summary.cursor_after = None if cursor_after is None else format_instant(cursor_after)
        summary.elapsed = time.monotonic() - clock
        return summary

    def _log_row_limit(self, spool: RowSpool, limit: int) -> None:
        kept_until = "-" if spool.deferred_from is None else format_instant(spool.deferred_from)
        meta = {"limit": limit, "deferred_rows": spool.deferred, "from": kept_until}
        if len(spool) == 0:
            self.log.error(
                f"URLHAUS_MAX_ROWS_PER_RUN ({limit}) reached and more rows than that share the "
                f"second {kept_until}: nothing can be delivered without splitting it; raise "
                "URLHAUS_MAX_ROWS_PER_RUN (urlhaus.max_rows_per_run)",
                meta,
            )
            return
        self.log.warning(
            f"URLHAUS_MAX_ROWS_PER_RUN ({limit}) reached: delivering the {len(spool)} oldest "
            f"new rows; {spool.deferred} rows from {kept_until} on wait for the next run "
            "(the cursor stops before them)",
            meta,
        )

    def process(self) -> None:
        """One scheduled run against OpenCTI (the ``schedule_iso`` callback).

        A feed that cannot be read is logged and retried at the next run; any
        other error marks the connector :attr:`failed` and propagates to pycti
        (which stops the process).  The run's summary is logged once.
        """
        try:
            summary = self.run_once()
        except FeedError as exc:
            self.log.error(f"URLhaus run skipped, the next run retries: {exc}")
            return
        except Exception:
            self.failed = True
            raise
        if summary.ok:
            self.log.info(summary.message(), summary.meta())
        else:
            self.log.warning(summary.message(), summary.meta())
        if self.stop_event.is_set():
            raise SystemExit(0)
