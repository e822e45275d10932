"""Delivery: one batch's open → send → close, retried under the policy.

A delivery is resumable: a retry reuses the batch's work and never re-sends a
bundle that went out (only the close is tried again).  It never raises and
never touches the ledger or the cursor: it returns an :class:`Outcome` that
the processor books, then raises from (the batch's failure, or an interrupt
such as Ctrl-C, which is re-raised only after the work was closed and the
batch booked).
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from connector_batching.batch import Batch
from connector_batching.manager_calls import ManagerCalls
from connector_batching.retry import TWO_TRIES, RetryPolicy

Prepare = Callable[[list[Any]], tuple[list[Any], list[Any]]]
"""Batch items → (items after preprocessing, the bundle's objects)."""


@dataclass
class Outcome:
    """What happened to one batch."""

    batch: Batch
    work_id: str | None = None
    sent: bool = False
    processed: list[Any] = field(default_factory=list)
    objects: list[Any] | None = None
    attempts: int = 0
    error: BaseException | None = None
    """Why the batch failed for good (None when delivered)."""
    close_error: BaseException | None = None
    """Delivered, but marking the work processed failed (it was closed in error)."""
    interrupt: BaseException | None = None
    """A KeyboardInterrupt or SystemExit that arrived meanwhile, to re-raise."""
    timed_out: bool = False

    @property
    def delivered(self) -> bool:
        """True when the bundle went out and the batch counts as delivered."""
        return self.sent and self.error is None


class Delivery:
    """Delivers batches through ``calls`` under ``policy``."""

    def __init__(
        self,
        calls: ManagerCalls,
        policy: RetryPolicy,
        *,
        clock: Callable[[], float],
        sleep: Callable[[float], None],
        on_retry: Callable[[Batch, int, float, BaseException], None],
        on_close_error: Callable[[str, BaseException], None],
    ) -> None:
        self.calls = calls
        self.policy = policy
        self._clock = clock
        self._sleep = sleep
        self._on_retry = on_retry
        self._on_close_error = on_close_error

    def run(self, batch: Batch, work_name: str, entity_type: str, prepare: Prepare) -> Outcome:
        """Deliver ``batch``; every work it opened is closed when this returns."""
        outcome = Outcome(batch, processed=batch.items)
        calls = self.calls
        attempts = self.policy.start(self._clock)
        try:
            while True:
                outcome.attempts = attempts.attempt
                try:
                    if outcome.objects is None:
                        outcome.processed, outcome.objects = prepare(batch.items)
                    if outcome.work_id is None:
                        outcome.work_id = calls.open(work_name, entity_type)
                    if not outcome.sent:
                        calls.send(outcome.work_id, outcome.objects)
                        outcome.sent = True
                    calls.close(outcome.work_id)
                    return outcome
                except Exception as exc:
                    delay = attempts.next_delay(exc, random.random())
                    if delay is None:
                        outcome.error, outcome.timed_out = exc, attempts.timed_out
                        break
                    self._on_retry(batch, outcome.attempts, delay, exc)
                    if delay > 0:
                        self._sleep(delay)
        except BaseException as interrupt:  # Ctrl-C, SystemExit: keep nothing open
            outcome.interrupt, outcome.sent = interrupt, False
            outcome.error = interrupt
            if outcome.work_id is not None:
                self.close_in_error(outcome, f"interrupted: {type(interrupt).__name__}")
            return outcome
        if outcome.sent:  # delivered; only marking the work processed failed
            outcome.close_error, outcome.error = outcome.error, None
            self._close_delivered(outcome)
        elif outcome.work_id is not None:
            self.close_in_error(outcome, f"{type(outcome.error).__name__}: {outcome.error}")
        return outcome

    def _close_delivered(self, outcome: Outcome) -> None:
        """One last plain close; in error if that fails too (or is interrupted)."""
        assert outcome.work_id is not None
        try:
            self.calls.close(outcome.work_id)
        except Exception:
            self.close_in_error(
                outcome, f"delivered, but closing the work failed: {outcome.close_error}"
            )
        except BaseException as interrupt:
            outcome.interrupt = interrupt
            self.close_in_error(outcome, f"delivered; interrupted: {type(interrupt).__name__}")

    def close_in_error(self, outcome: Outcome, message: str) -> None:
        """Close the outcome's work in error (two tries); an interrupt meanwhile is
        kept in ``outcome.interrupt``, never raised from here."""
        assert outcome.work_id is not None
        attempts = TWO_TRIES.start(self._clock)
        while True:
            try:
                self.calls.close_in_error(outcome.work_id, message)
                return
            except Exception as exc:
                last: BaseException = exc
            except BaseException as exc:  # KeyboardInterrupt, SystemExit
                last = exc
                outcome.interrupt = outcome.interrupt or exc
                message = f"interrupted: {type(exc).__name__}"
            if attempts.next_delay(last) is None:
                self._on_close_error(outcome.work_id, last)
                return
