"""Bundle send mode: one RabbitMQ message per batch, imported whole by the worker.

Real helper, stub platform, real broker.  Messages are read from the push queue
and decoded as the OpenCTI worker does (JSON envelope, base64 STIX bundle).
"""

from __future__ import annotations

import base64
import json
import math
from collections import defaultdict
from typing import Any

import pika
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from connector_batching.config import GenericBatchProcessorConfig
from connector_batching.opencti import (
    DEFAULT_MAX_BATCH_BYTES,
    RABBITMQ_DEFAULT_MAX_MESSAGE_BYTES,
    OpenCTIWorkManager,
    split_bundle,
)
from connector_batching.references import add_references
from connector_batching.stix import to_stix_dict
from connector_batching.testing.stub_platform import PushedMessage, StubOpenCTI, decode_message
from tests.integration.feed import AUTHOR, TLP_RED, modified_of, rows

pytestmark = pytest.mark.broker

STATE_KEY = "last_modified"


def _config(**overrides: Any) -> GenericBatchProcessorConfig:
    options: dict[str, Any] = {
        "batch_size": 50,
        "work_name_template": "Bundle batch #{batch_num}",
        "state_key": STATE_KEY,
        "entity_type": "indicators",
        "display_name": "indicators",
        "date_extraction_function": modified_of,
    }
    options.update(overrides)
    return GenericBatchProcessorConfig(**options)


def drain_raw(amqp_url: str, queue: str) -> list[tuple[int, PushedMessage]]:
    """Every message in ``queue`` as (size of the body on the wire, decoded message)."""
    connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
    out: list[tuple[int, PushedMessage]] = []
    try:
        channel = connection.channel()
        while True:
            method, _properties, body = channel.basic_get(queue, auto_ack=True)
            if method is None:
                return out
            out.append((len(body), decode_message(body)))
    finally:
        connection.close()


def missing_references(message: PushedMessage, known: set[str]) -> set[str]:
    """Ids referenced inside the message, known to the feed, but not in the message."""
    ids = {obj["id"] for obj in message.objects}
    wanted: set[str] = set()
    for obj in message.objects:
        add_references(obj, wanted)
    return (wanted & known) - ids


def _feed_ids(count: int) -> set[str]:
    ids = {TLP_RED.id, AUTHOR.id}
    for row in rows(count):
        ids.update(obj.id for obj in row.to_stix())
    return ids


def test_bundle_mode_sends_one_message_per_batch_imported_whole(
    stub: StubOpenCTI, make_helper: Any
) -> None:
    from connector_batching.processor import GenericBatchProcessor

    helper = make_helper()
    manager = OpenCTIWorkManager(helper, send_mode="bundle", backpressure=False)
    groups = 300
    with GenericBatchProcessor(_config(), manager) as processor:
        processor.add_item(TLP_RED)
        processor.add_item(AUTHOR)
        processor.add_items(rows(groups))

    batches = math.ceil((groups + 2) / 50)
    assert processor.get_statistics()["total_batches_processed"] == batches
    received = drain_raw(stub.amqp_url, stub.push_queue)
    messages = [message for _size, message in received]
    assert len(messages) == batches  # one message per batch
    known = _feed_ids(groups)
    arrived: set[str] = set()
    by_work: dict[str | None, int] = defaultdict(int)
    for message in messages:
        assert message.envelope["no_split"] is True
        assert message.envelope["bundle_type"] == "QUEUE_BUNDLE"
        assert message.bundle["type"] == "bundle"
        assert missing_references(message, known) == set()
        arrived.update(obj["id"] for obj in message.objects)
        by_work[message.work_id] += 1
    assert arrived == known
    works = stub.works_list()
    assert len(works) == batches
    for work in works:
        assert work.closed and work.in_error is False, work
        assert by_work[work.id] == 1, work
        # the worker reports each object of a no_split message; and the placeholder
        (message,) = [m for m in messages if m.work_id == work.id]
        assert work.expectations == len(message.objects) + 1, work
    indicators = [o for m in messages for o in m.objects if o["type"] == "indicator"]
    assert all(o["object_marking_refs"] == [TLP_RED.id] for o in indicators)
    assert manager.counters["messages_sent"] == batches
    assert manager.counters["oversize_batches"] == 0
    assert stub.state_dict()[STATE_KEY] == "2026-01-01T04:59:00Z"  # row 299


def test_oversize_batch_goes_as_reference_complete_parts_under_the_limit(
    stub: StubOpenCTI, make_helper: Any
) -> None:
    from connector_batching.processor import GenericBatchProcessor

    helper = make_helper()
    limit = 6_000  # a group (indicator + URL + relationship) with marking and author: ~3 kB
    manager = OpenCTIWorkManager(
        helper, send_mode="bundle", max_batch_bytes=limit, backpressure=False
    )
    groups = 40
    with GenericBatchProcessor(_config(batch_size=100), manager) as processor:
        processor.add_item(TLP_RED)
        processor.add_item(AUTHOR)
        processor.add_items(rows(groups))

    assert processor.get_statistics()["total_batches_processed"] == 1
    received = drain_raw(stub.amqp_url, stub.push_queue)
    (work,) = stub.works_list()
    assert len(received) > 3  # split into several parts ...
    assert {message.work_id for _size, message in received} == {work.id}  # ... of one work
    assert work.closed and work.in_error is False
    # one per object the worker will report (each part is imported whole), the placeholder
    assert work.expectations == sum(len(m.objects) for _s, m in received) + 1
    known = _feed_ids(groups)
    arrived: set[str] = set()
    for _size, message in received:
        content = base64.b64decode(message.envelope["content"])
        assert len(content) <= limit
        assert message.envelope["no_split"] is True
        assert missing_references(message, known) == set()
        ids = {obj["id"] for obj in message.objects}
        assert {TLP_RED.id, AUTHOR.id} <= ids  # every part carries marking and author
        for rel in (o for o in message.objects if o["type"] == "relationship"):
            assert {rel["source_ref"], rel["target_ref"]} <= ids
        arrived |= ids
    assert arrived == known
    assert manager.counters["oversize_batches"] == 1
    assert manager.counters["messages_sent"] == len(received)


def test_default_limit_keeps_a_large_batch_under_rabbitmqs_16_mib(
    stub: StubOpenCTI, make_helper: Any
) -> None:
    helper = make_helper()
    manager = OpenCTIWorkManager(helper, send_mode="bundle", backpressure=False)
    big = []
    for n, row in enumerate(rows(14)):
        indicator = to_stix_dict(row.to_stix()[0])
        indicator["description"] = f"{n:02d}" + "x" * 1_000_000  # ~1 MB each, ~14 MB in all
        big.append(indicator)
    work = manager.initiate_work("large batch", "indicators")
    manager.send_bundle(work, [TLP_RED, AUTHOR, *big])
    manager.work_to_process(work)

    received = drain_raw(stub.amqp_url, stub.push_queue)
    assert len(received) == 2
    for size, message in received:
        assert size < RABBITMQ_DEFAULT_MAX_MESSAGE_BYTES  # what the broker would accept
        assert len(base64.b64decode(message.envelope["content"])) <= DEFAULT_MAX_BATCH_BYTES
        assert missing_references(message, {TLP_RED.id, AUTHOR.id}) == set()
    arrived = {o["id"] for _s, m in received for o in m.objects}
    assert {o["id"] for o in big} <= arrived
    objects = sum(len(m.objects) for _s, m in received)
    assert stub.works_list()[0].expectations == objects + 1  # and the placeholder


def test_an_object_larger_than_the_limit_fails_the_batch_with_a_clear_error(
    stub: StubOpenCTI, make_helper: Any
) -> None:
    helper = make_helper()
    manager = OpenCTIWorkManager(
        helper, send_mode="bundle", max_batch_bytes=2_000, backpressure=False
    )
    indicator = to_stix_dict(rows(1)[0].to_stix()[0])
    indicator["description"] = "y" * 5_000
    work = manager.initiate_work("too large", "indicators")
    with pytest.raises(ValueError, match=r"max_batch_bytes=2000") as failure:
        manager.send_bundle(work, [TLP_RED, AUTHOR, indicator])
    assert indicator["id"] in str(failure.value)
    manager.work_to_process(work, in_error=True, message=str(failure.value))
    assert drain_raw(stub.amqp_url, stub.push_queue) == []


def test_split_bundle_parts_are_deterministic_complete_and_bounded() -> None:
    objects = [to_stix_dict(TLP_RED), to_stix_dict(AUTHOR)]
    for row in rows(25):
        objects.extend(to_stix_dict(obj) for obj in row.to_stix())
    parts = split_bundle(objects, 5_000)
    again = split_bundle(objects, 5_000)
    assert len(parts) == len(again) > 1
    strip = [json.loads(p)["objects"] for p in parts]
    assert strip == [json.loads(p)["objects"] for p in again]
    known = {o["id"] for o in objects}
    for part in parts:
        assert len(part.encode()) <= 5_000
        bundle = json.loads(part)
        message = PushedMessage(envelope={}, bundle=bundle)
        assert missing_references(message, known) == set()
    assert {o["id"] for objs in strip for o in objs} == known


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"send_mode": "bulk"}, "send_mode must be 'split' or 'bundle'"),
        ({"max_batch_bytes": 10_000}, "applies to send_mode='bundle' only"),
        ({"send_mode": "bundle", "max_batch_bytes": 100}, "between 1024 and"),
        ({"send_mode": "bundle", "max_batch_bytes": 2**40}, "between 1024 and"),
        ({"send_mode": "bundle", "max_batch_bytes": "16MB"}, "must be an int"),
        ({"send_mode": "bundle", "max_batch_bytes": True}, "must be an int"),
        ({"send_mode": "bundle", "no_split": False}, "no_split=True"),
        ({"send_mod": "bundle"}, "unknown option"),
        ({"api_timeout": 0}, "api_timeout must be"),
        ({"api_timeout": "30"}, "api_timeout must be"),
    ],
)
def test_send_mode_options_are_validated(options: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        OpenCTIWorkManager(object(), **options)


@st.composite
def _object_graphs(draw: st.DrawFn) -> list[dict[str, Any]]:
    """Objects with random sizes referencing random earlier or later objects."""
    count = draw(st.integers(min_value=1, max_value=30))
    ids = [f"indicator--00000000-0000-4000-8000-{n:012d}" for n in range(count)]
    objects = []
    for n, obj_id in enumerate(ids):
        refs = draw(st.lists(st.sampled_from(ids), max_size=3, unique=True))
        obj: dict[str, Any] = {
            "type": "indicator",
            "id": obj_id,
            "name": "é" * draw(st.integers(min_value=0, max_value=400)),  # multi-byte UTF-8
            "object_refs": [r for r in refs if r != obj_id],
        }
        if n and draw(st.booleans()):
            obj["created_by_ref"] = ids[draw(st.integers(min_value=0, max_value=n - 1))]
        objects.append(obj)
    return objects


@settings(max_examples=150, deadline=None)
@given(objects=_object_graphs(), limit=st.integers(min_value=1_024, max_value=20_000))
def test_split_bundle_property(objects: list[dict[str, Any]], limit: int) -> None:
    from connector_batching.opencti import BundleTooLargeError

    known = {o["id"] for o in objects}
    try:
        parts = split_bundle(objects, limit)
    except BundleTooLargeError as exc:
        assert f"max_batch_bytes={limit}" in str(exc)
        return
    seen: set[str] = set()
    for part in parts:
        assert len(part.encode("utf-8")) <= limit
        message = PushedMessage(envelope={}, bundle=json.loads(part))
        assert missing_references(message, known) == set()
        order = [o["id"] for o in message.objects]
        assert order == sorted(order)  # the batch's order is kept
        seen.update(order)
    assert seen == known
