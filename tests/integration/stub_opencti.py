"""A stub OpenCTI GraphQL API for integration tests.

It answers the operations a real ``pycti.OpenCTIConnectorHelper`` sends
(``healthCheck``, ``RegisterConnector``, ``PingConnector``, ``GetConnector``,
``workAdd``, ``addExpectations``, ``workToProcessed``, ...), records every call,
the works and the connector state, and — like the platform — declares the
connector's push exchange and queue in RabbitMQ.  Faults can be injected:
GraphQL errors, HTTP 5xx or a late answer (the platform does the work and
answers only once the client has timed out and closed the connection) on a
named operation N times, latency per call, and the
push-queue size reported by ``GetConnector`` (for back-pressure).  Works can be
listed (``works`` query, filtered by connector and status, paginated) and the
connector state reset as from the UI (the next ping answers the reset state
instead of storing the one it carries, as the platform does).
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import json
import re
import select
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pika

PUSH_EXCHANGE = "amqp.worker.exchange"
LISTEN_EXCHANGE = "amqp.connector.exchange"
_OPERATION = re.compile(r"^\s*(?:query|mutation)\s+(\w+)")


@dataclass
class Call:
    """One GraphQL request received."""

    operation: str
    variables: dict[str, Any]
    outcome: str  # "ok", "graphql_error", "http_500", "unknown", "not_found"


@dataclass
class Work:
    """A work as the stub platform tracks it."""

    id: str
    name: str
    connector_id: str
    status: str = "progress"
    timestamp: str = field(default_factory=lambda: _now())
    processed_time: str | None = None
    in_error: bool | None = None
    messages: list[str | None] = field(default_factory=list)
    expectations: int = 0
    reported_expectations: int = 0
    closed_count: int = 0

    @property
    def closed(self) -> bool:
        return self.status == "complete"


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


class StubOpenCTI:
    """The stub platform: an HTTP server on a free loopback port plus broker setup."""

    def __init__(self, amqp_url: str, *, connector_id: str | None = None) -> None:
        self.amqp_url = amqp_url
        self.connector_id = connector_id or str(uuid.uuid4())
        self.token = str(uuid.uuid4())
        self.user_id = str(uuid.uuid4())
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
        #: Complete works as the platform does: only when the messages the workers
        #: imported (``report_imported``) equal the work's expectations.  Off: a work
        #: is complete as soon as its connector marks it processed.
        self.realistic_completion = False
        self._faults: dict[str, list[str]] = {}
        self._queue_reports: list[tuple[int, int]] = []
        self._state_reset = False
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle -----------------------------------------------------------

    @property
    def url(self) -> str:
        assert self._server is not None, "stub not started"
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self, *, declare_queue: bool = True) -> StubOpenCTI:
        """Serve on a free loopback port; declare the push exchange and queue."""
        if declare_queue:
            self.declare_push_queue()
        stub = self

        class Handler(_Handler):
            owner = stub

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="stub-opencti", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and delete the push queue."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        self.delete_push_queue()

    def _channel_do(self, action: Any) -> Any:
        connection = pika.BlockingConnection(pika.URLParameters(self.amqp_url))
        try:
            return action(connection.channel())
        finally:
            connection.close()

    def declare_push_queue(self) -> None:
        """Declare exchange, queue and binding as the platform does at registration."""

        def declare(channel: Any) -> None:
            channel.exchange_declare(PUSH_EXCHANGE, exchange_type="direct", durable=True)
            channel.queue_declare(self.push_queue, durable=True)
            channel.queue_bind(self.push_queue, PUSH_EXCHANGE, routing_key=self.push_routing)

        self._channel_do(declare)

    def delete_push_queue(self) -> None:
        """Delete this stub's push queue (the shared exchange stays)."""
        with contextlib.suppress(pika.exceptions.AMQPError):
            self._channel_do(lambda channel: channel.queue_delete(self.push_queue))

    # -- fault injection and control -----------------------------------------------

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
            self._queue_reports = list(reports)

    def reset_state(self, state: dict[str, Any] | None) -> None:
        """Reset the state as from the UI: stored at once; the next ping answers it
        instead of storing the state it carries (later pings store again)."""
        with self._lock:
            self.state = None if state is None else json.dumps(state)
            self._state_reset = True

    def add_work(self, name: str, *, status: str = "progress", processed: bool = False) -> Work:
        """A work of this connector, as a previous process may have left it."""
        work = Work(id=f"work_{uuid.uuid4()}", name=name, connector_id=self.connector_id)
        work.status = status
        if processed:
            work.processed_time = _now()
        with self._lock:
            self.works[work.id] = work
        return work

    def wait_for(self, condition: Any, what: str, timeout: float = 60.0) -> None:
        """Wait until ``condition()`` holds; fail naming ``what`` after ``timeout`` s
        (a safety net against a hang: the verdict is the condition, not the time)."""
        deadline = time.monotonic() + timeout
        while not condition():
            if time.monotonic() > deadline:
                raise AssertionError(f"stub OpenCTI: timed out waiting for {what}")
            time.sleep(0.005)

    # -- views --------------------------------------------------------------

    def operations(self) -> list[str]:
        with self._lock:
            return [call.operation for call in self.calls]

    def calls_of(self, operation: str) -> list[Call]:
        with self._lock:
            return [call for call in self.calls if call.operation == operation]

    def state_dict(self) -> dict[str, Any]:
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
                return 200, _error(f"Injected failure of {operation}", "INJECTED_FAILURE")
            resolver = getattr(self, f"_op_{operation}", None)
            if resolver is None:
                self.calls.append(Call(operation, variables, "unknown"))
                return 200, _error(f"Stub does not implement {operation}", "UNSUPPORTED")
            try:
                data = resolver(variables)
            except KeyError as exc:
                self.calls.append(Call(operation, variables, "not_found"))
                return 200, _error(f"Work not found: {exc}", "WORK_NOT_ALIVE")
            self.calls.append(Call(operation, variables, "late" if fault == "timeout" else "ok"))
            return 200, {"data": data}

    def _connector_config(self) -> dict[str, Any]:
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

    def _op_healthCheck(self, _variables: dict[str, Any]) -> dict[str, Any]:
        return {"about": {"version": "6.9.0"}}

    def _op_RegisterConnector(self, variables: dict[str, Any]) -> dict[str, Any]:
        return {
            "registerConnector": {
                "id": variables["input"]["id"],
                "connector_state": self.state,
                "jwks": None,
                "config": self._connector_config(),  # no "s3": null crashes the helper
                "connector_user_id": self.user_id,
            }
        }

    def _op_PingConnector(self, variables: dict[str, Any]) -> dict[str, Any]:
        if self._state_reset:  # the platform answers the reset state, once
            self._state_reset = False
        else:
            sent = variables.get("state")
            self.state = None if sent in (None, "null", "") else sent
        self.state_history.append(self.state)
        return {
            "pingConnector": {
                "id": variables["id"],
                "connector_state": self.state,
                "connector_info": variables.get("connectorInfo"),
            }
        }

    def _op_GetConnector(self, variables: dict[str, Any]) -> dict[str, Any]:
        if len(self._queue_reports) > 1:
            number, size = self._queue_reports.pop(0)
        elif self._queue_reports:
            number, size = self._queue_reports[0]
        else:
            number, size = 0, 0
        config = self._connector_config()
        return {
            "connector": {
                "id": variables["id"],
                "name": "stub connector",
                "active": True,
                "auto": False,
                "only_contextual": False,
                "connector_type": "EXTERNAL_IMPORT",
                "connector_scope": [],
                "connector_state": self.state,
                "connector_queue_details": {"messages_number": number, "messages_size": size},
                "updated_at": "2026-01-01T00:00:00.000Z",
                "created_at": "2026-01-01T00:00:00.000Z",
                "config": {k: config[k] for k in ("listen", "listen_exchange", "push")}
                | {"push_exchange": PUSH_EXCHANGE, "push_routing": self.push_routing},
                "built_in": False,
            }
        }

    def _op_workAdd(self, variables: dict[str, Any]) -> dict[str, Any]:
        work_id = f"work_{uuid.uuid4()}"
        self.works[work_id] = Work(
            id=work_id,
            name=variables.get("friendlyName") or "",
            connector_id=variables["connectorId"],
        )
        return {"workAdd": {"id": work_id}}

    def _work(self, variables: dict[str, Any]) -> Work:
        work = self.works.get(variables["id"])
        if work is None:
            raise KeyError(variables["id"])
        return work

    def _op_addExpectations(self, variables: dict[str, Any]) -> dict[str, Any]:
        self._work(variables).expectations += int(variables.get("expectations") or 0)
        return {"workEdit": {"addExpectations": variables["id"]}}

    def _op_reportExpectation(self, variables: dict[str, Any]) -> dict[str, Any]:
        self._report(self._work(variables))
        return {"workEdit": {"reportExpectation": variables["id"]}}

    def _report(self, work: Work) -> None:
        work.reported_expectations += 1
        if work.processed_time and work.reported_expectations == work.expectations:
            work.status = "complete"

    def report_imported(self, work_ids: Iterable[str | None]) -> None:
        """A worker imported one message of each of ``work_ids`` and reported it."""
        with self._lock:
            for work_id in work_ids:
                work = self.works.get(work_id or "")
                if work is not None:
                    self._report(work)

    def _op_workToProcessed(self, variables: dict[str, Any]) -> dict[str, Any]:
        work = self._work(variables)
        work.processed_time = _now()
        done = work.reported_expectations == work.expectations
        if not self.realistic_completion or done:
            work.status = "complete"
        work.in_error = bool(variables.get("inError"))
        work.messages.append(variables.get("message"))
        work.closed_count += 1
        return {"workEdit": {"toProcessed": variables["id"]}}

    def _op_workToReceived(self, variables: dict[str, Any]) -> dict[str, Any]:
        work = self._work(variables)
        work.status = "wait"
        work.messages.append(variables.get("message"))
        return {"workEdit": {"toReceived": variables["id"]}}

    def _op_pingWork(self, variables: dict[str, Any]) -> dict[str, Any]:
        self._work(variables)
        return {"workEdit": {"ping": variables["id"]}}

    def _works_page(self, variables: dict[str, Any]) -> dict[str, Any]:
        """The ``works`` connection: filters on connector_id / status, ``first``, ``after``."""
        wanted: dict[str, list[str]] = {}
        for condition in (variables.get("filters") or {}).get("filters", []):
            key = condition.get("key")
            key = key[0] if isinstance(key, list) else key
            wanted[str(key)] = [str(v) for v in condition.get("values", [])]
        works = [
            w
            for w in self.works.values()
            if ("connector_id" not in wanted or w.connector_id in wanted["connector_id"])
            and ("status" not in wanted or w.status in wanted["status"])
        ]
        start = int(variables.get("after") or 0)
        count = int(variables.get("count") or variables.get("first") or 50)
        page = works[start : start + count]
        return {
            "works": {
                "edges": [{"node": _work_node(w)} for w in page],
                "pageInfo": {
                    "endCursor": str(start + len(page)),
                    "hasNextPage": start + len(page) < len(works),
                },
            }
        }

    def _op_ConnectorWorksQuery(self, variables: dict[str, Any]) -> dict[str, Any]:
        return self._works_page(variables)

    def _op_ConnectorBatchingOpenWorks(self, variables: dict[str, Any]) -> dict[str, Any]:
        return self._works_page(variables)

    def _op_ConnectorDeletionMutation(self, variables: dict[str, Any]) -> dict[str, Any]:
        return {"deleteConnector": variables["id"]}


FAULT_KINDS = ("graphql", "http_500", "timeout", "echo")


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _work_node(work: Work) -> dict[str, Any]:
    return {
        "id": work.id,
        "name": work.name,
        "user": {"name": "connector"},
        "timestamp": work.timestamp,
        "status": work.status,
        "event_source_id": work.connector_id,
        "received_time": None,
        "processed_time": work.processed_time,
        "completed_time": work.processed_time if work.closed else None,
        "tracking": {
            "import_expected_number": work.expectations,
            "import_processed_number": work.reported_expectations,
        },
        "messages": [
            {"timestamp": None, "message": m, "sequence": None, "source": None}
            for m in work.messages
        ],
        "errors": [],
    }


def _error(message: str, code: str) -> dict[str, Any]:
    return {
        "errors": [{"message": message, "name": code, "extensions": {"code": code}}],
        "data": None,
    }


class _Handler(BaseHTTPRequestHandler):
    owner: StubOpenCTI
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body are two writes: no 40 ms stall

    def log_message(self, format: str, *args: Any) -> None:
        return

    def _reply(self, status: int, body: dict[str, Any] | str) -> None:
        payload = (json.dumps(body) if isinstance(body, dict) else body).encode()
        ctype = "application/json" if isinstance(body, dict) else "text/plain"
        with contextlib.suppress(OSError):  # the client may have given up (timeout)
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length)
        if self.path.rstrip("/") != "/graphql":
            self._reply(404, "not found")
            return
        if self.headers.get("Authorization") != f"Bearer {self.owner.token}":
            self._reply(200, _error("You must be logged in to do this.", "AUTH_REQUIRED"))
            return
        try:
            request = json.loads(raw)
        except ValueError:
            self._reply(400, "invalid JSON")
            return
        variables = request.get("variables") or {}
        status, body = self.owner.handle(
            request.get("query", ""),
            variables,
            headers=dict(self.headers.items()),
            client_gone=self._client_gone,
        )
        self._reply(status, body)

    def _client_gone(self, limit: float) -> bool:
        """Block until the client closes the connection (True) or ``limit`` s pass."""
        sock = self.connection
        deadline = time.monotonic() + limit
        while (left := deadline - time.monotonic()) > 0:
            readable, _, _ = select.select([sock], [], [], left)
            if readable:
                try:
                    return sock.recv(1, socket.MSG_PEEK) == b""
                except OSError:
                    return True
        return False


# -- reading the push queue as the OpenCTI worker does ---------------------------------


@dataclass
class PushedMessage:
    """One message of the push queue, decoded like the OpenCTI worker does."""

    envelope: dict[str, Any]
    bundle: dict[str, Any]

    @property
    def work_id(self) -> str | None:
        return self.envelope.get("work_id")

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
    connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
    try:
        return int(connection.channel().queue_declare(queue, passive=True).method.message_count)
    finally:
        connection.close()
