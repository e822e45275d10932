"""The retry policy: a value that decides whether, and after how long, to try again.

Every loop of the engine that retries (a batch's delivery, closing a work in
error, writing the cursor) asks a :class:`RetryPolicy`; none decides on its own.
Time is given, not read: the policy takes the clock and the random fraction as
arguments, so it is tested without sleeping.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Attempts, exponential delays, a cap, optional jitter and an overall deadline.

    ``attempts`` counts every try (``max_retries + 1``).  The delay before
    retry *n* (1-based) is ``delay * 2**(n-1)``, capped at ``max_delay``; with
    ``jitter`` it is scaled into ``[d/2, d]``.  ``timeout`` bounds all the
    attempts of one run together (seconds, ``None``: no bound).
    """

    attempts: int = 1
    delay: float = 0.0
    max_delay: float = 60.0
    jitter: bool = False
    timeout: float | None = None

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ValueError(f"attempts must be >= 1, got {self.attempts!r}")

    def backoff(self, retry: int, random_fraction: float = 1.0) -> float:
        """The delay before retry ``retry`` (1-based)."""
        exponent = min(max(retry - 1, 0), 62)
        delay = min(float(self.delay) * (2.0**exponent), float(self.max_delay))
        if self.jitter:
            delay = delay / 2 + delay / 2 * random_fraction
        return delay

    def start(self, clock: Callable[[], float]) -> RetryRun:
        """A run of attempts starting now (its deadline fixed from ``clock``)."""
        deadline = None if self.timeout is None else clock() + self.timeout
        return RetryRun(self, clock, deadline)


class RetryRun:
    """The attempts of one run under a policy: counts them and keeps the deadline."""

    __slots__ = ("_clock", "attempt", "deadline", "policy", "timed_out")

    def __init__(
        self, policy: RetryPolicy, clock: Callable[[], float], deadline: float | None
    ) -> None:
        self.policy = policy
        self._clock = clock
        self.deadline = deadline
        self.attempt = 1
        self.timed_out = False

    def next_delay(self, error: BaseException, random_fraction: float = 1.0) -> float | None:
        """After attempt ``attempt`` failed with ``error``: the delay before the next
        one, or ``None`` when there is none (attempts spent, deadline reached, or an
        error marked ``retryable = False``)."""
        policy = self.policy
        if self.attempt >= policy.attempts or getattr(error, "retryable", True) is False:
            return None
        delay = policy.backoff(self.attempt, random_fraction)
        if self.deadline is not None:
            remaining = self.deadline - self._clock()
            if remaining <= 0 or delay >= remaining:
                self.timed_out = True
                return None
        self.attempt += 1
        return delay


#: Closing a work in error and writing a cursor: one immediate second try.
TWO_TRIES = RetryPolicy(attempts=2)
