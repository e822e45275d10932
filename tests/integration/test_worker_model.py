"""The worker model against the real broker: split, import whole, report, drop.

Messages are published to the stub's push exchange as pycti publishes them
(JSON envelope, base64 STIX bundle, persistent); the model consumes them in its
own thread and reports to the stub in process.
"""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Iterator
from typing import Any

import pika
import pytest

from connector_batching.stix import to_stix_dict
from connector_batching.testing.stub_platform import PUSH_EXCHANGE, StubOpenCTI, queue_depth
from connector_batching.testing.worker_model import WorkerModel
from tests.integration.feed import rows

pytestmark = pytest.mark.broker

TO_PROCESSED = (
    "mutation workToProcessed($id: ID!, $message: String, $inError: Boolean) "
    "{ workEdit(id: $id) { toProcessed (message: $message, inError: $inError) } }"
)


def objects(count: int) -> list[dict[str, Any]]:
    return [
        {"type": "url", "id": f"url--{uuid.uuid4()}", "value": f"http://{n}.example.com"}
        for n in range(count)
    ]


def envelope(
    bundle_objects: list[dict[str, Any]], work_id: str | None, *, no_split: bool = False
) -> bytes:
    bundle = {"type": "bundle", "id": f"bundle--{uuid.uuid4()}", "objects": bundle_objects}
    return json.dumps(
        {
            "bundle_type": "bundle",
            "applicant_id": None,
            "action_sequence": 0,
            "entities_types": [],
            "content": base64.b64encode(json.dumps(bundle).encode()).decode(),
            "update": False,
            "draft_id": None,
            "no_split": no_split,
            "work_id": work_id,
        }
    ).encode()


def publish(stub: StubOpenCTI, *bodies: bytes) -> None:
    """Publish persistent and confirmed, as pycti does."""
    connection = pika.BlockingConnection(pika.URLParameters(stub.amqp_url))
    try:
        channel = connection.channel()
        channel.confirm_delivery()
        for body in bodies:
            channel.basic_publish(
                PUSH_EXCHANGE,
                stub.push_routing,
                body,
                pika.BasicProperties(delivery_mode=2, content_encoding="utf-8"),
                mandatory=True,
            )
    finally:
        connection.close()


@pytest.fixture
def worker(stub: StubOpenCTI) -> Iterator[WorkerModel]:
    with WorkerModel(stub) as model:
        yield model


def test_a_split_message_and_a_whole_one_are_reported_per_object(
    stub: StubOpenCTI, worker: WorkerModel
) -> None:
    stub.completion_rules = "current"
    work = stub.add_work("Feed import", is_multipart=True)
    split, whole = objects(3), objects(2)
    stub.add_expectations(work.id, 2)  # the connector's part: one per message it sent
    publish(stub, envelope(split, work.id), envelope(whole, work.id, no_split=True))
    worker.wait_idle()

    assert (worker.splits, worker.imported, worker.reports, worker.dropped) == (1, 4, 5, 0)
    # the whole message and the split's children, in whatever order the queue had them
    # (the model may requeue the children before the second publish lands)
    imported = sorted(sorted(o["id"] for o in m.objects) for m in worker.imported_messages)
    assert imported == sorted([sorted(o["id"] for o in whole)] + [[o["id"]] for o in split])
    assert all(m.work_id == work.id for m in worker.imported_messages)
    assert (work.expectations, work.reported_expectations) == (5, 5)
    assert work.events == [("add", 2), ("add", 3)] + [("report", 1)] * 5
    assert not work.closed  # multipart: waits for its connector
    stub.handle(TO_PROCESSED, {"id": work.id, "message": "done", "inError": False})
    assert work.closed and work.verdict("current").completed_at == 7
    assert queue_depth(stub.amqp_url, stub.push_queue) == 0


def test_bad_messages_are_dropped_and_unknown_works_counted(
    stub: StubOpenCTI, worker: WorkerModel
) -> None:
    bad_json = b"{not json"
    bad_base64 = json.dumps({"content": "!!!", "work_id": None}).encode()
    no_objects = envelope([], None)
    not_a_bundle = json.dumps({"type": "event", "content": ""}).encode()
    publish(
        stub,
        bad_json,
        bad_base64,
        no_objects,
        not_a_bundle,
        envelope(objects(1), "work_gone"),
        envelope(objects(2), "work_gone"),
        envelope(objects(1), None),
    )
    worker.wait_idle()
    assert worker.dropped_bodies == [bad_json, bad_base64, no_objects, not_a_bundle]
    assert worker.unknown_work_reports == 1
    assert worker.unknown_work_splits == 1  # acked, not republished
    assert (worker.imported, worker.reports, worker.splits) == (2, 0, 0)
    assert stub.works_list() == []
    assert queue_depth(stub.amqp_url, stub.push_queue) == 0


def test_a_consumer_error_is_raised_by_wait_idle_and_stop(
    stub: StubOpenCTI, monkeypatch: pytest.MonkeyPatch
) -> None:
    work = stub.add_work("Feed import")

    def broken(_work_id: str) -> bool:
        raise RuntimeError("stub unreachable")

    monkeypatch.setattr(stub, "report_expectation", broken)
    model = WorkerModel(stub).start()
    publish(stub, envelope(objects(1), work.id))
    with pytest.raises(RuntimeError, match="stub unreachable"):
        model.wait_idle()
    with pytest.raises(RuntimeError, match="stub unreachable"):
        model.stop()


def test_a_real_helper_split_send_completes_its_work(
    stub: StubOpenCTI, worker: WorkerModel, make_helper: Any
) -> None:
    """pycti splits, adds its expectations over GraphQL; the model imports and reports."""
    stub.completion_rules = "current"
    helper = make_helper(log_level="error")
    work_id = helper.api.work.initiate_work(helper.connect_id, "Feed import", is_multipart=True)
    stix = [to_stix_dict(obj) for row in rows(3) for obj in row.to_stix()]
    bundle = {"type": "bundle", "id": f"bundle--{uuid.uuid4()}", "objects": stix}
    sent = helper.send_stix2_bundle(json.dumps(bundle), work_id=work_id)
    worker.wait_idle()

    work = stub.works[work_id]
    assert work.is_multipart
    assert work.events[0] == ("add", len(sent))
    assert work.reported_expectations == work.expectations == worker.reports
    assert not work.closed
    helper.api.work.to_processed(work_id, "done")
    assert work.closed and not work.verdict("current").early
