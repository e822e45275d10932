"""One batch's delivery on its own: resumable attempts, works always closed, never raises."""

from __future__ import annotations

from typing import Any

from connector_batching import RetryPolicy
from connector_batching.batch import Batch
from connector_batching.delivery import Delivery, Outcome
from connector_batching.manager_calls import ManagerCalls
from connector_batching.testing import RecordingWorkManager


def deliver(manager: RecordingWorkManager, attempts: int = 3) -> tuple[Outcome, list[Any]]:
    events: list[Any] = []
    delivery = Delivery(
        ManagerCalls(manager),
        RetryPolicy(attempts=attempts, delay=0.5),
        clock=lambda: 0.0,
        sleep=events.append,
        on_retry=lambda batch, attempt, delay, exc: events.append(("retry", attempt)),
        on_close_error=lambda work_id, exc: events.append(("unclosed", work_id)),
    )
    batch = Batch(1, [{"type": "x", "id": "x--1"}], [None])
    outcome = delivery.run(batch, "Batch #1", "x", lambda items: (items, list(items)))
    return outcome, events


def test_a_retry_reuses_the_work_and_never_resends_what_went_out() -> None:
    manager = RecordingWorkManager(fail={"close": lambda n: n == 1})
    outcome, events = deliver(manager)
    assert outcome.delivered and outcome.attempts == 2
    assert list(manager.works) == ["work-1"] and manager.works["work-1"].sends == 1
    assert events == [("retry", 1), 0.5]


def test_a_batch_failing_for_good_closes_its_work_in_error() -> None:
    manager = RecordingWorkManager(fail={"send": lambda n: True})
    outcome, _events = deliver(manager)
    assert not outcome.delivered and outcome.attempts == 3
    work = manager.works["work-1"]
    assert work.status == "error" and "InjectedFault" in (work.message or "")


def test_delivered_but_never_closed_counts_as_delivered_and_closes_in_error() -> None:
    manager = RecordingWorkManager(fail={"close": lambda n: n <= 4})  # 3 tries + 1 last close
    outcome, _ = deliver(manager)
    assert outcome.delivered and outcome.close_error is not None
    assert manager.works["work-1"].status == "error"


def test_an_interrupt_is_kept_in_the_outcome_after_the_work_was_closed() -> None:
    manager = RecordingWorkManager(interrupt={"send": lambda n: n == 1})
    outcome, _ = deliver(manager)  # does not raise
    assert isinstance(outcome.interrupt, KeyboardInterrupt) and not outcome.delivered
    assert manager.works["work-1"].status == "error"


def test_an_interrupt_while_closing_in_error_still_closes_the_work() -> None:
    manager = RecordingWorkManager(
        fail={"send": lambda n: True}, interrupt={"close": lambda n: n == 1}
    )
    outcome, events = deliver(manager, attempts=1)
    assert isinstance(outcome.interrupt, KeyboardInterrupt)
    assert manager.works["work-1"].status == "error" and ("unclosed", "work-1") not in events
