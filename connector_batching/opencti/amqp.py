"""The direct publisher: the push queue over one AMQP connection, confirms per batch.

pycti's ``send_stix2_bundle`` opens a connection per call and waits for the
broker's confirm of each message in turn.  :class:`AmqpPublisher` keeps one
connection (re-opened after a failure or a long idle), publishes a batch's
messages persistent and ``mandatory``, and collects the broker's confirms as
they come (at most ``max_unconfirmed`` outstanding).  It knows exactly which
messages the broker accepted: :meth:`AmqpPublisher.publish` returns them, or
raises :class:`PublishIncomplete` naming them.

The one thing it cannot know: when the connection breaks, a message published
but not yet confirmed may or may not have reached the queue.  Those are at
most ``max_unconfirmed`` messages per break (:attr:`PublishIncomplete.in_flight`).
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pika
from pika.adapters.select_connection import SelectConnection

from connector_batching.opencti.bundles import RABBITMQ_DEFAULT_MAX_MESSAGE_BYTES

#: The most messages published and not yet confirmed: the bound of what a broken
#: connection leaves uncertain.
DEFAULT_MAX_UNCONFIRMED = 256
#: Seconds to wait for the broker (connection, confirms) before giving up.
DEFAULT_BROKER_TIMEOUT = 60.0
#: pycti's heartbeat (seconds).  A connection idle this long is closed cleanly (by a
#: timer, or at the next batch) and opened again when needed, so the broker never
#: drops it for missed heartbeats.
HEARTBEAT = 10


class PublishIncomplete(Exception):
    """A batch's publish broke: ``confirmed`` messages (their indexes) are in the queue.

    ``in_flight`` of the others were published and not confirmed when it broke:
    they may have reached the queue too.  Nothing else was.
    """

    def __init__(self, reason: str, confirmed: frozenset[int], in_flight: int) -> None:
        super().__init__(reason)
        self.confirmed = confirmed
        self.in_flight = in_flight


@dataclass(frozen=True)
class BrokerSettings:
    """Where the push queue is: the helper's ``connector_config`` (``MQ_*`` applied)."""

    host: str
    port: int
    vhost: str
    user: str
    password: str = field(repr=False)
    exchange: str
    routing_key: str
    use_ssl: bool = False
    #: ``() -> ssl.SSLContext`` (pycti's ``create_mq_ssl_context``), for ``use_ssl``.
    ssl_context: Callable[[], Any] | None = field(default=None, repr=False, compare=False)

    @classmethod
    def of_helper(cls, helper: Any) -> BrokerSettings:
        """The broker a pycti helper publishes to, with its TLS settings."""
        config = helper.connector_config
        connection: Mapping[str, Any] = config["connection"]
        use_ssl = bool(connection.get("use_ssl"))
        context: Callable[[], Any] | None = None
        if use_ssl:
            from pycti.connector.opencti_connector_helper import create_mq_ssl_context

            helper_config = getattr(helper, "config", {}) or {}

            def context() -> Any:
                return create_mq_ssl_context(helper_config)

        return cls(
            host=str(connection["host"]),
            port=int(connection["port"]),
            vhost=str(connection["vhost"]),
            user=str(connection["user"]),
            password=str(connection["pass"]),
            exchange=str(config["push_exchange"]),
            routing_key=str(config["push_routing"]),
            use_ssl=use_ssl,
            ssl_context=context,
        )

    def parameters(self) -> pika.ConnectionParameters:
        """pika's parameters, as pycti builds them for its own publishes."""
        ssl_options = None
        if self.use_ssl and self.ssl_context is not None:
            ssl_options = pika.SSLOptions(self.ssl_context(), self.host)
        return pika.ConnectionParameters(
            host=self.host,
            port=self.port,
            virtual_host=self.vhost,
            credentials=pika.PlainCredentials(self.user, self.password),
            heartbeat=HEARTBEAT,
            ssl_options=ssl_options,
            connection_attempts=1,
            socket_timeout=DEFAULT_BROKER_TIMEOUT,
        )


_PERSISTENT = pika.BasicProperties(delivery_mode=2, content_encoding="utf-8")


class AmqpPublisher:
    """Publish batches of messages to the push exchange; exactly what was confirmed.

    Thread-safe (one batch at a time).  ``clock`` is the time idleness is read
    from; ``idle_timer=False`` leaves closing an idle connection to the next
    publish or :meth:`close_if_idle` (seams for tests).
    """

    def __init__(
        self,
        settings: BrokerSettings,
        *,
        max_unconfirmed: int = DEFAULT_MAX_UNCONFIRMED,
        max_message_bytes: int = RABBITMQ_DEFAULT_MAX_MESSAGE_BYTES,
        timeout: float = DEFAULT_BROKER_TIMEOUT,
        clock: Callable[[], float] = time.monotonic,
        idle_timer: bool = True,
    ) -> None:
        if max_unconfirmed < 1:
            raise ValueError("max_unconfirmed must be >= 1")
        self.settings = settings
        self.max_unconfirmed = max_unconfirmed
        self.max_message_bytes = max_message_bytes
        self.timeout = timeout
        self._clock = clock
        self._lock = threading.Lock()
        self._connection: SelectConnection | None = None
        self._channel: Any = None
        self._failure: str | None = None
        self._last_used = 0.0
        #: delivery tag -> index in the batch being published
        self._tags: dict[int, int] = {}
        self._next_tag = 1
        self._confirmed: set[int] = set()
        self._refused: set[int] = set()
        self._returned: set[int] = set()
        self._done: Callable[[], bool] | None = None
        self._idle_timer: threading.Timer | None = None
        self._use_idle_timer = idle_timer
        #: connections opened (the first one included)
        self.connections_opened = 0

    # -- the batch -------------------------------------------------------------

    def publish(self, bodies: Sequence[bytes], window: int | None = None) -> frozenset[int]:
        """Publish ``bodies``; return the indexes the broker confirmed (all of them).

        At most ``window`` (default ``max_unconfirmed``) are unconfirmed at a time.

        Raises :class:`PublishIncomplete` when the broker refused or returned a
        message, or the connection broke: its ``confirmed`` are in the queue.
        A body over ``max_message_bytes`` (RabbitMQ's default limit, 16 MiB)
        raises ``ValueError`` before anything is published.
        """
        for index, body in enumerate(bodies):
            if len(body) > self.max_message_bytes:
                raise ValueError(
                    f"message {index + 1} of the batch is {len(body)} bytes, over the broker's "
                    f"limit of {self.max_message_bytes} bytes"
                )
        with self._lock:
            if not bodies:
                return frozenset()
            self._prepare()
            self._tags.clear()
            self._confirmed = set()
            self._refused = set()
            self._returned = set()
            try:
                self._publish_all(bodies, window or self.max_unconfirmed)
                self._run_until(lambda: len(self._tags) == 0, "the broker's confirms")
            except Exception as exc:
                return self._incomplete(exc)
            finally:
                self._last_used = self._clock()
                self._close_when_idle()
            if self._refused or self._returned:
                return self._incomplete(None)
            return frozenset(self._confirmed)

    def _publish_all(self, bodies: Sequence[bytes], window: int) -> None:
        settings = self.settings
        for index, body in enumerate(bodies):
            if len(self._tags) >= window:
                self._run_until(lambda: len(self._tags) < window, "the broker's confirms")
            self._channel.basic_publish(
                settings.exchange, settings.routing_key, body, _PERSISTENT, mandatory=True
            )
            self._tags[self._next_tag] = index
            self._next_tag += 1

    def _incomplete(self, exc: Exception | None) -> frozenset[int]:
        if exc is not None and self._failure is None and self._connection is not None:
            # the connection still works: what was published before the error is
            # confirmed (or refused) by the broker, not left in doubt
            with contextlib.suppress(Exception):
                self._run_until(lambda: len(self._tags) == 0, "the broker's confirms")
        in_flight = len(self._tags)
        confirmed = frozenset(self._confirmed - self._returned)
        if exc is not None or self._failure is not None:
            reason = self._failure or f"{type(exc).__name__}: {exc}"
            self.close_connection()
        elif self._returned:
            reason = f"the broker could not route {len(self._returned)} message(s)"
        else:
            reason = f"the broker refused {len(self._refused)} message(s) (nack)"
        raise PublishIncomplete(
            f"{reason}; {len(confirmed)} confirmed, {in_flight} unconfirmed in flight",
            confirmed,
            in_flight,
        )

    # -- the connection ----------------------------------------------------------

    def _prepare(self) -> None:
        """An open channel in confirm mode: the one kept, or a new connection."""
        if self._connection is not None and (
            self._failure is not None
            or not self._connection.is_open
            or self._clock() - self._last_used > HEARTBEAT
        ):
            self.close_connection()
        if self._connection is None:
            self._open()

    def _open(self) -> None:
        self._failure = None
        self._channel = None
        self._next_tag = 1
        ready: list[bool] = []

        def on_open(connection: Any) -> None:
            connection.channel(on_open_callback=on_channel)

        def on_channel(channel: Any) -> None:
            channel.add_on_close_callback(self._on_channel_closed)
            channel.add_on_return_callback(self._on_return)
            self._channel = channel
            channel.confirm_delivery(self._on_confirm, callback=on_confirm_mode)

        def on_confirm_mode(_frame: Any) -> None:
            ready.append(True)
            self._wake()

        def on_open_error(_connection: Any, error: BaseException | str) -> None:
            detail = error if isinstance(error, str) else f"{type(error).__name__}: {error!r}"
            self._fail(f"cannot connect to the broker: {detail}")

        self._connection = SelectConnection(
            self.settings.parameters(),
            on_open_callback=on_open,
            on_open_error_callback=on_open_error,
            on_close_callback=self._on_connection_closed,
        )
        self.connections_opened += 1
        try:
            self._run_until(lambda: bool(ready), "the broker connection")
        except Exception:
            self.close_connection()
            raise

    def _close_when_idle(self) -> None:
        if not self._use_idle_timer:
            return
        if self._idle_timer is not None:
            self._idle_timer.cancel()
        timer = threading.Timer(HEARTBEAT, self.close_if_idle)
        timer.daemon = True
        timer.start()
        self._idle_timer = timer

    def close_if_idle(self) -> bool:
        """Close the connection if no batch used it for :data:`HEARTBEAT` seconds."""
        with self._lock:
            if self._connection is None or self._clock() - self._last_used < HEARTBEAT:
                return False
            self.close_connection()
            return True

    def close_connection(self) -> None:
        """Close the connection (cleanly when it is still open); the next publish opens one."""
        connection, self._connection, self._channel = self._connection, None, None
        if connection is None:
            return
        if not (connection.is_closed or connection.is_closing):
            with contextlib.suppress(Exception):
                connection.close()
        if not connection.is_closed:
            self._failure = None
            self._connection = connection
            with contextlib.suppress(Exception):
                self._run_until(lambda: connection.is_closed, "the connection to close", 5.0)
            self._connection = None
        with contextlib.suppress(Exception):
            connection.ioloop.close()

    def close(self) -> None:
        """Close the connection and stop the idle timer (a later publish opens one)."""
        with self._lock:
            if self._idle_timer is not None:
                self._idle_timer.cancel()
                self._idle_timer = None
            self.close_connection()

    # -- the event loop ------------------------------------------------------------

    def _run_until(self, done: Callable[[], bool], what: str, timeout: float | None = None) -> None:
        """Run pika's loop until ``done()``; raise when the connection failed or timed out."""
        connection = self._connection
        if connection is None:
            raise ConnectionError("no broker connection")
        if self._failure is not None:
            raise ConnectionError(self._failure)
        if done():
            return
        ioloop = connection.ioloop
        timer = ioloop.call_later(
            self.timeout if timeout is None else timeout,
            lambda: self._fail(f"timed out waiting for {what}"),
        )
        self._done = done
        try:
            ioloop.start()
        finally:
            self._done = None
            ioloop.remove_timeout(timer)
        if self._failure is not None:
            raise ConnectionError(self._failure)
        if not done():
            raise ConnectionError(f"the broker loop stopped before {what}")

    def _wake(self) -> None:
        if self._done is not None and self._done() and self._connection is not None:
            self._connection.ioloop.stop()

    def _fail(self, reason: str) -> None:
        if self._failure is None:
            self._failure = reason
        if self._connection is not None:
            self._connection.ioloop.stop()

    def _on_confirm(self, frame: Any) -> None:
        method = frame.method
        tag = int(method.delivery_tag)
        tags = [t for t in self._tags if t <= tag] if method.multiple else [tag]
        accepted = isinstance(method, pika.spec.Basic.Ack)
        for confirmed_tag in tags:
            index = self._tags.pop(confirmed_tag, None)
            if index is not None:
                (self._confirmed if accepted else self._refused).add(index)
        self._wake()

    def _on_return(self, _channel: Any, _method: Any, _properties: Any, body: bytes) -> None:
        # an unroutable message: confirmed (acked) afterwards, but not in any queue
        for tag, index in self._tags.items():
            del tag
            self._returned.add(index)
            break
        del body

    def _on_channel_closed(self, _channel: Any, reason: BaseException) -> None:
        self._fail(f"the broker closed the channel: {reason}")

    def _on_connection_closed(self, _connection: Any, reason: BaseException) -> None:
        self._fail(f"the broker connection closed: {reason}")
