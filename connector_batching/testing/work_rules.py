"""When the OpenCTI platform calls a work complete: its rule sets, replayed over an event log.

A work's event log holds, in order, ``("add", n)`` for each ``addExpectations(n)``
(``n`` may be negative: the platform adds it without a sign check),
``("report", 1)`` for each ``reportExpectation`` (with or without an error) and
``("processed", e)`` for each ``workToProcessed`` (``e`` is 1 when in error).

Two rule sets (:data:`RULE_SETS`), both checked at every report and every
``workToProcessed``, never at ``addExpectations``:

* ``"current"``: complete when ``(not is_multipart or is_processed) and
  processed >= expected``.  A non-multipart work thus completes at the first
  report that reaches its expected count, even before its connector closed it.
* ``"older"`` (still deployed): at a report, complete when
  ``processed == expected``; at ``workToProcessed``, when ``expected == 0 or
  processed == expected``.  These platforms know no multipart works (their
  ``work.js`` and ``redis`` keep no such flag): a report can complete a work its
  connector has not closed.  A count that passes the expected one without
  meeting it (more reports than expected, or an expected count lowered below
  the reports already in) leaves the work in progress forever.

Under both, a completed work never goes back to "in progress".  Everything
here is pure: no stub, no broker.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace

__all__ = ["EVENT_KINDS", "RULE_SETS", "Event", "Tally", "Verdict", "completes", "count", "replay"]

#: The rule sets :func:`replay` knows.
RULE_SETS = ("current", "older")
#: The kinds of events in a work's log.
EVENT_KINDS = ("add", "report", "processed")
#: ``(kind, value)``: ``("add", n)``, ``("report", 1)``, ``("processed", 0 or 1)``.
Event = tuple[str, int]


@dataclass(frozen=True)
class Tally:
    """A work's counts after some events: expected, processed (reports), closed."""

    expected: int = 0
    processed: int = 0
    is_processed: bool = False


@dataclass(frozen=True)
class Verdict:
    """What a rule set makes of a whole event log.

    ``expected`` and ``processed`` are the counts at the end of the log (not at
    completion).  ``early``: completed before the first ``processed`` event (or
    with none at all).
    """

    complete: bool
    completed_at: int | None
    early: bool
    expected: int
    processed: int
    is_processed: bool
    first_processed_at: int | None

    @property
    def status(self) -> str:
        """``"complete"`` or ``"progress"``, as the platform shows the work."""
        return "complete" if self.complete else "progress"

    @property
    def overshoot(self) -> bool:
        """More reports than expectations at the end of the log."""
        return self.processed > self.expected


def check_rules(rules: str) -> str:
    """``rules`` when it names a rule set; ``ValueError`` otherwise."""
    if rules not in RULE_SETS:
        raise ValueError(f"unknown completion rules {rules!r}; expected one of {RULE_SETS}")
    return rules


def count(tally: Tally, event: Event) -> Tally:
    """The counts after ``event``; ``ValueError`` for a malformed event."""
    kind, value = event
    if kind == "add":
        return replace(tally, expected=tally.expected + value)
    if kind == "report":
        if value != 1:
            raise ValueError(f"a report counts 1, not {value!r}")
        return replace(tally, processed=tally.processed + 1)
    if kind == "processed":
        if value not in (0, 1):
            raise ValueError(f"a processed event carries 0 or 1 (in error), not {value!r}")
        return replace(tally, is_processed=True)
    raise ValueError(f"unknown event kind {kind!r}; expected one of {EVENT_KINDS}")


def completes(rules: str, kind: str, tally: Tally, is_multipart: bool) -> bool:
    """Whether an event of ``kind``, already counted in ``tally``, completes the work
    (one not complete yet) under ``rules``."""
    check_rules(rules)
    if kind == "add":
        return False
    if rules == "current":
        gate = not is_multipart or tally.is_processed
        return gate and tally.processed >= tally.expected
    if kind == "report":  # the older rules: no multipart gate
        return tally.processed == tally.expected
    return tally.expected == 0 or tally.processed == tally.expected


def replay(events: Iterable[Event], is_multipart: bool, rules: str) -> Verdict:
    """Replay ``events`` under ``rules``: whether and where the work completed."""
    check_rules(rules)
    tally = Tally()
    completed_at: int | None = None
    first_processed_at: int | None = None
    for index, event in enumerate(events):
        tally = count(tally, event)
        if event[0] == "processed" and first_processed_at is None:
            first_processed_at = index
        if completed_at is None and completes(rules, event[0], tally, is_multipart):
            completed_at = index
    return Verdict(
        complete=completed_at is not None,
        completed_at=completed_at,
        early=completed_at is not None
        and (first_processed_at is None or completed_at < first_processed_at),
        expected=tally.expected,
        processed=tally.processed,
        is_processed=tally.is_processed,
        first_processed_at=first_processed_at,
    )
