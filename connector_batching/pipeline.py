"""Pipelined sending: batches delivered in order by one background thread.

The producer keeps adding while earlier batches travel.  Back-pressure: after
cutting a batch the producer waits (outside the processor's lock) while more
than ``max_in_flight`` batches are queued or sending.  Failures are kept and
raised to the producer at its next call.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable
from typing import Any, Generic, TypeVar

T = TypeVar("T")


class BatchPipeline(Generic[T]):
    """An ordered queue of batches and the thread that delivers them."""

    def __init__(
        self,
        deliver: Callable[[T], object],
        condition: threading.Condition,
        max_in_flight: int,
        name: str = "connector-batching-sender",
    ) -> None:
        self._deliver = deliver
        self._cond = condition
        self._max_in_flight = max_in_flight
        self._queue: deque[T] = deque()
        self._in_flight = 0
        self._error: BaseException | None = None
        self._closing = False
        self._thread: threading.Thread | None = None
        self._name = name

    @property
    def in_flight(self) -> int:
        """Batches queued or being delivered."""
        return self._in_flight

    def submit(self, batch: T) -> None:
        """Queue ``batch``; call with the condition's lock held (never blocks).

        A sender thread is started when none is running; a thread that decided
        to stop has already cleared ``_thread`` under the lock, so a batch is
        never queued behind a thread that is leaving.
        """
        if self._thread is None:
            self._closing = False
            self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
            self._thread.start()
        self._queue.append(batch)
        self._in_flight += 1
        self._cond.notify_all()

    def wait_for_room(self) -> None:
        """Block while more than ``max_in_flight`` batches are in flight (lock not held)."""
        with self._cond:
            while self._in_flight > self._max_in_flight:
                self._cond.wait()

    def drain(self) -> None:
        """Block until every queued batch is delivered or failed."""
        with self._cond:
            while self._in_flight:
                self._cond.wait()

    def take_error(self) -> BaseException | None:
        """The first failure since the last call, once (call with the lock held)."""
        error, self._error = self._error, None
        return error

    def raise_error(self) -> None:
        """Raise the first failure not yet reported, if any (lock not held)."""
        with self._cond:
            error = self.take_error()
        if error is not None:
            raise error

    def settle(self) -> None:
        """Wait for every queued batch, then raise the first failure not yet reported."""
        self.drain()
        self.raise_error()

    def after_add(self) -> None:
        """Back-pressure for the producer, then a failure not yet reported (lock not held)."""
        self.wait_for_room()
        self.raise_error()

    def close(self) -> None:
        """Drain, then stop the thread."""
        self.drain()
        with self._cond:
            self._closing = True
            self._cond.notify_all()
            thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join()

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._queue and not self._closing:
                    self._cond.wait()
                if not self._queue:
                    self._thread = None  # decided under the lock: submit starts another
                    return
                batch = self._queue.popleft()
            try:
                self._deliver(batch)
            except BaseException as exc:
                with self._cond:
                    if self._error is None:
                        self._error = exc
            finally:
                with self._cond:
                    self._in_flight -= 1
                    self._cond.notify_all()


class DirectDelivery:
    """Synchronous sending, with the pipeline's interface: each batch is
    delivered in the caller's thread, so there is nothing to wait for."""

    in_flight = 0

    def __init__(self, deliver: Callable[[Any], object]) -> None:
        self.submit = deliver

    def settle(self) -> None:
        """Nothing queued: nothing to wait for."""

    def raise_error(self) -> None:
        """Failures were raised to the caller already."""

    def after_add(self) -> None:
        """No back-pressure without a queue."""

    def close(self) -> None:
        """No thread to stop."""
