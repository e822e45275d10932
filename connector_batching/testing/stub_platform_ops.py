"""The operations the stub platform answers out of the box, and the works it tracks.

An operation is a resolver ``resolver(stub, variables) -> data``: it gets the
stub and the GraphQL variables, runs under the stub's lock, and returns the
``data`` of the answer.  It may raise :class:`OperationError` (answered as a
GraphQL error with that code) or ``KeyError`` (answered as "work not found",
``WORK_NOT_ALIVE``, as the platform answers for a work that is gone).
:data:`BUILTIN_OPERATIONS` maps the operation names a real
``pycti.OpenCTIConnectorHelper`` and the work manager send to their resolvers.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from connector_batching.testing.stub_platform_broker import PUSH_EXCHANGE

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
    """A work as the stub platform tracks it."""

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

    @property
    def closed(self) -> bool:
        return self.status == "complete"

    def node(self) -> dict[str, Any]:
        """The work as the platform's ``works`` query returns it."""
        return {
            "id": self.id,
            "name": self.name,
            "user": {"name": "connector"},
            "timestamp": self.timestamp,
            "status": self.status,
            "event_source_id": self.connector_id,
            "received_time": None,
            "processed_time": self.processed_time,
            "completed_time": self.processed_time if self.closed else None,
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

    def report(self) -> None:
        """A worker reported one imported message of this work."""
        self.reported_expectations += 1
        if self.processed_time and self.reported_expectations == self.expectations:
            self.status = "complete"


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
        id=work_id, name=variables.get("friendlyName") or "", connector_id=variables["connectorId"]
    )
    return {"workAdd": {"id": work_id}}


def _work(stub: StubOpenCTI, variables: dict[str, Any]) -> Work:
    work = stub.works.get(variables["id"])
    if work is None:
        raise KeyError(variables["id"])
    return work


def _add_expectations(stub: StubOpenCTI, variables: dict[str, Any]) -> dict[str, Any]:
    _work(stub, variables).expectations += int(variables.get("expectations") or 0)
    return {"workEdit": {"addExpectations": variables["id"]}}


def _report_expectation(stub: StubOpenCTI, variables: dict[str, Any]) -> dict[str, Any]:
    _work(stub, variables).report()
    return {"workEdit": {"reportExpectation": variables["id"]}}


def _work_to_processed(stub: StubOpenCTI, variables: dict[str, Any]) -> dict[str, Any]:
    work = _work(stub, variables)
    work.processed_time = now()
    done = work.reported_expectations == work.expectations
    if not stub.realistic_completion or done:
        work.status = "complete"
    work.in_error = bool(variables.get("inError"))
    work.messages.append(variables.get("message"))
    work.closed_count += 1
    return {"workEdit": {"toProcessed": variables["id"]}}


def _work_to_received(stub: StubOpenCTI, variables: dict[str, Any]) -> dict[str, Any]:
    work = _work(stub, variables)
    work.status = "wait"
    work.messages.append(variables.get("message"))
    return {"workEdit": {"toReceived": variables["id"]}}


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
    "ConnectorWorksQuery": _works_page,
    "ConnectorBatchingOpenWorks": _works_page,
    "ConnectorDeletionMutation": _delete_connector,
}
