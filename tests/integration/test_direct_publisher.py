"""The direct publisher against the real broker: confirms, one connection, pycti's envelope."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any, ClassVar

import pika
import pytest

from connector_batching.opencti import OpenCTIWorkManager
from connector_batching.opencti.amqp import (
    HEARTBEAT,
    AmqpPublisher,
    BrokerSettings,
    PublishIncomplete,
)
from connector_batching.opencti.messages import envelope
from connector_batching.testing.stub_platform import StubOpenCTI, drain_queue
from tests.integration.feed import AUTHOR, TLP_RED, rows
from tests.integration.tcp_proxy import TcpProxy

pytestmark = pytest.mark.broker


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _settings(stub: StubOpenCTI, **changes: Any) -> BrokerSettings:
    broker = stub.advertised_broker
    values: dict[str, Any] = {
        "host": broker.host,
        "port": broker.port,
        "vhost": broker.vhost,
        "user": broker.user,
        "password": broker.password,
        "exchange": stub.connector_config()["push_exchange"],
        "routing_key": stub.push_routing,
    }
    values.update(changes)
    return BrokerSettings(**values)


@pytest.fixture
def publisher(stub: StubOpenCTI) -> Iterator[AmqpPublisher]:
    clock = Clock()
    amqp = AmqpPublisher(_settings(stub), clock=clock, idle_timer=False)
    try:
        yield amqp
    finally:
        amqp.close()


def _bodies(n: int, tag: str = "m") -> list[bytes]:
    return [json.dumps({"n": i, "tag": tag}).encode() for i in range(n)]


def test_a_batch_is_confirmed_whole_in_order_over_one_kept_connection(
    stub: StubOpenCTI, publisher: AmqpPublisher
) -> None:
    assert publisher.publish(_bodies(300)) == frozenset(range(300))
    assert publisher.publish(_bodies(5, "second")) == frozenset(range(5))
    assert publisher.connections_opened == 1
    received = _raw(stub)
    assert [json.loads(body)["n"] for body, _mode in received] == [*range(300), *range(5)]
    assert {mode for _body, mode in received} == {2}  # persistent


def _raw(stub: StubOpenCTI) -> list[tuple[bytes, int | None]]:
    connection = pika.BlockingConnection(pika.URLParameters(stub.amqp_url))
    out: list[tuple[bytes, int | None]] = []
    try:
        channel = connection.channel()
        while True:
            method, properties, body = channel.basic_get(stub.push_queue, auto_ack=True)
            if method is None:
                return out
            out.append((body, properties.delivery_mode))
    finally:
        connection.close()


def test_an_unroutable_batch_is_not_reported_delivered(stub: StubOpenCTI) -> None:
    amqp = AmqpPublisher(_settings(stub, routing_key="no-queue-is-bound-here"))
    try:
        with pytest.raises(PublishIncomplete, match="could not route") as raised:
            amqp.publish(_bodies(3))
        assert raised.value.confirmed == frozenset()
    finally:
        amqp.close()


def test_a_message_over_the_broker_limit_is_refused_before_anything_is_sent(
    stub: StubOpenCTI, publisher: AmqpPublisher
) -> None:
    publisher.max_message_bytes = 1000
    with pytest.raises(ValueError, match="message 2 of the batch is"):
        publisher.publish([b"x", b"y" * 1001])
    assert _raw(stub) == []


def test_a_connection_idle_past_the_heartbeat_is_opened_again(
    stub: StubOpenCTI, publisher: AmqpPublisher
) -> None:
    clock = publisher._clock
    assert isinstance(clock, Clock)
    publisher.publish(_bodies(1))
    clock.now += HEARTBEAT + 1
    publisher.publish(_bodies(1))
    assert publisher.connections_opened == 2
    assert len(_raw(stub)) == 2


def test_an_idle_connection_is_closed_cleanly(stub: StubOpenCTI, publisher: AmqpPublisher) -> None:
    clock = publisher._clock
    assert isinstance(clock, Clock)
    publisher.publish(_bodies(1))
    assert publisher.close_if_idle() is False  # just used
    clock.now += HEARTBEAT
    assert publisher.close_if_idle() is True
    assert publisher.publish(_bodies(1)) == frozenset({0})
    assert publisher.connections_opened == 2


def test_a_cut_connection_leaves_at_most_the_window_in_doubt_and_reconnects(
    stub: StubOpenCTI,
) -> None:
    real = stub.advertised_broker
    proxy = TcpProxy(real.host, real.port).start()
    try:
        amqp = AmqpPublisher(_settings(stub, host=proxy.host, port=proxy.port), max_unconfirmed=8)
        proxy.cut_after(20_000)
        with pytest.raises(PublishIncomplete) as raised:
            amqp.publish([b"x" * 1000 for _ in range(100)])
        cut = raised.value
        assert cut.in_flight <= 8
        arrived = len(_raw(stub))
        # the confirmed arrived; of the others only those in doubt may have
        assert len(cut.confirmed) <= arrived <= len(cut.confirmed) + cut.in_flight
        assert amqp.publish(_bodies(2)) == frozenset({0, 1})  # a new connection
        assert amqp.connections_opened == 2
        amqp.close()
    finally:
        proxy.stop()


def test_broker_settings_are_the_helpers_with_its_tls_context() -> None:
    class Helper:
        config: ClassVar[dict[str, Any]] = {"mq": {"use_ssl_reject_unauthorized": False}}
        connector_config: ClassVar[dict[str, Any]] = {
            "connection": {
                "host": "rabbit.example",
                "port": 5671,
                "vhost": "octi",
                "user": "connector",
                "pass": "s3cret-pass",
                "use_ssl": True,
            },
            "push_exchange": "amqp.worker.exchange",
            "push_routing": "push_routing_x",
        }

    settings = BrokerSettings.of_helper(Helper())
    assert "s3cret-pass" not in repr(settings)
    parameters = settings.parameters()
    assert (parameters.host, parameters.port, parameters.virtual_host) == (
        "rabbit.example",
        5671,
        "octi",
    )
    assert parameters.ssl_options is not None  # pycti's create_mq_ssl_context
    assert parameters.ssl_options.server_hostname == "rabbit.example"
    assert parameters.credentials.password == "s3cret-pass"


def test_messages_are_the_ones_pycti_publishes(stub: StubOpenCTI, make_helper: Any) -> None:
    """pycti's own ``_send_bundle`` and ours, for the same bundle and options."""
    helper = make_helper()
    published: list[bytes] = []

    class Channel:
        def basic_publish(self, **kwargs: Any) -> None:
            published.append(kwargs["body"].encode() if isinstance(kwargs["body"], str) else b"")

    bundle = json.dumps({"type": "bundle", "id": "bundle--1", "objects": [{"id": "x--1"}]})
    options = {"update": True, "entities_types": ["Indicator"], "draft_id": None}
    helper._send_bundle(Channel(), bundle, work_id="work_1", sequence=3, no_split=False, **options)
    ours = envelope(
        bundle,
        sequence=3,
        work_id="work_1",
        applicant_id=helper.applicant_id,
        send_options=options,
    )
    assert json.loads(ours) == json.loads(published[0])


def test_the_manager_publishes_directly_by_default_and_counts_exactly(
    stub: StubOpenCTI, make_helper: Any
) -> None:
    helper = make_helper()
    manager = OpenCTIWorkManager(helper, backpressure=False)
    assert manager.publisher == "direct" and manager.pycti_reasons == []
    for n in range(3):
        work = manager.initiate_work(f"batch {n}", "indicators")
        manager.send_bundle(work, [TLP_RED, AUTHOR, *rows(2, start=2 * n)[0].to_stix()])
        manager.work_to_process(work)
    manager.close()
    messages = drain_queue(stub.amqp_url, stub.push_queue)
    assert len(messages) == 3 * 5
    for work in stub.works_list():
        assert work.is_multipart
        assert work.expectations == 5 + 1  # one per message, the placeholder
        assert sum(1 for m in messages if m.work_id == work.id) == 5
    assert manager._amqp is not None and manager._amqp.connections_opened == 1
