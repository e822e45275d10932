"""The platform's completion rules replayed over event logs: the fact sheet's cases and
properties over generated logs."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from connector_batching.testing import RULE_SETS, replay
from connector_batching.testing.work_rules import Event, Tally, count

ADD = "add"
REPORT: Event = ("report", 1)
PROCESSED: Event = ("processed", 0)


def add(n: int) -> Event:
    return (ADD, n)


events = st.lists(
    st.one_of(
        st.builds(add, st.integers(-5, 10)),
        st.just(REPORT),
        st.sampled_from([("processed", 0), ("processed", 1)]),
    ),
    max_size=40,
)


# -- the fact sheet's cases ------------------------------------------------------


def test_split_mode_completes_when_closed_after_all_reports() -> None:
    log = [add(3), REPORT, REPORT, REPORT, PROCESSED]
    current = replay(log, is_multipart=True, rules="current")
    assert current.complete and current.completed_at == 4 and not current.early
    older = replay(log, is_multipart=True, rules="older")  # no multipart gate: early
    assert older.complete and older.completed_at == 3 and older.early


def test_non_multipart_bundle_mode_completes_after_the_first_object() -> None:
    """Bundle mode: one expectation per message, one report per object."""
    log = [add(1), REPORT, REPORT, REPORT, add(1), REPORT, REPORT, PROCESSED]
    current = replay(log, is_multipart=False, rules="current")
    assert current.complete and current.completed_at == 1 and current.early
    assert (current.expected, current.processed) == (2, 5)
    older = replay(log, is_multipart=False, rules="older")
    assert older.completed_at == 1 and older.early  # processed == expected at the first report


def test_a_withdrawal_to_zero_then_a_report_completes_early() -> None:
    """A failed send withdrawn; a message published before the cut reports next."""
    log = [add(2), add(-2), REPORT, add(2), REPORT, REPORT, PROCESSED]
    verdict = replay(log, is_multipart=False, rules="current")
    assert verdict.complete and verdict.completed_at == 2 and verdict.early
    multipart = replay(log, is_multipart=True, rules="current")
    assert multipart.completed_at == 6 and not multipart.early


def test_an_addition_never_completes_a_work() -> None:
    for rules in RULE_SETS:
        assert replay([PROCESSED, REPORT, add(1)], False, rules).completed_at == 0
        assert not replay([add(0), add(1), add(-1)], False, rules).complete


def test_under_older_rules_reports_ahead_of_their_count_stay_in_progress() -> None:
    """Reports in before the expectations that count them (added after the publish):
    processed is past expected when it is raised, and never meets it."""
    log = [REPORT, REPORT, add(1), PROCESSED, PROCESSED]
    older = replay(log, is_multipart=True, rules="older")
    assert not older.complete and older.overshoot and older.status == "progress"
    current = replay(log, is_multipart=True, rules="current")
    assert current.complete and current.completed_at == 3


def test_older_rules_complete_an_empty_work_when_closed() -> None:
    verdict = replay([add(3), add(-3), PROCESSED], is_multipart=True, rules="older")
    assert verdict.complete and verdict.completed_at == 2


def test_a_stuck_work_stays_in_progress() -> None:
    """Expected more than will ever be reported: in progress forever, under both."""
    for rules in RULE_SETS:
        verdict = replay([add(3), REPORT, REPORT, PROCESSED], is_multipart=False, rules=rules)
        assert not verdict.complete and verdict.completed_at is None and not verdict.early
        assert verdict.is_processed and verdict.first_processed_at == 3


def test_malformed_events_and_unknown_rules_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown completion rules"):
        replay([], False, "newest")
    for event in [("report", 2), ("processed", 2), ("delete", 0)]:
        with pytest.raises(ValueError):
            count(Tally(), event)


def test_older_platforms_know_no_multipart_works() -> None:
    """The older work.js has no multipart flag: a report that makes processed equal to
    expected completes the work, marked processed or not (hence the manager's
    placeholder, held until after its close)."""
    log = [add(2), REPORT, REPORT, PROCESSED]
    older = replay(log, is_multipart=True, rules="older")
    assert older.completed_at == 2 and older.early
    held = replay([add(3), REPORT, REPORT, PROCESSED, REPORT], is_multipart=True, rules="older")
    assert held.completed_at == 4 and not held.early


def test_under_older_rules_a_count_lowered_below_the_reports_stays_in_progress() -> None:
    log = [add(5), REPORT, REPORT, REPORT, add(-3), PROCESSED, REPORT]
    older = replay(log, is_multipart=True, rules="older")
    assert not older.complete and older.overshoot


# -- properties --------------------------------------------------------------------


@given(events)
def test_a_multipart_work_never_completes_before_its_first_processed_event(
    log: list[Event],
) -> None:
    """Under the current rules; the older ones know no multipart works."""
    verdict = replay(log, is_multipart=True, rules="current")
    assert not verdict.early
    if verdict.complete:
        assert verdict.first_processed_at is not None
        assert verdict.completed_at is not None
        assert verdict.completed_at >= verdict.first_processed_at


@given(events, st.sampled_from(RULE_SETS), st.booleans())
def test_completion_happens_at_a_report_or_processed_event_and_stays(
    log: list[Event], rules: str, is_multipart: bool
) -> None:
    verdict = replay(log, is_multipart, rules)
    if verdict.completed_at is not None:
        assert log[verdict.completed_at][0] in ("report", "processed")
        for end in range(verdict.completed_at + 1, len(log) + 1):  # never back to progress
            assert replay(log[:end], is_multipart, rules).completed_at == verdict.completed_at
    assert verdict.expected == sum(v for k, v in log if k == "add")
    assert verdict.processed == sum(1 for k, _ in log if k == "report")


@given(events)
def test_current_rules_complete_no_later_than_older_ones(log: list[Event]) -> None:
    """Each time the older rules complete a (non-multipart) work, the current ones (>=)
    would have too."""
    current = replay(log, False, "current")
    older = replay(log, False, "older")
    if older.completed_at is not None and log[older.completed_at][0] == "report":
        assert current.completed_at is not None
        assert current.completed_at <= older.completed_at


@given(st.integers(1, 10), st.integers(1, 10), st.integers(0, 5))
def test_reports_over_the_count_complete_early_under_older_rules(
    expected: int, extra: int, later: int
) -> None:
    """More reports than expected before the close (a re-sent batch): the older rules
    complete the work at the report that meets the count — before its close; the
    current ones, multipart, at the close."""
    log = [add(expected), *[REPORT] * (expected + extra), PROCESSED, *[REPORT] * later]
    older = replay(log, is_multipart=True, rules="older")
    assert older.complete and older.early and older.completed_at == expected
    current = replay(log, is_multipart=True, rules="current")
    assert current.completed_at == expected + extra + 1


@given(events, st.booleans())
def test_a_closed_work_with_every_report_in_completes_under_current_rules(
    log: list[Event], is_multipart: bool
) -> None:
    verdict = replay([*log, PROCESSED], is_multipart, "current")
    if verdict.processed >= verdict.expected:
        assert verdict.complete
