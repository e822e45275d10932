"""A model of the OpenCTI worker over a stub's push queue: split, import, report.

:class:`WorkerModel` consumes the push queue of a
:class:`~connector_batching.testing.stub_platform.StubOpenCTI` in a thread of
its own (its own pika connection), concurrently with the connector, and treats
each message as ``opencti-worker``'s ``PushHandler.handle_message`` does:

* bad JSON or base64, a bundle with no objects, or a message that is not a
  bundle: dropped (nacked without requeue, as the worker does; counted);
* one object, or ``no_split`` true: imported whole; one expectation per object
  is reported to its work (pycti's import reports each object, even a failed one);
* several objects, ``no_split`` false: ``add_expectations(work, n)``, then ``n``
  one-object messages (same envelope) are published back to the push exchange,
  persistent and confirmed, before the original is acknowledged.

Adds and reports go to the stub in process (under its lock) and land in the
work's event log, so the stub's completion rules see them as the platform
would.  Nothing is imported anywhere: ``imported_messages`` is what was delivered::

    with WorkerModel(stub) as worker:
        ...  # run the connector
        worker.wait_idle()
    assert all(work.closed for work in stub.works_list())

This module imports pika.
"""

from __future__ import annotations

import base64
import json
import threading
from typing import Any

import pika

from connector_batching.testing.stub_platform import PUSH_EXCHANGE, PushedMessage, StubOpenCTI

__all__ = ["WorkerModel"]


def _decode(body: bytes) -> PushedMessage | None:
    """The message as the worker reads it; ``None`` when the worker would drop it."""
    try:
        envelope = json.loads(body)
        if envelope.get("type", "bundle") != "bundle":
            return None
        bundle = json.loads(base64.b64decode(envelope["content"]).decode("utf-8"))
        objects = bundle["objects"]
    except Exception:  # anything the worker's decoding would raise: it nacks
        return None
    if not isinstance(objects, list) or not objects:
        return None
    return PushedMessage(envelope=envelope, bundle=bundle)


class WorkerModel:
    """The OpenCTI worker's part, over ``stub``'s push queue.

    Guarantees: each message is acknowledged only once handled (split children
    confirmed first); after :meth:`wait_idle` returns, every message confirmed
    into the queue before the call has been handled, split children included.
    An error in the consumer thread stops it and is re-raised by
    :meth:`wait_idle` and :meth:`stop`.
    """

    def __init__(self, stub: StubOpenCTI, *, poll_interval: float = 0.01) -> None:
        self.stub = stub
        #: How long the consumer waits when the queue is empty before asking again
        #: (speed only: :meth:`wait_idle` wakes it).
        self.poll_interval = poll_interval
        #: The messages imported whole, in order (one-object and ``no_split`` ones).
        self.imported_messages: list[PushedMessage] = []
        #: The bodies of the messages dropped, in order.
        self.dropped_bodies: list[bytes] = []
        #: Messages split (each republished as one-object messages).
        self.splits = 0
        #: Expectations reported (one per object imported) to a known work.
        self.reports = 0
        #: Reports for a work the stub does not know (counted, not reported).
        self.unknown_work_reports = 0
        #: Splits for a work the stub does not know: acked, not republished (as the worker).
        self.unknown_work_splits = 0
        self._condition = threading.Condition()
        self._empty_polls = 0  # times the consumer found the queue empty, all handled
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._thread: threading.Thread | None = None

    @property
    def imported(self) -> int:
        """Messages imported whole."""
        return len(self.imported_messages)

    @property
    def dropped(self) -> int:
        """Messages dropped (bad JSON or base64, no objects, not a bundle)."""
        return len(self.dropped_bodies)

    # -- lifecycle -----------------------------------------------------------

    def start(self, timeout: float = 60.0) -> WorkerModel:
        """Connect and start consuming; a connection error is raised here
        (``timeout``: a safety net against a broker that never answers)."""
        if self._thread is not None:
            raise RuntimeError("worker model already started")
        self._thread = threading.Thread(target=self._run, name="worker-model", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout):
            raise AssertionError(f"worker model: no broker connection after {timeout} s")
        self._raise_error()
        return self

    def stop(self) -> None:
        """Stop consuming (the message in hand is finished first) and re-raise a
        consumer error."""
        self._stopping.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join()
        self._raise_error()

    def __enter__(self) -> WorkerModel:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def wait_idle(self, timeout: float = 60.0) -> None:
        """Block until the queue is empty and no message is in hand.

        Two empty polls that began after this call: the second was sent after
        the first answered, so after every publish confirmed before the call.
        ``timeout`` is a safety net (``AssertionError``), not the verdict.
        """
        if self._thread is None:
            raise RuntimeError("worker model not started")
        with self._condition:
            target = self._empty_polls + 2
            self._wake.set()
            done = self._condition.wait_for(
                lambda: self._error is not None or self._empty_polls >= target or not self._alive(),
                timeout,
            )
        self._raise_error()
        if not self._alive():
            raise RuntimeError("worker model stopped")
        if not done:
            raise AssertionError(
                f"worker model: queue {self.stub.push_queue} not idle after {timeout} s "
                f"({self.imported} imported, {self.splits} split, {self.dropped} dropped)"
            )

    def _alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def _raise_error(self) -> None:
        if self._error is not None:
            raise self._error

    # -- the consumer thread --------------------------------------------------

    def _run(self) -> None:
        connection: Any = None
        try:
            connection = pika.BlockingConnection(pika.URLParameters(self.stub.amqp_url))
            channel = connection.channel()
            channel.confirm_delivery()
            self._ready.set()
            while not self._stopping.is_set():
                method, _properties, body = channel.basic_get(self.stub.push_queue)
                if method is None:
                    with self._condition:
                        self._empty_polls += 1
                        self._condition.notify_all()
                    self._wake.wait(self.poll_interval)
                    self._wake.clear()
                    continue
                self._handle(channel, method.delivery_tag, body)
        except BaseException as exc:  # stored: re-raised by wait_idle and stop
            self._error = exc
        finally:
            self._ready.set()
            if connection is not None and connection.is_open:
                try:
                    connection.close()
                except Exception as exc:  # a broken connection: say it unless already failed
                    self._error = self._error or exc
            with self._condition:
                self._condition.notify_all()

    def _handle(self, channel: Any, tag: int, body: bytes) -> None:
        message = _decode(body)
        if message is None:
            with self._condition:
                self.dropped_bodies.append(body)
            channel.basic_nack(tag, requeue=False)
            return
        work_id = message.work_id
        objects = message.objects
        if len(objects) == 1 or message.envelope.get("no_split", False):
            with self._condition:
                self.imported_messages.append(message)
            if work_id is not None:
                for _ in objects:
                    self._report(work_id)
        else:
            self._split(channel, message, objects)
        channel.basic_ack(tag)

    def _report(self, work_id: str) -> None:
        known = self.stub.report_expectation(work_id)
        with self._condition:
            if known:
                self.reports += 1
            else:
                self.unknown_work_reports += 1

    def _split(self, channel: Any, message: PushedMessage, objects: list[dict[str, Any]]) -> None:
        work_id = message.work_id
        if work_id is not None and not self.stub.add_expectations(work_id, len(objects)):
            with self._condition:
                self.unknown_work_splits += 1
            return
        for obj in objects:
            bundle = {**message.bundle, "objects": [obj]}
            content = base64.b64encode(json.dumps(bundle).encode("utf-8")).decode("ascii")
            channel.basic_publish(
                exchange=PUSH_EXCHANGE,
                routing_key=self.stub.push_routing,
                body=json.dumps({**message.envelope, "content": content}),
                properties=pika.BasicProperties(delivery_mode=2, content_encoding="utf-8"),
                mandatory=True,
            )
        with self._condition:
            self.splits += 1
