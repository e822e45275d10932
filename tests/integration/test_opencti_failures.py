"""Failure paths against the real helper and broker: API errors, a dead broker, a full queue."""

from __future__ import annotations

import json
import logging
import socket
from typing import Any

import pytest
from prometheus_client import REGISTRY

from connector_batching.config import GenericBatchProcessorConfig
from connector_batching.opencti import OpenCTIWorkManager
from connector_batching.processor import GenericBatchProcessor
from connector_batching.testing.stub_platform import StubOpenCTI, drain_queue, queue_depth
from tests.integration.feed import AUTHOR, TLP_RED, modified_of, rows

pytestmark = pytest.mark.broker

STATE_KEY = "last_modified"


class FeedBatchError(Exception):
    """Raised by the processor when a batch fails for good."""


def _config(**overrides: Any) -> GenericBatchProcessorConfig:
    options: dict[str, Any] = {
        "batch_size": 10,
        "work_name_template": "Batch #{batch_num}",
        "state_key": STATE_KEY,
        "entity_type": "indicators",
        "display_name": "indicators",
        "date_extraction_function": modified_of,
        "exception_class": FeedBatchError,
        "max_retries": 3,
        "retry_delay": 0.01,
        "retry_max_delay": 0.05,
    }
    options.update(overrides)
    return GenericBatchProcessorConfig(**options)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


@pytest.mark.parametrize("kind", ["graphql", "http_500"])
def test_work_creation_errors_are_retried_with_one_work_per_batch(
    stub: StubOpenCTI, make_helper: Any, kind: str
) -> None:
    helper = make_helper()
    stub.fail("workAdd", times=2, kind=kind)
    stub.operation_latency["workAdd"] = 0.02
    processor = GenericBatchProcessor(_config(), OpenCTIWorkManager(helper, backpressure=False))
    feed = rows(30)
    with processor:
        processor.add_items(feed)

    assert processor.get_statistics()["total_batches_processed"] == 3
    assert processor.get_statistics()["retries"] == 2
    outcomes = [call.outcome for call in stub.calls_of("workAdd")]
    failed = "graphql_error" if kind == "graphql" else "http_500"
    assert outcomes == [failed, failed, "ok", "ok", "ok"]
    works = stub.works_list()
    assert len(works) == 3
    assert all(work.closed and work.in_error is False for work in works)
    messages = drain_queue(stub.amqp_url, stub.push_queue)
    assert {m.work_id for m in messages} == {work.id for work in works}
    arrived = {obj["id"] for m in messages for obj in m.objects}
    assert {obj.id for row in feed for obj in row.to_stix()} <= arrived


def test_unreachable_broker_keeps_items_closes_works_in_error_and_holds_cursor(
    stub: StubOpenCTI, make_helper: Any
) -> None:
    previous = "2025-12-31T00:00:00Z"
    stub.state = json.dumps({STATE_KEY: previous, "other": "kept"})
    stub.advertised_broker.port = _free_port()  # the platform points at a dead broker
    helper = make_helper()
    manager = OpenCTIWorkManager(helper, backpressure=False)
    processor = GenericBatchProcessor(_config(max_retries=2), manager)
    feed = rows(20)

    failures: list[FeedBatchError] = []
    for row in feed:
        try:
            processor.add_item(row)
        except FeedBatchError as exc:
            failures.append(exc)
    processor.update_final_state()

    assert len(failures) == 2  # two batches of ten, each after three attempts
    assert len(processor.get_failed_items()) == 20
    stats = processor.get_statistics()
    assert stats["total_batches_processed"] == 0
    assert stats["failed_items_count"] == 20
    works = stub.works_list()
    assert len(works) == 2  # one work per batch, reused by its retries
    assert len(stub.calls_of("workAdd")) == 2
    for work, failure in zip(works, failures, strict=True):
        assert work.closed and work.in_error is True, work
        assert work.messages and "AMQPConnectionError" in str(work.messages[-1]), work
        assert failure.work_id == work.id  # type: ignore[attr-defined]
    assert stub.state_dict() == {STATE_KEY: previous, "other": "kept"}
    assert manager.get_state(STATE_KEY) == previous
    assert manager.open_works == []
    assert queue_depth(stub.amqp_url, stub.push_queue) == 0
    failed_objects = _metric(
        "connector_batching_failed_items_total", connector_id=stub.connector_id
    )
    assert failed_objects >= 20 * 3


def test_full_queue_makes_the_batch_wait_until_it_drains(
    stub: StubOpenCTI, make_helper: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    full = (40_000, 600_000_000)  # 600 MB, over the 500 MB threshold
    stub.report_queue([full, full, full, (0, 0)])
    helper = make_helper(queue_threshold=500)
    manager = OpenCTIWorkManager(helper, queue_check_interval=0.05)
    processor = GenericBatchProcessor(_config(batch_size=100), manager)
    with processor:
        processor.add_item(TLP_RED)
        processor.add_item(AUTHOR)
        processor.add_items(rows(5))

    operations = [op for op in stub.operations() if op in ("GetConnector", "workAdd")]
    first_work = operations.index("workAdd")
    assert operations[:first_work] == ["GetConnector"] * 4  # waited through three full reads
    assert [w.closed and w.in_error is False for w in stub.works_list()] == [True]
    assert len(drain_queue(stub.amqp_url, stub.push_queue)) == 5 * 3 + 2
    waiting = [r for r in caplog.records if "push queue is over its threshold" in r.getMessage()]
    assert len(waiting) == 3
    assert helper.connector_info.buffering is False
    assert helper.connector_info.queue_threshold == 500.0
    labels = {"connector_id": stub.connector_id}
    assert _metric("connector_batching_backpressure_waits_total", **labels) == 1.0
    assert _metric("connector_batching_backpressure_wait_seconds_total", **labels) > 0.0


def test_backpressure_disabled_or_unreadable_queue_never_blocks(
    stub: StubOpenCTI, make_helper: Any
) -> None:
    helper = make_helper(queue_threshold=1)
    stub.report_queue([(1, 5_000_000)])  # always 5 MB, over 1 MB
    disabled = OpenCTIWorkManager(helper, backpressure=False)
    work = disabled.initiate_work("no back-pressure", "indicators")
    disabled.work_to_process(work)
    assert stub.calls_of("GetConnector") == []

    stub.fail("GetConnector", times=1, kind="http_500")
    unreadable = OpenCTIWorkManager(helper, queue_check_interval=0.01)
    work = unreadable.initiate_work("queue size unknown", "indicators")
    unreadable.work_to_process(work)
    assert [call.outcome for call in stub.calls_of("GetConnector")] == ["http_500"]

    capped = OpenCTIWorkManager(helper, queue_check_interval=0.01, max_backpressure_wait=0.05)
    work = capped.initiate_work("capped wait", "indicators")
    capped.work_to_process(work)
    assert len(stub.calls_of("GetConnector")) >= 2
    assert all(work.closed for work in stub.works_list())


def test_work_closing_error_is_retried_and_the_batch_counts_as_delivered(
    stub: StubOpenCTI, make_helper: Any
) -> None:
    helper = make_helper()
    stub.fail("workToProcessed", times=1, kind="graphql")
    processor = GenericBatchProcessor(
        _config(batch_size=5), OpenCTIWorkManager(helper, backpressure=False)
    )
    with processor:
        processor.add_items(rows(5))
    (work,) = stub.works_list()
    assert work.closed and work.in_error is False
    assert [c.outcome for c in stub.calls_of("workToProcessed")] == ["graphql_error", "ok"]
    # the batch's 16 messages and the placeholder, once: the bundle was not sent twice
    assert [c.variables["expectations"] for c in stub.calls_of("addExpectations")] == [17]
    assert processor.get_statistics()["failed_items_count"] == 0
    assert stub.state_dict()[STATE_KEY] == "2026-01-01T00:04:00Z"


def test_cursor_update_keeps_other_keys_and_rereads_a_reset_state(
    stub: StubOpenCTI, make_helper: Any
) -> None:
    stub.state = json.dumps({"feed_etag": "abc"})
    helper = make_helper()
    manager = OpenCTIWorkManager(helper, backpressure=False)
    manager.update_state("cursor_a", "2026-01-01T00:00:00Z")
    assert stub.state_dict() == {"feed_etag": "abc", "cursor_a": "2026-01-01T00:00:00Z"}

    # the platform resets the state (UI); the ping thread applies it to the helper
    helper.set_state({"feed_etag": "reset"})
    manager.update_state("cursor_b", "2026-01-02T00:00:00Z")
    assert stub.state_dict() == {"feed_etag": "reset", "cursor_b": "2026-01-02T00:00:00Z"}
    assert manager.get_state("cursor_a") is None
    assert manager.get_state("cursor_b") == "2026-01-02T00:00:00Z"
