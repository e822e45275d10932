"""The operations the stub platform answers out of the box, and the works it tracks.

An operation is a resolver ``resolver(stub, variables) -> data``: it gets the
stub and the GraphQL variables, runs under the stub's lock, and returns the
``data`` of the answer.  It may raise :class:`OperationError` (answered as a
GraphQL error with that code) or ``KeyError`` (answered as "work not found",
``WORK_NOT_ALIVE``, as the platform answers for a work that is gone).
:data:`BUILTIN_OPERATIONS` maps the operation names a real
``pycti.OpenCTIConnectorHelper`` and the work manager send to their resolvers;
``ConnectorBatchingWork`` and pycti's ``WorkQuery`` read one work (``{"work": None}``
when unknown, as the platform answers).
"""

from __future__ import annotations

import datetime as dt
import threading
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from connector_batching.testing.stub_platform_broker import PUSH_EXCHANGE, stix_bundle_push
from connector_batching.testing.work_rules import (
    Event,
    Tally,
    Verdict,
    check_rules,
    completes,
    replay,
)

if TYPE_CHECKING:
    from connector_batching.testing.stub_platform import StubOpenCTI

#: ``resolver(stub, variables) -> data`` (the ``data`` of the GraphQL answer).
Resolver = Callable[["StubOpenCTI", dict[str, Any]], dict[str, Any]]


class OperationError(Exception):
    """Raised by a resolver: the stub answers a GraphQL error with ``code``."""

    def __init__(self, message: str, code: str = "STUB_ERROR") -> None:
        super().__init__(message)
        self.code = code


def now() -> str:
    """The current instant as the platform writes it (ISO 8601, milliseconds, ``Z``)."""
    return dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass
class Work:
    """A work as the stub platform tracks it.

    ``events`` logs each ``addExpectations``, report and ``workToProcessed`` in
    order (see ``work_rules``); the counters follow it.  Live ``status`` follows
    the stub's completion rules at each event (``None``: complete when the
    connector marks it processed); once complete, it stays complete.
    """

    id: str
    name: str
    connector_id: str
    status: str = "progress"
    timestamp: str = field(default_factory=now)
    processed_time: str | None = None
    in_error: bool | None = None
    messages: list[str | None] = field(default_factory=list)
    expectations: int = 0
    reported_expectations: int = 0
    closed_count: int = 0
    is_multipart: bool = False
    events: list[Event] = field(default_factory=list)
    completed_time: str | None = None

    @property
    def closed(self) -> bool:
        return self.status == "complete"

    def tally(self) -> Tally:
        """The counts the live rules look at."""
        return Tally(self.expectations, self.reported_expectations, self.processed_time is not None)

    def verdict(self, rules: str) -> Verdict:
        """What ``rules`` make of this work's event log (whatever the live status)."""
        return replay(self.events, self.is_multipart, rules)

    def node(self) -> dict[str, Any]:
        """The work as the platform's ``works`` and ``work`` queries return it."""
        return {
            "id": self.id,
            "name": self.name,
            "user": {"name": "connector"},
            "timestamp": self.timestamp,
            "status": self.status,
            "event_source_id": self.connector_id,
            "received_time": None,
            "processed_time": self.processed_time,
            "completed_time": (self.completed_time or self.processed_time) if self.closed else None,
            "tracking": {
                "import_expected_number": self.expectations,
                "import_processed_number": self.reported_expectations,
            },
            "messages": [
                {"timestamp": None, "message": m, "sequence": None, "source": None}
                for m in self.messages
            ],
            "errors": [],
        }

    def complete(self) -> None:
        """Mark the work complete (once: the first completion time stays)."""
        if not self.closed:
            self.status = "complete"
            self.completed_time = self.processed_time or now()

    def add_expectations(self, value: int) -> None:
        """``addExpectations(value)``: no sign check, no completion check (as the platform)."""
        self.expectations += value
        self.events.append(("add", value))

    def report(self, rules: str | None = None) -> None:
        """A worker reported one imported message (object) of this work."""
        self.reported_expectations += 1
        self.events.append(("report", 1))
        if rules is not None:
            if completes(rules, "report", self.tally(), self.is_multipart):
                self.complete()
        elif self.processed_time and self.reported_expectations == self.expectations:
            self.complete()

    def to_processed(self, message: str | None, in_error: bool, rules: str | None) -> None:
        """``workToProcessed``: closed by its connector."""
        self.processed_time = now()
        self.in_error = in_error
        self.messages.append(message)
        self.closed_count += 1
        self.events.append(("processed", int(in_error)))
        if rules is None or completes(rules, "processed", self.tally(), self.is_multipart):
            self.complete()


class StubWorks:
    """The works a stub tracks, the completion rules they follow, and the worker's
    in-process calls on them (under the stub's lock)."""

    connector_id: str
    works: dict[str, Work]
    _completion_rules: str | None
    _lock: threading.Lock

    # -- completion rules ------------------------------------------------------

    @property
    def completion_rules(self) -> str | None:
        """How live work status follows the events (see ``work_rules``).

        ``"current"`` / ``"older"``: the platform's rule set, checked at each report
        and ``workToProcessed``; ``None`` (default): a work is complete as soon as
        its connector marks it processed.
        """
        return self._completion_rules

    @completion_rules.setter
    def completion_rules(self, rules: str | None) -> None:
        self._completion_rules = None if rules is None else check_rules(rules)

    @property
    def realistic_completion(self) -> bool:
        """Alias: True sets the ``"current"`` rules, False none; reads True under any."""
        return self._completion_rules is not None

    @realistic_completion.setter
    def realistic_completion(self, on: bool) -> None:
        self.completion_rules = "current" if on else None

    def add_work(
        self,
        name: str,
        *,
        status: str = "progress",
        processed: bool = False,
        is_multipart: bool = False,
    ) -> Work:
        """A work of this connector, as a previous process may have left it
        (``processed``: closed by it, logged as one ``processed`` event)."""
        work = Work(
            id=f"work_{uuid.uuid4()}",
            name=name,
            connector_id=self.connector_id,
            is_multipart=is_multipart,
        )
        work.status = status
        if processed:
            work.processed_time = now()
            work.events.append(("processed", 0))
        with self._lock:
            self.works[work.id] = work
        return work

    def add_expectations(self, work_id: str, value: int) -> bool:
        """A worker's ``addExpectations`` in process; False when the work is unknown."""
        with self._lock:
            work = self.works.get(work_id)
            if work is None:
                return False
            work.add_expectations(value)
            return True

    def report_expectation(self, work_id: str) -> bool:
        """A worker's ``reportExpectation`` in process; False when the work is unknown."""
        with self._lock:
            work = self.works.get(work_id)
            if work is None:
                return False
            work.report(self._completion_rules)
            return True

    def report_imported(self, work_ids: Iterable[str | None]) -> None:
        """A worker imported one message of each of ``work_ids`` and reported it
        (unknown works and ``None`` are skipped)."""
        for work_id in work_ids:
            if work_id is not None:
                self.report_expectation(work_id)


def _health_check(_stub: StubOpenCTI, _variables: dict[str, Any]) -> dict[str, Any]:
    return {"about": {"version": "6.9.0"}}


def _register_connector(stub: StubOpenCTI, variables: dict[str, Any]) -> dict[str, Any]:
    return {
        "registerConnector": {
            "id": variables["input"]["id"],
            "connector_state": stub.state,
            "jwks": None,
            "config": stub.connector_config(),  # no "s3": null crashes the helper
            "connector_user_id": stub.user_id,
        }
    }


def _ping_connector(stub: StubOpenCTI, variables: dict[str, Any]) -> dict[str, Any]:
    if stub.state_reset_pending:  # the platform answers the reset state, once
        stub.state_reset_pending = False
    else:
        sent = variables.get("state")
        stub.state = None if sent in (None, "null", "") else sent
    stub.state_history.append(stub.state)
    return {
        "pingConnector": {
            "id": variables["id"],
            "connector_state": stub.state,
            "connector_info": variables.get("connectorInfo"),
        }
    }


def _get_connector(stub: StubOpenCTI, variables: dict[str, Any]) -> dict[str, Any]:
    reports = stub.queue_reports
    if len(reports) > 1:
        number, size = reports.pop(0)
    elif reports:
        number, size = reports[0]
    else:
        number, size = 0, 0
    config = stub.connector_config()
    return {
        "connector": {
            "id": variables["id"],
            "name": "stub connector",
            "active": True,
            "auto": False,
            "only_contextual": False,
            "connector_type": "EXTERNAL_IMPORT",
            "connector_scope": [],
            "connector_state": stub.state,
            "connector_queue_details": {"messages_number": number, "messages_size": size},
            "updated_at": "2026-01-01T00:00:00.000Z",
            "created_at": "2026-01-01T00:00:00.000Z",
            "config": {k: config[k] for k in ("listen", "listen_exchange", "push")}
            | {"push_exchange": PUSH_EXCHANGE, "push_routing": stub.push_routing},
            "built_in": False,
        }
    }


def _work_add(stub: StubOpenCTI, variables: dict[str, Any]) -> dict[str, Any]:
    work_id = f"work_{uuid.uuid4()}"
    stub.works[work_id] = Work(
        id=work_id,
        name=variables.get("friendlyName") or "",
        connector_id=variables["connectorId"],
        is_multipart=bool(variables.get("isMultiPartWork")),
    )
    return {"workAdd": {"id": work_id}}


def _work(stub: StubOpenCTI, variables: dict[str, Any]) -> Work:
    work = stub.works.get(variables["id"])
    if work is None:
        raise KeyError(variables["id"])
    return work


def _add_expectations(stub: StubOpenCTI, variables: dict[str, Any]) -> dict[str, Any]:
    _work(stub, variables).add_expectations(int(variables.get("expectations") or 0))
    return {"workEdit": {"addExpectations": variables["id"]}}


def _report_expectation(stub: StubOpenCTI, variables: dict[str, Any]) -> dict[str, Any]:
    _work(stub, variables).report(stub.completion_rules)
    return {"workEdit": {"reportExpectation": variables["id"]}}


def _work_to_processed(stub: StubOpenCTI, variables: dict[str, Any]) -> dict[str, Any]:
    work = _work(stub, variables)
    work.to_processed(
        variables.get("message"), bool(variables.get("inError")), stub.completion_rules
    )
    return {"workEdit": {"toProcessed": variables["id"]}}


def _work_to_received(stub: StubOpenCTI, variables: dict[str, Any]) -> dict[str, Any]:
    work = _work(stub, variables)
    if not work.closed:  # a completed work never goes back
        work.status = "wait"
    work.messages.append(variables.get("message"))
    return {"workEdit": {"toReceived": variables["id"]}}


def _work_read(stub: StubOpenCTI, variables: dict[str, Any]) -> dict[str, Any]:
    """``ConnectorBatchingWork``: id, status and tracking; ``None`` for an unknown work."""
    node = _work_query(stub, variables)["work"]
    return {"work": node and {key: node[key] for key in ("id", "status", "tracking")}}


def _work_query(stub: StubOpenCTI, variables: dict[str, Any]) -> dict[str, Any]:
    """pycti's ``WorkQuery`` (``api.work.get_work``): the whole node; ``None`` when unknown."""
    work = stub.works.get(variables.get("id") or "")
    return {"work": None if work is None else work.node()}


def _ping_work(stub: StubOpenCTI, variables: dict[str, Any]) -> dict[str, Any]:
    _work(stub, variables)
    return {"workEdit": {"ping": variables["id"]}}


def _works_page(stub: StubOpenCTI, variables: dict[str, Any]) -> dict[str, Any]:
    """The ``works`` connection: filters on connector_id / status, ``first``, ``after``."""
    wanted: dict[str, list[str]] = {}
    for condition in (variables.get("filters") or {}).get("filters", []):
        key = condition.get("key")
        key = key[0] if isinstance(key, list) else key
        wanted[str(key)] = [str(v) for v in condition.get("values", [])]
    works = [
        w
        for w in stub.works.values()
        if ("connector_id" not in wanted or w.connector_id in wanted["connector_id"])
        and ("status" not in wanted or w.status in wanted["status"])
    ]
    start = int(variables.get("after") or 0)
    count = int(variables.get("count") or variables.get("first") or 50)
    page = works[start : start + count]
    return {
        "works": {
            "edges": [{"node": w.node()} for w in page],
            "pageInfo": {
                "endCursor": str(start + len(page)),
                "hasNextPage": start + len(page) < len(works),
            },
        }
    }


def _delete_connector(_stub: StubOpenCTI, variables: dict[str, Any]) -> dict[str, Any]:
    return {"deleteConnector": variables["id"]}


BUILTIN_OPERATIONS: dict[str, Resolver] = {
    "healthCheck": _health_check,
    "RegisterConnector": _register_connector,
    "PingConnector": _ping_connector,
    "GetConnector": _get_connector,
    "workAdd": _work_add,
    "addExpectations": _add_expectations,
    "reportExpectation": _report_expectation,
    "workToProcessed": _work_to_processed,
    "workToReceived": _work_to_received,
    "pingWork": _ping_work,
    "ConnectorBatchingWork": _work_read,
    "WorkQuery": _work_query,
    "ConnectorWorksQuery": _works_page,
    "ConnectorBatchingOpenWorks": _works_page,
    "ConnectorDeletionMutation": _delete_connector,
    "StixBundlePush": stix_bundle_push,
}
