"""`GenericBatchProcessor`: collect items, deliver them in batches, keep the cursor safe."""

from __future__ import annotations

import datetime as dt
import logging
import random
import threading
import time
from collections.abc import Callable, Iterable
from itertools import islice
from types import TracebackType
from typing import Any

from connector_batching.batch import Batch, DateSpan, earliest, latest, spans_start
from connector_batching.checkpoint import Checkpoint
from connector_batching.config import GenericBatchProcessorConfig
from connector_batching.cursor import format_instant, parse_instant, utc_now
from connector_batching.dead_letters import DeadLetterStore
from connector_batching.errors import build_error
from connector_batching.pipeline import BatchPipeline
from connector_batching.references import ReferenceCache, complete_references
from connector_batching.stix import ItemRejected, iter_members, normalize_item
from connector_batching.work_manager import check_work_manager, supports_error_closing

_LOG = logging.getLogger("connector_batching")


def _monotonic() -> float:
    return time.monotonic()


class GenericBatchProcessor:
    """Collects items into batches and delivers each through a work manager.

    Guarantees: every accepted item is delivered in exactly one successful
    batch or kept as failed; the cursor written through ``update_state`` never
    passes an undelivered item's date; every work opened is closed; objects a
    batch references (markings, authors, relationship endpoints) travel with it.
    Safe to feed from several threads.
    """

    def __init__(
        self,
        config: GenericBatchProcessorConfig,
        work_manager: Any,
        logger: Any | None = None,
    ) -> None:
        if not isinstance(config, GenericBatchProcessorConfig):
            raise TypeError("config must be a GenericBatchProcessorConfig")
        check_work_manager(work_manager)
        self.config = config
        self.work_manager = work_manager
        self.logger: Any = logger if logger is not None else _LOG
        self._error_closing = supports_error_closing(work_manager)
        # Read once: the hot path must not look them up per item.
        self._batch_size = config.batch_size
        self._auto_process = config.auto_process
        self._max_batch_age = config.max_batch_age
        self._plain = config.validation_function is None and config.date_extraction_function is None
        self._simple = (
            self._plain
            and self._auto_process
            and self._max_batch_age is None
            and config.max_in_flight_batches == 0
        )
        self._lock = threading.RLock()
        self._write_lock = threading.Lock()  # orders cursor writes made outside _lock
        self._in_flight: dict[int, dt.datetime | None] = {}  # batch number -> earliest date
        self._max_in_flight = config.max_in_flight_batches
        self._pipeline: BatchPipeline[Batch] | None = None
        if self._max_in_flight > 0:
            self._pipeline = BatchPipeline(
                self._deliver, threading.Condition(self._lock), self._max_in_flight
            )
        # Looked up at call time, so patching time.sleep / time.monotonic /
        # random.random (in tests) takes effect; assign to override per processor.
        self._sleep: Callable[[float], None] | None = None
        self._clock: Callable[[], float] = _monotonic
        self._references = ReferenceCache(config.reference_cache_size)
        self._groups_seen = False  # set once a group (a list payload) was accepted
        # current batch
        self._items: list[Any] = []
        self._dates: list[DateSpan] = []
        self._batch_min: dt.datetime | None = None
        self._batch_started: float | None = None
        self._batch_num = 0
        # dates
        self._latest: dt.datetime | None = None
        self._checkpoints = Checkpoint(config.state_key)
        # failures
        self._failed: list[Any] = []
        self._failed_dates: list[DateSpan] = []
        self._failed_min: dt.datetime | None = None
        self._dead_letters: DeadLetterStore | None = None
        self._dead_rows: dict[int, int] = {}  # id(payload) -> dead-letter row
        self._dead_floor: dt.datetime | None = None  # earliest stored row not yet re-queued
        if config.dead_letter_path:
            self._dead_letters = DeadLetterStore(config.dead_letter_path)
            _count, self._dead_floor = self._dead_letters.summary(config.state_key)
        # counters
        self._accepted = 0
        self._rejected: dict[str, int] = {}
        self._date_errors = 0
        self._items_processed = 0
        self._items_sent = 0
        self._objects_sent = 0
        self._batches_processed = 0
        self._batches_failed = 0
        self._retries = 0
        self._references_added = 0
        self._references_unresolved = 0
        self._close_errors = 0
        self._hook_errors = 0
        self._first_item_at: float | None = None
        self._last_delivery_at: float | None = None

    # ------------------------------------------------------------------ adding

    def add_item(self, item: Any) -> bool:
        """Add one item; returns False (and counts it) when it is rejected.

        Raises the configured exception class only when adding completes a
        batch that then fails for good (its items are kept as failed).
        """
        if self._simple and type(item) is dict:
            # Hot path: a STIX dict, no hooks, synchronous, no age limit.
            try:
                stix_dict = type(item["id"]) is str and type(item["type"]) is str
            except KeyError:
                stix_dict = False
            if stix_dict:
                with self._lock:
                    items = self._items
                    if not items:
                        self._start_batch()
                    items.append(item)
                    self._dates.append(None)
                    self._accepted += 1
                    if len(items) >= self._batch_size:
                        self._cut_full_batches()
                return True
        prepared = self._prepare(item)
        if prepared is None:
            return False
        payload, date = prepared
        with self._lock:
            items = self._items
            if not items:
                self._start_batch()
            items.append(payload)
            self._dates.append(date)
            self._accepted += 1
            if date is not None:
                self._note_date(date)
            if (self._auto_process and len(items) >= self._batch_size) or (
                self._max_batch_age is not None and self._batch_is_stale()
            ):
                self._cut_full_batches()
        if self._pipeline is not None:
            self._after_add()
        return True

    def add_items(self, items: Iterable[Any]) -> int:
        """Add several items; returns how many were accepted.

        Faster than repeated :meth:`add_item`: items are taken a batch's room
        at a time, checked in bulk, and the lock is taken once per run.
        """
        added = 0
        iterator = iter(items)
        plain = self._plain
        while True:
            chunk = list(islice(iterator, self._room()))
            if not chunk:
                return added
            if plain and not [
                item
                for item in chunk
                if type(item) is not dict
                or type(item.get("id")) is not str
                or type(item.get("type")) is not str
            ]:
                added += self._extend(chunk, [None] * len(chunk))
                continue
            payloads: list[Any] = []
            spans: list[DateSpan] = []
            for item in chunk:
                prepared = self._prepare(item)
                if prepared is not None:
                    payloads.append(prepared[0])
                    spans.append(prepared[1])
            if payloads:
                added += self._extend(payloads, spans)

    def _room(self) -> int:
        """Items that fit in the current batch before it is processed (at least 1)."""
        if not self._auto_process:
            return 4_096
        return max(self._batch_size - len(self._items), 1)

    def _extend(self, payloads: list[Any], spans: list[DateSpan]) -> int:
        """Accept ``payloads`` into the buffer, then deliver each full batch.

        The whole chunk is accepted first: when a batch fails for good the
        error is raised, and whatever was not cut yet stays buffered (pending,
        holding the cursor) for the next batch.
        """
        with self._lock:
            if not self._items:
                self._start_batch()
            self._items.extend(payloads)
            self._dates.extend(spans)
            self._accepted += len(payloads)
            for span in spans:
                if span is not None:
                    self._note_date(span)
            self._cut_full_batches()
        if self._pipeline is not None:
            self._after_add()
        return len(payloads)

    def _cut_full_batches(self) -> None:
        """Deliver full batches from the buffer (and a stale one); lock held."""
        while self._items and (
            (self._auto_process and len(self._items) >= self._batch_size)
            or (self._max_batch_age is not None and self._batch_is_stale())
        ):
            self._process_locked()

    def _prepare(self, item: Any) -> tuple[Any, DateSpan] | None:
        """Normalise, validate and date one item; None when it is rejected."""
        config = self.config
        try:
            payload = normalize_item(item)
        except ItemRejected as exc:
            self._reject(exc.reason, str(exc))
            return None
        if type(payload) is list:
            self._groups_seen = True
        validate = config.validation_function
        if validate is not None:
            try:
                valid = all(validate(member) for member in iter_members(payload))
            except Exception as exc:
                self._reject("validation_error", f"validation_function raised {exc!r}")
                return None
            if not valid:
                self._reject("invalid", "validation_function returned False")
                return None
        date = None
        extract = config.date_extraction_function
        if extract is not None:
            date = self._extract_date(extract, payload)
        return payload, date

    def _extract_date(self, extract: Callable[[Any], Any], payload: Any) -> DateSpan:
        first: dt.datetime | None = None
        last: dt.datetime | None = None
        for member in iter_members(payload):
            try:
                date = parse_instant(extract(member))
            except Exception:  # InvalidDate or the function's own error: undated
                with self._lock:
                    self._date_errors += 1
                continue
            first, last = earliest(first, date), latest(last, date)
        if first is None or last is None:
            return None
        return (first, last)

    def _reject(self, reason: str, detail: str) -> None:
        with self._lock:
            self._rejected[reason] = self._rejected.get(reason, 0) + 1
        self.logger.debug(f"Rejected an item ({reason}): {detail}")

    def _start_batch(self) -> None:
        self._batch_started = self._clock()
        if self._first_item_at is None:
            self._first_item_at = self._batch_started

    def _note_date(self, span: tuple[dt.datetime, dt.datetime]) -> None:
        earliest, latest = span
        if self._latest is None or latest > self._latest:
            self._latest = latest
        if self._batch_min is None or earliest < self._batch_min:
            self._batch_min = earliest

    def _batch_is_stale(self) -> bool:
        age = self.config.max_batch_age
        return (
            age is not None
            and self._batch_started is not None
            and self._clock() - self._batch_started >= age
        )

    # -------------------------------------------------------------- processing

    def process_current_batch(self) -> str | None:
        """Deliver the current batch now; returns its work id (None if empty).

        With pipelined sending this waits for the batch (and those before it).
        """
        self._raise_pipeline_error()
        with self._lock:
            batch = self._process_locked()
        work_id = self._settle(batch)
        if batch is None and self.config.empty_batch_behavior == "update_state":
            self._checkpoint(final=True)
        return work_id

    def flush(self) -> str | None:
        """Deliver whatever is in the current batch; None when there is nothing.

        With pipelined sending this waits until every batch has been delivered
        or failed, and raises the first failure not yet reported.
        """
        with self._lock:
            batch = None
            while self._items:  # an oversized buffer is cut a batch at a time
                batch = self._process_locked()
        return self._settle(batch)

    def process_if_due(self) -> str | None:
        """Deliver the current batch if it is older than ``max_batch_age``."""
        self._raise_pipeline_error()
        with self._lock:
            batch = self._process_locked() if self._items and self._batch_is_stale() else None
        if batch is None:
            return None
        return self._settle(batch)

    def close(self) -> None:
        """Flush, stop the background sender (pipelined mode) and close the
        dead-letter store's connection; idempotent, and the processor stays usable."""
        try:
            self.flush()
        finally:
            if self._pipeline is not None:
                self._pipeline.close()
            if self._dead_letters is not None:
                self._dead_letters.close()

    @property
    def dead_letter_store(self) -> DeadLetterStore | None:
        """The dead-letter store (``dead_letter_path``), or None."""
        return self._dead_letters

    def _settle(self, batch: Batch | None) -> str | None:
        """Wait for queued batches (pipelined mode) and report their outcome."""
        if self._pipeline is not None:
            self._pipeline.drain()
            self._raise_pipeline_error()
        return None if batch is None else batch.work_id

    def _raise_pipeline_error(self) -> None:
        if self._pipeline is not None:
            with self._lock:
                error = self._pipeline.take_error()
            if error is not None:
                raise error

    def _after_add(self) -> None:
        """Pipelined mode: surface a failure and apply back-pressure (lock not held)."""
        pipeline = self._pipeline
        if pipeline is not None:
            if pipeline.in_flight > self._max_in_flight:
                pipeline.wait_for_room()
            self._raise_pipeline_error()

    def _process_locked(self) -> Batch | None:
        """Cut the current batch and deliver it (or queue it when pipelined)."""
        if not self._items:
            if self.config.empty_batch_behavior == "error":
                raise self._error(f"Cannot process an empty batch of {self.config.display_name}")
            return None
        self._batch_num += 1
        size = self._batch_size
        if self._auto_process and len(self._items) > size:
            # An oversized buffer (retry_failed, a bulk add): one batch at a time,
            # the rest stays buffered and keeps holding the cursor.
            batch = Batch(self._batch_num, self._items[:size], self._dates[:size])
            self._items, self._dates = self._items[size:], self._dates[size:]
            self._batch_min = spans_start(self._dates)
            self._batch_started = self._clock()
        else:
            batch = Batch(self._batch_num, self._items, self._dates)
            self._items, self._dates = [], []
            self._batch_min = None
            self._batch_started = None
        self._in_flight[batch.number] = batch.min_date
        if self._pipeline is not None:
            self._pipeline.submit(batch)
        else:
            self._deliver(batch)
        return batch

    def _deliver(self, batch: Batch) -> str:
        """Send one batch with retries; book-keeping under the lock, I/O outside it
        when pipelined (in synchronous mode the caller already holds the lock)."""
        config = self.config
        manager = self.work_manager
        work_name = config.format_work_name(batch.number)
        deadline = None if config.work_timeout is None else self._clock() + config.work_timeout
        objects: list[Any] | None = None
        processed: list[Any] = batch.items
        work_id: str | None = None
        sent = False
        attempt = 0
        error: BaseException | None = None
        try:
            while True:
                attempt += 1
                try:
                    if objects is None:
                        processed = self._preprocess(batch.items)
                        objects = self._bundle_objects(processed)
                    if work_id is None:
                        work_id = manager.initiate_work(
                            work_name=work_name, entity_type=config.entity_type
                        )
                    if not sent:
                        manager.send_bundle(work_id=work_id, objects=objects)
                        sent = True
                    manager.work_to_process(work_id=work_id)
                    error = None
                    break
                except Exception as exc:
                    error = exc
                    if not self._wait_before_retry(batch, attempt, deadline, exc):
                        break
        except BaseException as interrupt:  # KeyboardInterrupt, SystemExit: keep nothing open
            self._fail(batch, work_id, f"interrupted: {type(interrupt).__name__}")
            raise
        if error is not None and sent:
            # Delivered, but the work could not be marked processed.
            assert work_id is not None and objects is not None
            try:
                self._close_delivered(work_id, error)
            except BaseException:  # interrupted: the batch went out, account it
                batch.work_id = work_id
                self._succeed(batch, processed, objects, work_id, attempt)
                raise
            error = None
        if error is None:
            assert work_id is not None and objects is not None
            batch.work_id = work_id
            self._succeed(batch, processed, objects, work_id, attempt)
            return work_id
        reason = f"{type(error).__name__}: {error}"
        self._fail(batch, work_id, reason)
        raise self._error(
            f"Batch #{batch.number} of {len(batch.items)} {config.display_name} failed after "
            f"{attempt} attempt(s): {reason}",
            batch_number=batch.number,
            work_id=work_id,
        ) from error

    def _wait_before_retry(
        self, batch: Batch, attempt: int, deadline: float | None, exc: Exception
    ) -> bool:
        """Sleep the backoff delay before the next attempt; False when none is left."""
        config = self.config
        if attempt > config.max_retries or getattr(exc, "retryable", True) is False:
            return False  # no attempts left, or an error that cannot succeed on retry
        delay = config.backoff_delay(attempt, random.random())
        if deadline is not None:
            remaining = deadline - self._clock()
            if remaining <= 0 or delay >= remaining:
                self.logger.warning(
                    f"Batch #{batch.number}: work_timeout of {config.work_timeout}s reached "
                    f"after {attempt} attempt(s); last error: {exc}"
                )
                return False
        with self._lock:
            self._retries += 1
        self.logger.warning(
            f"Batch #{batch.number} attempt {attempt}/{config.max_retries + 1} failed "
            f"({type(exc).__name__}: {exc}); retrying in {delay:.2f}s"
        )
        if delay > 0:
            (self._sleep or time.sleep)(delay)
        return True

    def _preprocess(self, items: list[Any]) -> list[Any]:
        hook = self.config.preprocessing_function
        if hook is None:
            return items
        result = hook(list(items))
        return items if result is None else list(result)

    def _bundle_objects(self, processed: list[Any]) -> list[Any]:
        if self._groups_seen or self.config.preprocessing_function is not None:
            members: list[Any] = []
            for payload in processed:
                if type(payload) is list:
                    members.extend(payload)
                else:
                    members.append(payload)
        else:
            members = list(processed)
        with self._lock:  # the reference cache is shared by every delivering thread
            extra, unresolved = complete_references(members, self._references)
            self._references_added += len(extra)
            self._references_unresolved += unresolved
        return extra + members if extra else members

    def _succeed(
        self, batch: Batch, processed: list[Any], objects: list[Any], work_id: str, attempts: int
    ) -> None:
        config = self.config
        with self._lock:
            self._in_flight.pop(batch.number, None)
            if self._dead_rows:
                self._forget_dead_letters(batch.items)
            self._batches_processed += 1
            self._items_processed += len(batch.items)
            self._items_sent += len(processed)
            self._objects_sent += len(objects)
            self._checkpoints.covered(batch.max_date)
            self._last_delivery_at = self._clock()
        # Pipelined: the hook and the cursor write run outside the lock, so
        # the producer keeps adding meanwhile.
        hook = config.postprocessing_function
        if hook is not None:
            try:
                hook(processed, work_id)
            except Exception as exc:
                with self._lock:
                    self._hook_errors += 1
                self.logger.error(
                    f"Batch #{batch.number}: postprocessing_function raised {exc!r} "
                    "(the batch was delivered)"
                )
        self._checkpoint()
        self.logger.info(
            f"Batch #{batch.number}: {len(processed)} {config.display_name} "
            f"({len(objects)} objects) delivered in work {work_id}"
            f"{f' after {attempts} attempts' if attempts > 1 else ''}; "
            f"cursor {self._checkpoints.committed_text or 'unchanged'}"
        )

    def _fail(self, batch: Batch, work_id: str | None, reason: str) -> None:
        """Keep the batch's items as failed, close its work in error, hold the cursor.

        The items are booked first, so an interrupt during the close loses nothing.
        """
        try:
            self._book_failure(batch, reason)
        finally:
            try:
                if work_id is not None:
                    self._close_in_error(work_id, reason)
            finally:
                self._checkpoint()

    def _book_failure(self, batch: Batch, reason: str) -> None:
        with self._lock:
            self._in_flight.pop(batch.number, None)
            self._batches_failed += 1
            self._failed.extend(batch.items)
            self._failed_dates.extend(batch.dates)
            self._failed_min = earliest(self._failed_min, batch.min_date)
            if self._dead_letters is not None:
                self._persist_dead_letters(batch, reason)
            self.logger.error(
                f"Batch #{batch.number}: {len(batch.items)} {self.config.display_name} failed "
                f"for good ({reason}); kept as failed items, cursor held"
            )

    def _persist_dead_letters(self, batch: Batch, reason: str) -> None:
        store = self._dead_letters
        assert store is not None
        rows = self._dead_rows
        known = [rows[id(p)] for p in batch.items if id(p) in rows]
        fresh = [(p, d) for p, d in zip(batch.items, batch.dates, strict=True) if id(p) not in rows]
        try:
            if known:
                store.failed_again(known, reason)
            if fresh:
                for (payload, _span), row in zip(
                    fresh, store.add(self.config.state_key, fresh, reason), strict=True
                ):
                    rows[id(payload)] = row
        except Exception as exc:  # the items stay in memory as failed items
            self.logger.error(f"Dead-letter store {store.path} could not be written: {exc!r}")

    def _forget_dead_letters(self, payloads: list[Any]) -> None:
        store = self._dead_letters
        rows = [self._dead_rows.pop(id(p)) for p in payloads if id(p) in self._dead_rows]
        if rows and store is not None:
            try:
                store.remove(rows)
            except Exception as exc:
                self._store_error(store, exc)

    def _store_error(self, store: DeadLetterStore, exc: Exception) -> None:
        self.logger.error(f"Dead-letter store {store.path} could not be updated: {exc!r}")

    def _close_delivered(self, work_id: str, error: BaseException) -> None:
        """Last try to close a work whose bundle went out; in error if that fails too.

        Interrupted (Ctrl-C), the work is still closed, then the interrupt re-raised.
        """
        try:
            self.work_manager.work_to_process(work_id=work_id)
        except Exception:
            self._close_in_error(work_id, f"delivered, but closing the work failed: {error}")
        except BaseException as interrupt:
            self._close_in_error(work_id, f"delivered; interrupted: {type(interrupt).__name__}")
            raise

    def _close_in_error(self, work_id: str, message: str) -> None:
        """Close a work in error: two tries; an interrupt during a try is re-raised
        after the work was closed (or both tries were spent)."""
        manager = self.work_manager
        interrupt: BaseException | None = None
        last: BaseException | None = None
        for _ in range(2):
            try:
                if self._error_closing:
                    manager.work_to_process(work_id=work_id, in_error=True, message=message)
                else:
                    manager.work_to_process(work_id=work_id)
                last = None
                break
            except Exception as exc:
                last = exc
            except BaseException as exc:  # KeyboardInterrupt, SystemExit
                last = interrupt = interrupt or exc
                message = f"interrupted: {type(exc).__name__}"
        if last is not None:
            with self._lock:
                self._close_errors += 1
            self.logger.error(f"Work {work_id} could not be closed: {last!r}")
        if interrupt is not None:
            raise interrupt

    def _error(
        self, message: str, *, batch_number: int | None = None, work_id: str | None = None
    ) -> BaseException:
        return build_error(
            self.config.exception_class, message, batch_number=batch_number, work_id=work_id
        )

    # ------------------------------------------------------------------ cursor

    def _undelivered_floor(self) -> dt.datetime | None:
        """The earliest date among accepted items not delivered (pending, in flight, failed)."""
        floor = earliest(earliest(self._batch_min, self._failed_min), self._dead_floor)
        for in_flight in self._in_flight.values():
            floor = earliest(floor, in_flight)
        return floor

    def _safe_cursor(self) -> dt.datetime | None:
        """The furthest cursor that passes no undelivered item's date."""
        return self._checkpoints.safe(self._undelivered_floor())

    def _has_undelivered(self) -> bool:
        return (
            bool(self._items)
            or bool(self._failed)
            or bool(self._in_flight)
            or self._dead_floor is not None
        )

    def _final_cursor(self) -> dt.datetime | None:
        cursor = self._safe_cursor()
        if cursor is not None:
            return cursor
        if self.config.date_extraction_function is not None or self._has_undelivered():
            return None  # nothing dated was delivered: keep the stored cursor
        return utc_now()

    def _checkpoint(self, *, final: bool = False) -> None:
        """Write the safe cursor (``final``: the end-of-run cursor).  Pipelined, the
        write (a platform call) happens outside the processor's lock; every write
        is computed and made under one write lock, so writes never overlap."""
        guard = self._write_lock if self._pipeline is not None else self._lock
        with guard:
            with self._lock:
                cursor = self._final_cursor() if final else self._safe_cursor()
            self._write_cursor(cursor)

    def _write_cursor(self, cursor: dt.datetime | None) -> None:
        self._checkpoints.write(self.work_manager, cursor, self.logger)

    def update_final_state(self) -> None:
        """Write the cursor: the latest delivered date that passes no undelivered item.

        Without date extraction, and with nothing undelivered, the current
        time is written (the seed's behaviour).  Never raises for a failed write.
        """
        guard = self._write_lock if self._pipeline is not None else self._lock
        with guard:
            with self._lock:
                cursor = self._final_cursor()
                undelivered = len(self._items) + len(self._failed)
                held = cursor is None and self._has_undelivered()
            if cursor is None:
                if held:
                    self.logger.warning(
                        f"Cursor {self.config.state_key} held at "
                        f"{self._checkpoints.committed_text or 'its stored value'}: "
                        f"{undelivered} item(s) are not delivered"
                    )
                return
            self._write_cursor(cursor)

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
        with self._lock:
            self._latest = latest(self._latest, instant)
            self._checkpoints.covered(instant)

    # ------------------------------------------------------------------ reading

    def get_current_batch_size(self) -> int:
        """Number of items waiting in the current batch."""
        return len(self._items)

    def get_failed_items(self) -> list[Any]:
        """Items of batches that failed for good (a copy)."""
        with self._lock:
            return list(self._failed)

    def clear_failed_items(self) -> None:
        """Forget the failed items (after handling them): they no longer hold the
        cursor, and their dead letters are removed."""
        with self._lock:
            if self._dead_rows:
                self._forget_dead_letters(self._failed)
            store = self._dead_letters
            if store is not None:  # earlier runs' rows not re-queued: discarded too
                try:
                    store.discard(self.config.state_key, keep=set(self._dead_rows.values()))
                except Exception as exc:
                    self.logger.error(
                        f"Dead-letter store {store.path} could not be updated: {exc!r}"
                    )
                else:
                    self._dead_floor = None
            self._failed.clear()
            self._failed_dates.clear()
            self._failed_min = None

    def retry_failed(self) -> int:
        """Queue the failed items again, with the dead letters of earlier runs.

        They are delivered first, with the next batches; once delivered their
        dead letters are removed.  Returns how many items were queued.
        """
        with self._lock:
            payloads, spans = self._failed, self._failed_dates
            self._failed, self._failed_dates, self._failed_min = [], [], None
            store = self._dead_letters
            if store is not None:
                queued = set(self._dead_rows.values())
                for row_id, payload, span in store.load(self.config.state_key):
                    if row_id not in queued:
                        payloads.append(payload)
                        spans.append(span)
                        self._dead_rows[id(payload)] = row_id
                self._dead_floor = None
            if not payloads:
                return 0
            # Ahead of anything already waiting in the current batch; full
            # batches are cut from the buffer, the rest waits there (holding the
            # cursor) even when one of them fails again.
            if any(type(p) is list for p in payloads):
                self._groups_seen = True
            if not self._items:
                self._start_batch()
            self._items[:0] = payloads
            self._dates[:0] = spans
            for span in spans:
                if span is not None:
                    self._note_date(span)
            self._cut_full_batches()
        if self._pipeline is not None:
            self._after_add()
        return len(payloads)

    def get_statistics(self) -> dict[str, Any]:
        """Counters and cursor dates (ISO 8601 UTC ``Z``)."""
        with self._lock:
            elapsed = 0.0
            if self._first_item_at is not None:
                end = self._last_delivery_at or self._clock()
                elapsed = max(end - self._first_item_at, 0.0)
            return {
                "total_items_processed": self._items_processed,
                "total_batches_processed": self._batches_processed,
                "total_items_sent": self._items_sent,
                "current_batch_size": len(self._items),
                "failed_items_count": len(self._failed),
                "latest_date": None if self._latest is None else format_instant(self._latest),
                "batch_size_limit": self.config.batch_size,
                "total_items_accepted": self._accepted,
                "rejected_items": sum(self._rejected.values()),
                "rejected_by_reason": dict(self._rejected),
                "date_errors": self._date_errors,
                "failed_batches": self._batches_failed,
                "retries": self._retries,
                "total_objects_sent": self._objects_sent,
                "reference_objects_added": self._references_added,
                "unresolved_references": self._references_unresolved,
                "committed_cursor": self._checkpoints.committed_text,
                "state_update_errors": self._checkpoints.errors,
                "work_close_errors": self._close_errors,
                "hook_errors": self._hook_errors,
                "dead_letters": (
                    self._dead_letters.summary(self.config.state_key)[0]
                    if self._dead_letters is not None
                    else 0
                ),
                "items_per_second": (self._items_processed / elapsed) if elapsed > 0 else 0.0,
            }

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
            f"{self.config.batch_size} pending={len(self._items)} failed={len(self._failed)}>"
        )
