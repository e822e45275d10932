"""End to end: a real pycti helper, the stub platform, the real RabbitMQ broker."""

from __future__ import annotations

import math
from collections import defaultdict
from typing import Any

import pytest

from connector_batching.config import GenericBatchProcessorConfig
from connector_batching.dates import format_instant
from connector_batching.opencti import OpenCTIWorkManager
from connector_batching.processor import GenericBatchProcessor
from connector_batching.testing.stub_platform import StubOpenCTI, drain_queue
from tests.integration.feed import AUTHOR, TLP_RED, modified_of, rows

pytestmark = pytest.mark.broker

GROUPS = 2_000
BATCH_SIZE = 200
STATE_KEY = "last_modified"


def _config(**overrides: Any) -> GenericBatchProcessorConfig:
    options: dict[str, Any] = {
        "batch_size": BATCH_SIZE,
        "work_name_template": "Test feed batch #{batch_num}",
        "state_key": STATE_KEY,
        "entity_type": "indicators",
        "display_name": "indicators",
        "date_extraction_function": modified_of,
    }
    options.update(overrides)
    return GenericBatchProcessorConfig(**options)


@pytest.mark.parametrize("in_flight", [0, 2], ids=["synchronous", "pipelined"])
def test_tlp_red_feed_arrives_complete_marked_and_attributed(
    stub: StubOpenCTI, make_helper: Any, in_flight: int
) -> None:
    helper = make_helper()
    manager = OpenCTIWorkManager(helper)
    feed = rows(GROUPS)
    config = _config(max_in_flight_batches=in_flight)
    processor = GenericBatchProcessor(config, manager, logger=helper.connector_logger)
    with processor:
        processor.add_item(TLP_RED)
        processor.add_item(AUTHOR)
        processor.add_items(feed)

    stats = processor.get_statistics()
    items = GROUPS + 2
    batches = math.ceil(items / BATCH_SIZE)
    assert stats["total_items_processed"] == items
    assert stats["total_batches_processed"] == batches
    assert stats["failed_items_count"] == 0

    messages = drain_queue(stub.amqp_url, stub.push_queue)
    arrived: dict[str, dict[str, Any]] = {}
    by_work: dict[str | None, list[dict[str, Any]]] = defaultdict(list)
    for message in messages:
        assert message.envelope["bundle_type"] == "QUEUE_BUNDLE"
        assert message.envelope["applicant_id"] == stub.user_id
        for obj in message.objects:
            arrived[obj["id"]] = obj
            by_work[message.work_id].append(obj)

    expected_ids = {TLP_RED.id, AUTHOR.id}
    for row in feed:
        expected_ids.update(obj.id for obj in row.to_stix())
    assert set(arrived) == expected_ids

    indicators = [obj for obj in arrived.values() if obj["type"] == "indicator"]
    assert len(indicators) == GROUPS
    for indicator in indicators:
        assert indicator["object_marking_refs"] == [TLP_RED.id], indicator["id"]
        assert indicator["created_by_ref"] == AUTHOR.id, indicator["id"]
    relationships = [obj for obj in arrived.values() if obj["type"] == "relationship"]
    assert len(relationships) == GROUPS
    assert all(rel["object_marking_refs"] == [TLP_RED.id] for rel in relationships)

    works = stub.works_list()
    assert len(works) == batches
    assert set(by_work) == {work.id for work in works}
    for work in works:
        assert work.closed and work.in_error is False and work.closed_count == 1, work
        # one per message, and the placeholder the manager reported once it closed the work
        assert work.expectations == 1 + sum(1 for m in messages if m.work_id == work.id), work
        assert work.reported_expectations == 1, work
        ids = {obj["id"] for obj in by_work[work.id]}
        # every bundle carries the marking and the author its members reference
        assert {TLP_RED.id, AUTHOR.id} <= ids, work.name

    expected_cursor = format_instant(feed[-1].modified)
    assert stub.state_dict() == {STATE_KEY: expected_cursor}
    pinged = [call.variables.get("state") for call in stub.calls_of("PingConnector")]
    assert any(state and expected_cursor in state for state in pinged)
    assert manager.get_state(STATE_KEY) == expected_cursor
    assert all(call.outcome == "ok" for call in stub.calls)


def test_send_options_pass_through_and_cleanup_stays_off(
    stub: StubOpenCTI, make_helper: Any
) -> None:
    helper = make_helper()
    indicator = rows(1)[0].to_stix()[0]  # references TLP:RED and the author, not in the bundle

    default = OpenCTIWorkManager(helper, backpressure=False)
    work = default.initiate_work("default options", "indicators")
    default.send_bundle(work, [indicator])
    default.work_to_process(work)
    (plain,) = drain_queue(stub.amqp_url, stub.push_queue)
    assert plain.envelope["update"] is False
    assert plain.objects[0]["object_marking_refs"] == [TLP_RED.id]
    assert plain.objects[0]["created_by_ref"] == AUTHOR.id

    custom = OpenCTIWorkManager(
        helper,
        backpressure=False,
        update=True,
        entities_types=["Indicator"],
        cleanup_inconsistent_bundle=True,
    )
    work = custom.initiate_work("custom options", "indicators")
    custom.send_bundle(work, [indicator])
    custom.work_to_process(work)
    (cleaned,) = drain_queue(stub.amqp_url, stub.push_queue)
    assert cleaned.envelope["update"] is True
    assert cleaned.envelope["entities_types"] == ["Indicator"]
    # what the option does, and why it is off by default: the marking is gone
    assert not cleaned.objects[0].get("object_marking_refs")


def test_duplicates_in_a_batch_keep_the_latest_version(stub: StubOpenCTI, make_helper: Any) -> None:
    helper = make_helper()
    manager = OpenCTIWorkManager(helper, backpressure=False)
    old = {
        "type": "indicator",
        "spec_version": "2.1",
        "id": "indicator--8e2e2d2b-17d4-4cbf-938f-98ee46b3cd3f",
        "created": "2026-01-01T00:00:00.000Z",
        "modified": "2026-01-01T00:00:00.000Z",
        "name": "old",
        "pattern": "[url:value = 'http://a.example']",
        "pattern_type": "stix",
        "valid_from": "2026-01-01T00:00:00Z",
    }
    new = dict(old, modified="2026-02-01T00:00:00.000Z", name="new")
    work = manager.initiate_work("dedup", "indicators")
    manager.send_bundle(work, [new, old])
    manager.work_to_process(work)
    (message,) = drain_queue(stub.amqp_url, stub.push_queue)
    assert [obj["name"] for obj in message.objects] == ["new"]
    assert stub.works_list()[0].expectations == 1 + 1  # the message, the placeholder
