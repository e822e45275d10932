"""The RabbitMQ side of the stub platform (pika): the push queue, and reading it back.

The platform declares a connector's push exchange, queue and binding when the
connector registers; :func:`declare_push_queue` does the same.  The other
functions read the queue as the OpenCTI worker does: JSON envelope, base64
``content`` holding a STIX bundle.
"""

from __future__ import annotations

import base64
import contextlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pika

if TYPE_CHECKING:
    from connector_batching.testing.stub_platform import StubOpenCTI

#: The platform's exchange for connectors' push queues (shared, durable, direct).
PUSH_EXCHANGE = "amqp.worker.exchange"
#: The platform's exchange for connectors' listen queues.
LISTEN_EXCHANGE = "amqp.connector.exchange"


@dataclass
class Broker:
    """Where the stub tells the connector to push (may differ from the real broker)."""

    host: str
    port: int
    vhost: str
    user: str
    password: str


def broker_from_url(amqp_url: str) -> Broker:
    """The connection settings in an ``amqp://`` URL."""
    params = pika.URLParameters(amqp_url)
    creds = params.credentials
    return Broker(
        host=params.host,
        port=params.port,
        vhost=params.virtual_host,
        user=getattr(creds, "username", "guest"),
        password=getattr(creds, "password", "guest"),
    )


def _on_channel(amqp_url: str, action: Callable[[Any], Any]) -> Any:
    connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
    try:
        return action(connection.channel())
    finally:
        connection.close()


def declare_push_queue(amqp_url: str, queue: str, routing_key: str) -> None:
    """Declare the push exchange, ``queue`` and their binding, as the platform does."""

    def declare(channel: Any) -> None:
        channel.exchange_declare(PUSH_EXCHANGE, exchange_type="direct", durable=True)
        channel.queue_declare(queue, durable=True)
        channel.queue_bind(queue, PUSH_EXCHANGE, routing_key=routing_key)

    _on_channel(amqp_url, declare)


def delete_push_queue(amqp_url: str, queue: str) -> None:
    """Delete ``queue`` (the shared exchange stays); a broker error is ignored."""
    with contextlib.suppress(pika.exceptions.AMQPError):
        _on_channel(amqp_url, lambda channel: channel.queue_delete(queue))


@dataclass
class PushedMessage:
    """One message of the push queue, decoded like the OpenCTI worker does."""

    envelope: dict[str, Any]
    bundle: dict[str, Any]

    @property
    def work_id(self) -> str | None:
        work_id = self.envelope.get("work_id")
        return None if work_id is None else str(work_id)

    @property
    def objects(self) -> list[dict[str, Any]]:
        return list(self.bundle.get("objects", []))


def decode_message(body: bytes) -> PushedMessage:
    """JSON envelope, base64 ``content`` holding a STIX bundle."""
    envelope = json.loads(body)
    content = base64.b64decode(envelope["content"]).decode("utf-8")
    return PushedMessage(envelope=envelope, bundle=json.loads(content))


def drain_queue(amqp_url: str, queue: str) -> list[PushedMessage]:
    """Consume every message now in ``queue`` (acknowledged) and decode it."""
    connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
    try:
        channel = connection.channel()
        count = channel.queue_declare(queue, passive=True).method.message_count
        messages: list[PushedMessage] = []
        if count == 0:
            return messages
        channel.basic_qos(prefetch_count=500)
        for method, _properties, body in channel.consume(queue, inactivity_timeout=30):
            if method is None:
                raise AssertionError(
                    f"queue {queue} announced {count} messages, only {len(messages)} arrived"
                )
            messages.append(decode_message(body))
            channel.basic_ack(method.delivery_tag)
            if len(messages) == count:
                break
        channel.cancel()
        return messages
    finally:
        connection.close()


def queue_depth(amqp_url: str, queue: str) -> int:
    """Messages ready in ``queue``."""
    return int(
        _on_channel(
            amqp_url,
            lambda channel: channel.queue_declare(queue, passive=True).method.message_count,
        )
    )


def push_bundle(amqp_url: str, routing_key: str, bundle: str, envelope: dict[str, Any]) -> None:
    """Queue ``bundle`` as ONE message, as the platform's ``stixBundlePush`` does.

    The platform's envelope: ``type`` "bundle", ``applicant_id``, ``content``
    (base64), ``work_id``, ``update`` true — no ``no_split``, so the worker splits
    a bundle of several objects (and counts their expectations) itself.
    """
    content = base64.b64encode(bundle.encode("utf-8")).decode("ascii")
    body = json.dumps({"type": "bundle", "content": content, "update": True, **envelope})

    def publish(channel: Any) -> None:
        channel.confirm_delivery()
        channel.basic_publish(
            PUSH_EXCHANGE,
            routing_key,
            body.encode("utf-8"),
            pika.BasicProperties(delivery_mode=2, content_encoding="utf-8"),
            mandatory=True,
        )

    _on_channel(amqp_url, publish)


def stix_bundle_push(stub: StubOpenCTI, variables: dict[str, Any]) -> dict[str, Any]:
    """The ``stixBundlePush`` resolver, for a ``work_id``: one message, no expectation."""
    envelope = {"applicant_id": stub.user_id, "work_id": variables.get("work_id")}
    push_bundle(stub.amqp_url, stub.push_routing, variables["bundle"], envelope)
    return {"stixBundlePush": True}
