"""A stub OpenCTI platform: test a connector end to end with a real pycti helper and RabbitMQ.

:class:`StubOpenCTI` is an HTTP server on a free loopback port that answers the
GraphQL operations a real ``pycti.OpenCTIConnectorHelper`` sends
(``healthCheck``, ``RegisterConnector``, ``PingConnector``, ``GetConnector``,
``workAdd``, ``addExpectations``, ``workToProcessed``, …), records every call,
the works and the connector state, and — like the platform — declares the
connector's push exchange and queue in RabbitMQ, so the helper's bundles land
in a real queue that :func:`drain_queue` reads back as the worker would::

    stub = StubOpenCTI("amqp://guest:guest@127.0.0.1:5672/%2F").start()
    try:
        helper = OpenCTIConnectorHelper(stub.helper_config())
        ...  # run the connector with this helper
        messages = drain_queue(stub.amqp_url, stub.push_queue)
        assert all(work.closed for work in stub.works_list())
    finally:
        stub.stop()

Faults can be injected (:meth:`StubOpenCTI.fail`): GraphQL errors, HTTP 5xx, a
late answer (the platform does the work and answers only once the client has
timed out and closed the connection) or an error page echoing the request
headers, on a named operation N times; latency per call; the push-queue size
``GetConnector`` reports (back-pressure).  Works can be listed (``works`` query,
filtered by connector and status, paginated) and the state reset as from the UI.

Each work logs its events (``addExpectations``, reports, ``workToProcessed``);
``completion_rules`` (``"current"`` / ``"older"``, see ``work_rules``) makes its
live status follow the platform's rules, and ``worker_model.WorkerModel``
consumes the push queue and reports as the OpenCTI worker does.

An operation the stub does not know is answered with an ``UNSUPPORTED`` GraphQL
error and recorded; :meth:`StubOpenCTI.add_operation` adds one (or replaces a
built-in).  This module imports pika; ``connector_batching.testing`` does not.
"""

from __future__ import annotations

import json
import re
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from http.server import ThreadingHTTPServer
from typing import Any

from connector_batching.testing.stub_platform_broker import (
    LISTEN_EXCHANGE,
    PUSH_EXCHANGE,
    Broker,
    PushedMessage,
    broker_from_url,
    declare_push_queue,
    decode_message,
    delete_push_queue,
    drain_queue,
    queue_depth,
)
from connector_batching.testing.stub_platform_http import GraphQLHandler, graphql_error
from connector_batching.testing.stub_platform_ops import (
    BUILTIN_OPERATIONS,
    OperationError,
    Resolver,
    StubWorks,
    Work,
)

__all__ = [
    "FAULT_KINDS",
    "LISTEN_EXCHANGE",
    "PUSH_EXCHANGE",
    "Broker",
    "Call",
    "OperationError",
    "PushedMessage",
    "Resolver",
    "StubOpenCTI",
    "Work",
    "broker_from_url",
    "decode_message",
    "drain_queue",
    "queue_depth",
]

#: What :meth:`StubOpenCTI.fail` can inject.
FAULT_KINDS = ("graphql", "http_500", "timeout", "echo")
_OPERATION = re.compile(r"^\s*(?:query|mutation)\s+(\w+)")


@dataclass
class Call:
    """One GraphQL request received."""

    operation: str
    variables: dict[str, Any]
    outcome: str  # "ok", "late", "graphql_error", "http_500", "echo", "unknown", "not_found"


class StubOpenCTI(StubWorks):
    """The stub platform: an HTTP server on a free loopback port plus broker setup."""

    def __init__(self, amqp_url: str, *, connector_id: str | None = None) -> None:
        self.amqp_url = amqp_url
        self.connector_id = connector_id or str(uuid.uuid4())
        self.token = str(uuid.uuid4())
        self.user_id = str(uuid.uuid4())
        #: The broker the stub hands to the helper at registration (point it at a proxy
        #: before building helpers to put one between them and RabbitMQ).
        self.advertised_broker = broker_from_url(amqp_url)
        self.push_queue = f"push_{self.connector_id}"
        self.push_routing = f"push_routing_{self.connector_id}"
        self.calls: list[Call] = []
        self.works: dict[str, Work] = {}
        self.state: str | None = None  # the connector state, a JSON string
        self.state_history: list[str | None] = []
        self.latency = 0.0
        self.operation_latency: dict[str, float] = {}
        #: The longest a "timeout" fault holds its answer back waiting for the client
        #: to give up (a safety net: the client's own timeout ends the wait).
        self.fault_delay = 60.0
        self._completion_rules: str | None = None  # see completion_rules
        #: (messages_number, messages_size) for ``GetConnector``, in turn; see report_queue.
        self.queue_reports: list[tuple[int, int]] = []
        #: The next ping answers the state reset from the UI (see reset_state).
        self.state_reset_pending = False
        self.resolvers: dict[str, Resolver] = dict(BUILTIN_OPERATIONS)
        self._faults: dict[str, list[str]] = {}
        self._lock = threading.Lock()
        self._queue_declared = False
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle -----------------------------------------------------------

    @property
    def url(self) -> str:
        """The platform URL to give the helper (``opencti.url``)."""
        assert self._server is not None, "stub not started"
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self, *, declare_queue: bool = True) -> StubOpenCTI:
        """Serve on a free loopback port; declare the push exchange and queue.

        ``declare_queue=False`` touches no broker (for tests of the API alone).
        """
        if declare_queue:
            self.declare_push_queue()
        stub = self

        class Handler(GraphQLHandler):
            owner = stub

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="stub-opencti", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and delete the push queue (when the stub declared it)."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._queue_declared:
            self.delete_push_queue()

    def __enter__(self) -> StubOpenCTI:
        return self.start() if self._server is None else self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def declare_push_queue(self) -> None:
        """Declare exchange, queue and binding as the platform does at registration."""
        declare_push_queue(self.amqp_url, self.push_queue, self.push_routing)
        self._queue_declared = True

    def delete_push_queue(self) -> None:
        """Delete this stub's push queue (the shared exchange stays)."""
        delete_push_queue(self.amqp_url, self.push_queue)
        self._queue_declared = False

    def helper_config(self, **connector: Any) -> dict[str, Any]:
        """A configuration for ``OpenCTIConnectorHelper`` pointing at this stub.

        ``connector`` overrides or adds ``connector`` settings (``log_level``,
        ``queue_protocol``, …).  Start the stub first.
        """
        return {
            "opencti": {"url": self.url, "token": self.token, "json_logging": False},
            "connector": {
                "id": self.connector_id,
                "type": "EXTERNAL_IMPORT",
                "name": f"batching-test-{self.connector_id[:8]}",
                "scope": "indicator,url",
                "log_level": "info",
                **connector,
            },
        }

    def connector_config(self) -> dict[str, Any]:
        """The connector's queues and broker, as registration returns them."""
        broker = self.advertised_broker
        return {
            "connection": {
                "host": broker.host,
                "vhost": broker.vhost,
                "use_ssl": False,
                "port": broker.port,
                "user": broker.user,
                "pass": broker.password,
            },
            "listen": f"listen_{self.connector_id}",
            "listen_routing": f"listen_routing_{self.connector_id}",
            "listen_exchange": LISTEN_EXCHANGE,
            "push": self.push_queue,
            "push_routing": self.push_routing,
            "push_exchange": PUSH_EXCHANGE,
        }

    # -- operations, fault injection and control -------------------------------------

    def add_operation(self, name: str, resolver: Resolver) -> None:
        """Answer the GraphQL operation ``name`` with ``resolver(stub, variables) -> data``.

        ``name`` is the operation name in the query (``query IndicatorRead(...)``
        → ``"IndicatorRead"``).  The resolver runs under the stub's lock; it may
        raise :class:`OperationError` (a GraphQL error with its code) or
        ``KeyError`` (``WORK_NOT_ALIVE``).  Faults, latency and recording apply
        as to the built-in operations; a built-in of the same name is replaced.
        """
        with self._lock:
            self.resolvers[name] = resolver

    def fail(self, operation: str, times: int = 1, kind: str = "graphql") -> None:
        """The next ``times`` calls of ``operation`` fail.

        ``graphql``: a GraphQL error; ``http_500``: an HTTP 500; ``timeout``: the
        platform does the work but answers only once the client has given up and
        closed the connection (at most ``fault_delay`` seconds; set a client
        request timeout); ``echo``: an HTTP 502 whose body
        echoes the request headers, token included (as some proxies' error pages do).
        """
        if kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault kind {kind!r}")
        with self._lock:
            self._faults.setdefault(operation, []).extend([kind] * times)

    def report_queue(self, reports: Iterable[tuple[int, int]]) -> None:
        """``GetConnector`` reports these (messages_number, messages_size bytes) in turn.

        The last one keeps being reported.
        """
        with self._lock:
            self.queue_reports = list(reports)

    def reset_state(self, state: dict[str, Any] | None) -> None:
        """Reset the state as from the UI: stored at once; the next ping answers it
        instead of storing the state it carries (later pings store again)."""
        with self._lock:
            self.state = None if state is None else json.dumps(state)
            self.state_reset_pending = True

    def wait_for(self, condition: Callable[[], object], what: str, timeout: float = 60.0) -> None:
        """Wait until ``condition()`` holds; fail naming ``what`` after ``timeout`` s
        (a safety net against a hang: the verdict is the condition, not the time)."""
        deadline = time.monotonic() + timeout
        while not condition():
            if time.monotonic() > deadline:
                raise AssertionError(f"stub OpenCTI: timed out waiting for {what}")
            time.sleep(0.005)

    # -- views --------------------------------------------------------------

    def operations(self) -> list[str]:
        """The names of the operations received, in order."""
        with self._lock:
            return [call.operation for call in self.calls]

    def calls_of(self, operation: str) -> list[Call]:
        with self._lock:
            return [call for call in self.calls if call.operation == operation]

    def state_dict(self) -> dict[str, Any]:
        """The connector state the platform holds, as a dict (``{}`` when unset)."""
        with self._lock:
            state = self.state
        if not state:
            return {}
        value = json.loads(state)
        return value if isinstance(value, dict) else {}

    def works_list(self) -> list[Work]:
        with self._lock:
            return list(self.works.values())

    # -- request handling --------------------------------------------------------

    def handle(
        self,
        query: str,
        variables: dict[str, Any],
        headers: dict[str, str] | None = None,
        client_gone: Callable[[float], bool] | None = None,
    ) -> tuple[int, dict[str, Any] | str]:
        """Answer one GraphQL request.  ``client_gone(limit)`` blocks until the client
        closed its connection or ``limit`` seconds passed (used by "timeout" faults)."""
        match = _OPERATION.match(query)
        operation = match.group(1) if match else "anonymous"
        delay = self.latency + self.operation_latency.get(operation, 0.0)
        with self._lock:
            faults = self._faults.get(operation)
            fault = faults.pop(0) if faults else None
            if fault == "echo":
                self.calls.append(Call(operation, variables, "echo"))
                echoed = "; ".join(f"{k}: {v}" for k, v in (headers or {}).items())
                return 502, f"Bad gateway for {operation}. Request headers: {echoed}"
        if delay > 0:
            time.sleep(delay)
        status, body = self._answer(operation, variables, fault)
        if fault == "timeout":  # the work is done; the answer comes once the client left
            if client_gone is None:
                time.sleep(self.fault_delay)
            else:
                client_gone(self.fault_delay)
        return status, body

    def _answer(
        self, operation: str, variables: dict[str, Any], fault: str | None
    ) -> tuple[int, dict[str, Any] | str]:
        with self._lock:
            if fault == "http_500":
                self.calls.append(Call(operation, variables, "http_500"))
                return 500, "Internal Server Error (injected by stub)"
            if fault == "graphql":
                self.calls.append(Call(operation, variables, "graphql_error"))
                return 200, graphql_error(f"Injected failure of {operation}", "INJECTED_FAILURE")
            resolver = self.resolvers.get(operation)
            if resolver is None:
                self.calls.append(Call(operation, variables, "unknown"))
                return 200, graphql_error(f"Stub does not implement {operation}", "UNSUPPORTED")
            try:
                data = resolver(self, variables)
            except KeyError as exc:
                self.calls.append(Call(operation, variables, "not_found"))
                return 200, graphql_error(f"Work not found: {exc}", "WORK_NOT_ALIVE")
            except OperationError as exc:
                self.calls.append(Call(operation, variables, "graphql_error"))
                return 200, graphql_error(str(exc), exc.code)
            self.calls.append(Call(operation, variables, "late" if fault == "timeout" else "ok"))
            return 200, {"data": data}
