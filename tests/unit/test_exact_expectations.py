"""The manager's own expectation calls: exact counts whatever pycti does around them.

The fake helper (``RecordingHelper``) counts expectations as the platform does
(its ``api.query``); ``PyctiLikeHelper`` adds its own expectations in
``send_stix2_bundle`` the way pycti does — or fails to, silently.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest

from connector_batching.opencti import OpenCTIWorkManager
from tests.unit.test_opencti_unit import RecordingHelper, _indicator


class PyctiLikeHelper(RecordingHelper):
    """``send_stix2_bundle`` adds pycti's count first, then may fail mid-send."""

    def __init__(self) -> None:
        super().__init__()
        self.send_error: Exception | None = None
        self.published_before_error = 0
        self.add_swallowed = False
        self.published: list[str] = []  # ids, one per message the broker confirmed

    def send_stix2_bundle(self, bundle: str, **kwargs: Any) -> list[str]:
        work_id = kwargs.get("work_id")
        objects = json.loads(bundle)["objects"]
        pycti_count = 1 if kwargs.get("no_split") else len(objects)
        if work_id and not self.add_swallowed:  # pycti's add_expectations, before pika
            self.expected[work_id] = self.expected.get(work_id, 0) + pycti_count
        if self.send_error is not None:
            for obj in objects[: self.published_before_error]:  # confirmed, then it broke
                self.published.append(obj["id"])
                self.metric.inc("bundle_send")
            raise self.send_error
        for obj in objects:
            self.published.append(obj["id"])
            self.metric.inc("bundle_send")
        return super().send_stix2_bundle(bundle, **kwargs)


def _manager(helper: RecordingHelper, **options: Any) -> OpenCTIWorkManager:
    manager = OpenCTIWorkManager(helper, backpressure=False, **options)
    assert manager.publisher == "pycti"  # a fake helper has no broker settings
    return manager


def test_a_builtin_error_inside_the_send_leaves_nothing_counted() -> None:
    """A reset socket makes pika raise a builtin ValueError after pycti added its count."""
    helper = PyctiLikeHelper()
    manager = _manager(helper)
    work = manager.initiate_work("w", "indicators")
    helper.send_error = ValueError("Expected connected socket, but getpeername() failed")
    with pytest.raises(ValueError, match="getpeername"):
        manager.send_bundle(work, [_indicator(n) for n in range(3)])
    assert helper.expected[work] == 1  # only the placeholder: the retry counts afresh
    helper.send_error = None
    manager.send_bundle(work, [_indicator(n) for n in range(3)])
    assert helper.expected[work] == 1 + 3
    manager.work_to_process(work)
    assert helper.expected[work] == helper.reported[work] + 3  # the worker's 3 reports to come


def test_a_swallowed_pycti_add_is_made_up_for() -> None:
    helper = PyctiLikeHelper()
    helper.add_swallowed = True  # pycti logged the failed call and published anyway
    manager = _manager(helper)
    work = manager.initiate_work("w", "indicators")
    manager.send_bundle(work, [_indicator(n) for n in range(4)])
    assert helper.expected[work] == 1 + 4


def test_bundle_mode_counts_one_report_per_object_not_one_per_message() -> None:
    helper = PyctiLikeHelper()
    manager = _manager(helper, send_mode="bundle")
    work = manager.initiate_work("w", "indicators")
    manager.send_bundle(work, [_indicator(n) for n in range(5)])
    assert len(helper.named("send_stix2_bundle")) == 1
    assert helper.expected[work] == 1 + 5  # the worker reports each object it imports


def test_the_work_is_marked_processed_before_its_placeholder_is_reported() -> None:
    helper = PyctiLikeHelper()
    manager = _manager(helper)
    work = manager.initiate_work("w", "indicators")
    manager.send_bundle(work, [_indicator(1)])
    manager.work_to_process(work)
    order = [name for name, _args in helper.calls if name in {"to_processed", "report_expectation"}]
    assert order == ["to_processed", "report_expectation"]
    # the batch's one report and the placeholder, in one call
    assert next(args for name, args in helper.calls if name == "add_expectations") == (work, 2)


def test_a_failed_expectations_call_raises_and_nothing_is_sent() -> None:
    helper = PyctiLikeHelper()
    manager = _manager(helper)
    work = manager.initiate_work("w", "indicators")
    query = helper.api.query

    def failing(text: str, variables: dict[str, Any]) -> dict[str, Any]:
        if "addExpectations" in text:
            raise ValueError("the platform is down")
        return query(text, variables)

    helper.api.query = failing  # type: ignore[method-assign]
    with pytest.raises(ValueError, match="the platform is down"):
        manager.send_bundle(work, [_indicator(1)])
    assert helper.named("send_stix2_bundle") == []


def test_an_expectations_call_whose_answer_was_lost_is_not_applied_twice() -> None:
    helper = PyctiLikeHelper()
    manager = _manager(helper)
    work = manager.initiate_work("w", "indicators")
    query = helper.api.query
    lost = [True]

    def late(text: str, variables: dict[str, Any]) -> dict[str, Any]:
        answer = query(text, variables)  # applied on the platform ...
        if "addExpectations" in text and lost and lost.pop():
            raise TimeoutError("read timed out")  # ... the answer lost
        return answer

    helper.api.query = late  # type: ignore[method-assign]
    manager.send_bundle(work, [_indicator(n) for n in range(2)])
    assert helper.expected[work] == 1 + 2


def test_a_work_in_which_nothing_was_sent_expects_nothing() -> None:
    helper = PyctiLikeHelper()
    manager = _manager(helper)
    work = manager.initiate_work("w", "indicators")
    manager.send_bundle(work, [])
    manager.work_to_process(work, in_error=True, message="feed down")
    assert helper.named("add_expectations") == helper.named("report_expectation") == []
    assert helper.named("to_processed") == [(work, "feed down", True)]  # expected 0: complete


def test_split_mode_with_no_split_is_refused() -> None:
    with pytest.raises(ValueError, match="no_split=True is contradictory"):
        OpenCTIWorkManager(RecordingHelper(), send_mode="split", no_split=True)
    with pytest.raises(ValueError, match="publisher must be"):
        OpenCTIWorkManager(RecordingHelper(), publisher="fast")


def test_objects_the_splitter_cannot_import_are_counted_and_warned(
    caplog: pytest.LogCaptureFixture,
) -> None:
    helper = PyctiLikeHelper()
    manager = _manager(helper)
    work = manager.initiate_work("w", "indicators")
    odd = {"type": "x-unknown-thing", "spec_version": "2.1", "id": "x-unknown-thing--1"}
    with caplog.at_level(logging.WARNING):
        manager.send_bundle(work, [_indicator(1), odd])
    assert manager.counters["incompatible_objects"] == 1
    warnings = [m for level, m, meta in helper.connector_logger.records if level == "warning"]
    assert any("cannot import" in m for m in warnings)
    (meta,) = [meta for level, m, meta in helper.connector_logger.records if "cannot import" in m]
    assert meta["types"] == {"x-unknown-thing": 1}
    assert helper.expected[work] == 1 + 1  # only what pycti's splitter sends is counted


def test_a_close_given_up_on_is_done_before_the_next_work() -> None:
    """Marked processed, its placeholder report failed: left so, the work would stay in
    progress for ever; the manager reports it before it opens the next work."""
    helper = PyctiLikeHelper()
    manager = _manager(helper)
    work = manager.initiate_work("w", "indicators")
    manager.send_bundle(work, [_indicator(1)])
    query = helper.api.query
    down = [True]

    def reports_down(text: str, variables: dict[str, Any]) -> dict[str, Any]:
        if "reportExpectation" in text and down:
            raise ConnectionError("platform unreachable")
        return query(text, variables)

    helper.api.query = reports_down  # type: ignore[method-assign]
    with pytest.raises(ConnectionError):
        manager.work_to_process(work)
    assert manager.open_works == [work] and helper.named("report_expectation") == []
    down.clear()
    manager.initiate_work("next", "indicators")
    assert helper.named("report_expectation") == [work]
    assert len(helper.named("to_processed")) == 1  # marked processed once
    assert manager.open_works != [work] and work not in manager.open_works


def test_a_send_pycti_broke_part_way_resumes_with_what_it_had_not_published() -> None:
    """pycti counts each confirmed message in its bundle_send metric: the manager
    watches it, so the retry sends only the rest and the count stays exact."""
    helper = PyctiLikeHelper()
    manager = _manager(helper)
    work = manager.initiate_work("w", "indicators")
    batch = [_indicator(n) for n in range(5)]
    helper.send_error = ConnectionResetError("reset by peer")
    helper.published_before_error = 2
    with pytest.raises(ConnectionResetError):
        manager.send_bundle(work, batch)
    assert helper.expected[work] == 1 + 2  # the placeholder, the 2 confirmed
    assert manager.counters["messages_in_doubt"] == 1  # the one being published
    helper.send_error = None
    manager.send_bundle(work, batch)
    assert sorted(helper.published) == sorted(o["id"] for o in batch)  # none twice
    assert helper.expected[work] == 1 + 5
    assert manager.counters["parts_skipped_on_retry"] == 2
    assert ("metric", ("bundle_send", 1)) in helper.calls  # pycti's metric still counted
