"""`GenericBatchProcessor`: the facade that wires the engine's parts and holds the lock.

intake (one item in) → buffer (append, cut) → delivery (open → send → close
under the retry policy) → ledger (what is undelivered) → checkpoint (the safe
cursor) → statistics.  Each guarantee lives in one of those parts; this class
only orders them.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from collections.abc import Callable, Iterable
from itertools import islice
from types import TracebackType
from typing import Any

from connector_batching.batch import Batch
from connector_batching.buffer import Buffer
from connector_batching.config import GenericBatchProcessorConfig
from connector_batching.dates import parse_instant
from connector_batching.dead_letters import DeadLetterStore
from connector_batching.errors import build_error
from connector_batching.manager_calls import ManagerCalls
from connector_batching.pipeline import BatchPipeline, DirectDelivery
from connector_batching.settlement import Settlement

_LOG = logging.getLogger("connector_batching")


class GenericBatchProcessor:
    """Collects items into batches and delivers each through a work manager.

    Guarantees: every accepted item is delivered in exactly one successful batch
    or kept as failed; the cursor never passes an undelivered item's date; every
    work opened is closed; a batch carries the objects it references.  Thread-safe.
    ``clock``/``sleep`` (keyword-only) replace ``time.monotonic``/``time.sleep``.
    """

    def __init__(
        self,
        config: GenericBatchProcessorConfig,
        work_manager: Any,
        logger: Any | None = None,
        *,
        clock: Callable[[], float] | None = None,
        sleep: Callable[[float], None] | None = None,
    ) -> None:
        if not isinstance(config, GenericBatchProcessorConfig):
            raise TypeError("config must be a GenericBatchProcessorConfig")
        self.config = config
        self.work_manager = work_manager
        self.logger: Any = logger if logger is not None else _LOG
        self._clock = clock or time.monotonic
        self._lock = threading.RLock()
        self._buffer = Buffer(self._clock)
        self._items = self._buffer.items  # the hot path appends here directly
        self._dates = self._buffer.dates
        self._settlement = settlement = Settlement(
            config,
            ManagerCalls(work_manager),
            buffer=self._buffer,
            lock=self._lock,
            logger=self.logger,
            clock=self._clock,
            sleep=sleep or (lambda seconds: time.sleep(seconds)),
        )
        self._stats, self._intake, self._ledger = (
            settlement.stats,
            settlement.intake,
            settlement.ledger,
        )
        self._checkpoint = settlement.checkpoint
        self._batch_size, self._auto = config.batch_size, config.auto_process
        self._max_age = config.max_batch_age
        self._plain = config.validation_function is None and config.date_extraction_function is None
        self._simple = self._plain and self._auto and self._max_age is None
        self._batch_num = 0
        self._pipelined = config.max_in_flight_batches > 0
        self._simple = self._simple and not self._pipelined
        self._pipeline: BatchPipeline[Batch] | DirectDelivery = (
            BatchPipeline(
                settlement.deliver, threading.Condition(self._lock), config.max_in_flight_batches
            )
            if self._pipelined
            else DirectDelivery(settlement.deliver)
        )

    # ------------------------------------------------------------------ adding

    def add_item(self, item: Any, date: Any = None) -> bool:
        """Add one item (or a list/tuple of objects kept together); returns False
        (and counts it) when it is rejected.  ``date`` — from the source: an ISO
        string, ``datetime`` or epoch — wins over ``date_extraction_function``.

        Raises the configured exception class only when adding completes a
        batch that then fails for good (its items are kept as failed).
        """
        if self._simple and date is None and type(item) is dict:
            try:  # hot path: a STIX dict, no hooks, synchronous, no age limit
                stix_dict = type(item["id"]) is str and type(item["type"]) is str
            except KeyError:
                stix_dict = False
            if stix_dict:
                with self._lock:
                    items = self._items
                    if not items:
                        self._start()
                    items.append(item)
                    self._dates.append(None)
                    self._stats.accepted += 1
                    if len(items) >= self._batch_size:
                        self._cut_full_batches()
                return True
        prepared = self._intake.prepare(item, date)
        if prepared is None:
            return False
        payload, span = prepared  # in place, not through _extend: a third faster with hooks
        try:
            with self._lock:
                items = self._items
                if not items:
                    self._start()
                items.append(payload)
                self._dates.append(span)
                self._stats.accepted += 1
                if span is not None:
                    self._note(span)
                if (self._auto and len(items) >= self._batch_size) or self._max_age is not None:
                    self._cut_full_batches()
        finally:
            self._settlement.rewind_if_pending()
        if self._pipelined:
            self._pipeline.after_add()
        return True

    def add_items(self, items: Iterable[Any]) -> int:
        """Add several items; returns how many were accepted.

        Items are taken a batch's room at a time and checked in bulk.  When a
        batch fails for good the error is raised; everything taken from
        ``items`` so far was accepted (or rejected) and stays accounted for.
        """
        added = 0
        iterator = iter(items)
        while True:
            room = max(self._batch_size - len(self._items), 1) if self._auto else 4_096
            chunk = list(islice(iterator, room))
            if not chunk:
                return added
            payloads, spans = self._intake.prepare_many(chunk, self._plain)
            if payloads:
                added += self._extend(payloads, spans)

    def _extend(self, payloads: list[Any], spans: list[Any] | None) -> int:
        """Accept ``payloads`` (``spans`` None: all undated) into the buffer, then cut
        what is full; the lock is taken once."""
        try:
            with self._lock:
                if not self._items:
                    self._start()
                self._items.extend(payloads)
                if spans is None:
                    self._dates.extend([None] * len(payloads))
                else:
                    self._dates.extend(spans)
                    for span in spans:
                        if span is not None:
                            self._note(span)
                self._stats.accepted += len(payloads)
                self._cut_full_batches()
        finally:
            self._settlement.rewind_if_pending()  # right after the first out-of-order item
        if self._pipelined:
            self._pipeline.after_add()
        return len(payloads)

    def _note(self, span: tuple[dt.datetime, dt.datetime]) -> None:
        """A dated item was appended (lock held): the buffer's floor, the date order."""
        self._buffer.noted(span)
        self._settlement.note(span)

    def _start(self) -> None:
        self._buffer.start_if_empty()
        if self._stats.first_item_at is None:
            self._stats.first_item_at = self._clock()

    # -------------------------------------------------------------- processing

    def _cut_full_batches(self) -> None:
        """Deliver full batches (and a stale one) from the buffer; lock held."""
        buffer = self._buffer
        while buffer.items and (
            (self._auto and len(buffer.items) >= self._batch_size) or buffer.is_stale(self._max_age)
        ):
            self._cut()

    def _cut(self) -> Batch | None:
        """Cut one batch and deliver it (or queue it when pipelined); lock held."""
        if not self._items:
            if self.config.empty_batch_behavior == "error":
                message = f"Cannot process an empty batch of {self.config.display_name}"
                raise build_error(self.config.exception_class, message)
            return None
        self._batch_num += 1
        batch = self._buffer.cut(self._batch_num, self._batch_size if self._auto else None)
        self._ledger.sent(batch)
        self._pipeline.submit(batch)
        return batch

    def process_current_batch(self) -> str | None:
        """Deliver the current batch now; returns its work id (None if empty).

        With pipelined sending this waits for the batch (and those before it).
        """
        self._pipeline.raise_error()
        with self._lock:
            batch = self._cut()
        work_id = self._settle(batch)
        if batch is None and self.config.empty_batch_behavior == "update_state":
            self._settlement.commit(final=True)
        return work_id

    def flush(self) -> str | None:
        """Deliver everything pending; None when there was nothing.

        Every pending batch is tried; when some failed for good, the first
        failure is raised after the others were tried.  Pipelined, this waits
        until every batch was delivered or failed, and raises the first failure
        not yet reported.
        """
        self._settlement.report_rejections()
        with self._lock:
            batch, first_error = None, None
            while self._items:  # every pending batch is tried; the first failure raised
                try:
                    batch = self._cut()
                except Exception as exc:
                    first_error = first_error or exc
        if first_error is not None:
            raise first_error
        return self._settle(batch)

    def process_if_due(self) -> str | None:
        """Deliver the current batch if it is older than ``max_batch_age``."""
        self._pipeline.raise_error()
        with self._lock:
            due = self._items and self._buffer.is_stale(self._max_age)
            batch = self._cut() if due else None
        return None if batch is None else self._settle(batch)

    def close(self) -> None:
        """Flush, stop the background sender and close the dead-letter store's
        connection; idempotent, and the processor stays usable."""
        try:
            self.flush()
        finally:
            self._pipeline.close()
            if self._ledger.store is not None:
                self._ledger.store.close()

    @property
    def dead_letter_store(self) -> DeadLetterStore | None:
        """The dead-letter store (``dead_letter_path``), or None."""
        return self._ledger.store

    def _settle(self, batch: Batch | None) -> str | None:
        self._pipeline.settle()
        return None if batch is None else batch.work_id

    def update_final_state(self) -> None:
        """Write the cursor: the latest delivered date that passes no undelivered item.

        Without dates, and with nothing undelivered, the current time is written
        (the seed's behaviour).  Never raises for a failed write.  Rejections not
        reported yet are said at WARNING; a run that accepted nothing says so
        (at ERROR when everything offered was rejected).
        """
        self._settlement.final_state()

    def set_latest_date(self, date_str: Any) -> None:
        """Declare data up to ``date_str`` as covered (a cursor candidate).

        Raises ``ValueError`` when the value is not a date.
        """
        try:
            instant = parse_instant(date_str)
        except OverflowError as exc:  # out of the representable range
            raise ValueError(f"set_latest_date: {date_str!r} is out of range") from exc
        if instant is None:
            raise ValueError(f"set_latest_date needs a date, got {date_str!r}")
        self._settlement.cover(instant)

    # ------------------------------------------------------------------ reading

    def get_current_batch_size(self) -> int:
        """Number of items waiting in the current batch."""
        return len(self._items)

    def get_failed_items(self) -> list[Any]:
        """Items of batches that failed for good (a copy)."""
        with self._lock:
            return list(self._ledger.failed)

    def clear_failed_items(self) -> None:
        """Forget the failed items (after handling them), with every dead letter of
        the state key not queued again (earlier runs' too): they stop holding the cursor."""
        with self._lock:
            self._ledger.clear_failed()

    def retry_failed(self) -> int:
        """Queue the failed items again, with the dead letters of earlier runs.

        They go first, ahead of anything pending; once delivered their dead
        letters are removed.  Returns how many items were queued.
        """
        with self._lock:
            if not self._items:
                self._start()
            queued = self._settlement.requeue()
            self._cut_full_batches()
        self._pipeline.after_add()
        return queued

    def get_statistics(self) -> dict[str, Any]:
        """Counters and cursor dates (ISO 8601 UTC ``Z``)."""
        return self._settlement.snapshot(len(self._items), self._pipeline.in_flight)

    # --------------------------------------------------------- context manager

    def __enter__(self) -> GenericBatchProcessor:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        flush_error: BaseException | None = None
        try:
            self.close()
        except Exception as error:
            flush_error = error
            if exc is not None:
                self.logger.error(f"Flushing on exit failed: {error!r}")
        finally:
            self.update_final_state()
        if exc is None and flush_error is not None:
            raise flush_error

    def __repr__(self) -> str:
        return (
            f"<GenericBatchProcessor {self.config.entity_type!r} batch_size="
            f"{self.config.batch_size} pending={len(self._items)} "
            f"failed={len(self._ledger.failed)}>"
        )
