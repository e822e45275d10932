"""The retry policy on its own: attempts, exponential delays, cap, jitter, deadline."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from connector_batching import RetryPolicy


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def delays(policy: RetryPolicy, clock: Clock | None = None) -> list[float]:
    run = policy.start(clock or Clock())
    out = []
    while (delay := run.next_delay(RuntimeError("x"))) is not None:
        out.append(delay)
        if clock is not None:
            clock.now += delay + 0.5  # the attempt itself takes time too
    return out


def test_delays_double_up_to_the_cap() -> None:
    assert delays(RetryPolicy(attempts=6, delay=1.0, max_delay=5.0)) == [1.0, 2.0, 4.0, 5.0, 5.0]


def test_one_attempt_means_no_retry() -> None:
    assert delays(RetryPolicy(attempts=1, delay=1.0)) == []


def test_the_deadline_bounds_all_attempts_together() -> None:
    clock = Clock()
    run = RetryPolicy(attempts=50, delay=1.0, max_delay=1.0, timeout=3.0).start(clock)
    taken = []
    while (delay := run.next_delay(RuntimeError("x"))) is not None:
        taken.append(delay)
        clock.now += delay
    assert sum(taken) < 3.0 and run.timed_out


def test_an_error_marked_not_retryable_is_not_retried() -> None:
    error = RuntimeError("too large")
    error.retryable = False  # type: ignore[attr-defined]
    assert RetryPolicy(attempts=5).start(Clock()).next_delay(error) is None


def test_attempts_must_be_positive() -> None:
    with pytest.raises(ValueError, match="attempts"):
        RetryPolicy(attempts=0)


@given(
    st.integers(1, 80),
    st.floats(0, 10, allow_nan=False),
    st.floats(0, 100, allow_nan=False),
    st.floats(0, 1),
)
def test_jitter_stays_within_half_and_whole_of_the_delay(
    retry: int, delay: float, cap: float, fraction: float
) -> None:
    plain = RetryPolicy(attempts=99, delay=delay, max_delay=cap).backoff(retry)
    jittered = RetryPolicy(attempts=99, delay=delay, max_delay=cap, jitter=True)
    assert plain / 2 <= jittered.backoff(retry, fraction) <= plain
    assert plain <= max(cap, 0.0) + 1e-9
