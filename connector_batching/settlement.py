"""Settlement: a batch's outcome booked into the ledger, statistics, cursor and log.

The delivery part returns an outcome and never raises; settling books it —
delivered (dead letters removed, the hook run, the cursor advanced) or failed
for good (items kept as failed, the cursor held) — and only then raises the
batch's failure, or the interrupt that arrived meanwhile.
"""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Callable
from typing import Any

from connector_batching.batch import Batch, latest
from connector_batching.buffer import Buffer
from connector_batching.checkpoint import Checkpoint
from connector_batching.config import GenericBatchProcessorConfig
from connector_batching.dead_letters import DeadLetterStore
from connector_batching.delivery import Delivery, Outcome
from connector_batching.errors import build_error
from connector_batching.intake import Intake
from connector_batching.ledger import Ledger
from connector_batching.manager_calls import ManagerCalls
from connector_batching.references import ReferenceCache, bundle_members, complete_references
from connector_batching.statistics import BatchLog, Statistics


class Settlement:
    """Delivers one batch through ``delivery`` and books what happened."""

    def __init__(
        self,
        config: GenericBatchProcessorConfig,
        calls: ManagerCalls,
        *,
        buffer: Buffer,
        lock: threading.RLock,
        logger: Any,
        clock: Callable[[], float],
        sleep: Callable[[float], None],
    ) -> None:
        self.config = config
        self._lock = lock
        self._clock = clock
        self.stats = Statistics()
        self.log = BatchLog(logger, config.display_name, config.max_retries)
        self.intake = Intake(config, self.stats, lock, logger)
        store = DeadLetterStore(config.dead_letter_path) if config.dead_letter_path else None
        self.ledger = Ledger(buffer, store, config.state_key, logger)
        read = (lambda: calls.read_state(config.state_key)) if calls.can_read_state else None
        self.checkpoint = Checkpoint(
            config.state_key, calls.write_state, logger, read=read, is_sorted=config.is_sorted
        )
        self.latest: dt.datetime | None = None
        self._rewind = False  # the first out-of-order item arrived: rewrite the cursor
        """The latest date seen (delivered or not), for the statistics and the order check."""
        self._references = ReferenceCache(config.reference_cache_size)
        self.pipelined = config.max_in_flight_batches > 0
        self.delivery = Delivery(
            calls,
            config.retry_policy(),
            clock=clock,
            sleep=sleep,
            on_retry=self.on_retry,
            on_close_error=self.on_close_error,
        )
        # the short names the booking code below uses
        self._intake, self._ledger, self._stats = self.intake, self.ledger, self.stats
        self._checkpoint, self._log = self.checkpoint, self.log

    def note(self, span: tuple[dt.datetime, dt.datetime]) -> None:
        """A dated item was accepted (lock held).  At the first item found out of
        order the stored cursor must be rewritten: :meth:`rewind_if_pending`."""
        latest = self.latest
        if latest is None or span[1] > latest:
            self.latest = span[1]
        if latest is None or span[0] >= latest:
            return
        self.stats.out_of_order += 1
        if self.checkpoint.sorted:
            self.checkpoint.sorted = False  # from now on the cursor moves at the end only
            self._rewind = True
            self.log.out_of_order(self.config.state_key, span[0], latest, self.config.is_sorted)

    def rewind_if_pending(self) -> None:
        """After the call that added the first out-of-order item (lock not held in
        pipelined mode): write the cursor so that it no longer passes that item."""
        if self._rewind:
            self._rewind = False
            self.commit()

    def final_state(self) -> None:
        """The end-of-run write (``update_final_state``), with the run's reports."""
        self.report_rejections()
        with self._lock:
            held = self.cursor(final=True) is None and self.ledger.has_undelivered()
            undelivered = self.ledger.undelivered_count()
            nothing = self.stats.accepted == 0
        if nothing:  # no silent no-op: a run that accepted nothing says so, and why
            self.log.nothing_accepted(dict(self.stats.rejected))
        if held:
            self.log.held(self.config.state_key, self.checkpoint.committed_text, undelivered)
            return
        self.commit(final=True)

    def requeue(self) -> int:
        """The failed items and earlier runs' dead letters back at the buffer's head
        (lock held); returns how many."""
        queued = self.ledger.requeue()
        buffer = self.ledger.buffer
        if queued and any(type(p) is list for p in buffer.items[:queued]):
            self.intake.groups_seen = True
        for span in buffer.dates[:queued]:
            if span is not None:
                self.latest = latest(self.latest, span[1])
        return queued

    def cover(self, instant: dt.datetime) -> None:
        """Data up to ``instant`` counts as delivered (``set_latest_date``)."""
        with self._lock:
            self.latest = latest(self.latest, instant)
            self.checkpoint.covered(instant)

    def snapshot(self, pending: int, in_flight: int) -> dict[str, Any]:
        """The ``get_statistics()`` dict."""
        with self._lock:
            store = self.ledger.store
            return self.stats.snapshot(
                batch_size=self.config.batch_size,
                pending=pending,
                failed=len(self.ledger.failed),
                latest=self.latest,
                committed=self.checkpoint.committed_text,
                state_errors=self.checkpoint.errors,
                dead_letters=store.summary(self.config.state_key)[0] if store else 0,
                now=self._clock(),
            ) | {"batches_in_flight": in_flight}

    def deliver(self, batch: Batch) -> None:
        """Deliver ``batch``, book the outcome, then raise its failure or interrupt."""
        name = self.config.format_work_name(batch.number)
        outcome = self.delivery.run(batch, name, self.config.entity_type, self._bundle)
        batch.work_id = outcome.work_id
        try:
            if outcome.delivered:
                self._book_delivered(outcome)
            else:
                self._book_failed(outcome)
        finally:
            if outcome.interrupt is not None:
                raise outcome.interrupt
        if not outcome.delivered:
            raise self._error(
                f"Batch #{batch.number} of {len(batch.items)} {self.config.display_name} "
                f"failed after {outcome.attempts} attempt(s): {self._reason(outcome)}",
                batch_number=batch.number,
                work_id=outcome.work_id,
            ) from outcome.error

    def _bundle(self, items: list[Any]) -> tuple[list[Any], list[Any]]:
        """Preprocess, flatten groups, add the referenced objects already seen."""
        hook = self.config.preprocessing_function
        processed = items
        if hook is not None:
            result = hook(list(items))
            processed = items if result is None else list(result)
        members = bundle_members(processed, self._intake.groups_seen or hook is not None)
        with self._lock:  # the reference cache is shared by every delivering thread
            extra, unresolved = complete_references(members, self._references)
            self._stats.references_added += len(extra)
            self._stats.references_unresolved += unresolved
        return processed, (extra + members if extra else members)

    def _book_delivered(self, outcome: Outcome) -> None:
        batch, objects = outcome.batch, outcome.objects or []
        with self._lock:
            self._ledger.delivered(batch)
            sent, now = len(outcome.processed), self._clock()
            self._stats.delivered(len(batch.items), sent, len(objects), now)
            self._checkpoint.covered(batch.max_date)
        hook = self.config.postprocessing_function
        if hook is not None:  # pipelined: hook and cursor write outside the lock
            try:
                hook(outcome.processed, str(outcome.work_id))
            except Exception as exc:
                with self._lock:
                    self._stats.hook_errors += 1
                self._log.hook_failed(batch.number, exc)
        self.commit()
        self.report_rejections()
        self._log.delivered(
            batch.number,
            len(outcome.processed),
            len(objects),
            str(outcome.work_id),
            outcome.attempts,
            self._checkpoint.committed_text,
        )

    def _book_failed(self, outcome: Outcome) -> None:
        batch, reason = outcome.batch, self._reason(outcome)
        if outcome.timed_out:
            self._log.timed_out(
                batch.number, self.config.work_timeout, outcome.attempts, outcome.error
            )
        with self._lock:
            self._stats.batches_failed += 1
            self._ledger.failed_for_good(batch, reason)
        self._log.failed(batch.number, len(batch.items), reason)
        self.report_rejections()
        self.commit()

    @staticmethod
    def _reason(outcome: Outcome) -> str:
        error = outcome.error
        if outcome.interrupt is not None and error is outcome.interrupt:
            return f"interrupted: {type(error).__name__}"
        return f"{type(error).__name__}: {error}"

    def on_retry(self, batch: Batch, attempt: int, delay: float, exc: BaseException) -> None:
        with self._lock:
            self._stats.retries += 1
        self._log.retrying(batch.number, attempt, delay, exc)

    def on_close_error(self, work_id: str, exc: BaseException) -> None:
        with self._lock:
            self._stats.close_errors += 1
        self._log.close_failed(work_id, exc)

    def _error(self, message: str, **ids: Any) -> BaseException:
        return build_error(self.config.exception_class, message, **ids)

    def report_rejections(self) -> None:
        """Say at WARNING what was rejected since the last report (once per batch)."""
        with self._lock:
            counts = self._stats.take_unreported()
        self._log.rejected(counts)

    def commit(self, *, final: bool = False) -> None:
        """Compute and write the (``final``: end-of-run) cursor, ordered with every other write."""
        self._checkpoint.commit(lambda: self.cursor(final), self._lock, pipelined=self.pipelined)

    def cursor(self, final: bool) -> dt.datetime | None:
        """The cursor to write now, from the ledger's floor and the checkpoint's rules."""
        dated = self.config.date_extraction_function is not None or self._intake.dated
        return self._checkpoint.cursor(
            self._ledger.floor(),
            final=final,
            dated=dated,
            undelivered=self._ledger.has_undelivered(),
        )
