"""The public stub platform: a custom operation is registered and answered over HTTP.

No broker here (``start(declare_queue=False)``); tests/integration run the stub
with a real pycti helper and RabbitMQ.
"""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

from connector_batching.testing.stub_platform import OperationError, StubOpenCTI

INDICATOR_QUERY = "query IndicatorRead($id: String!) { indicator(id: $id) { id name } }"


@pytest.fixture
def stub() -> Iterator[StubOpenCTI]:
    server = StubOpenCTI("amqp://guest:guest@127.0.0.1:5672/%2F").start(declare_queue=False)
    try:
        yield server
    finally:
        server.stop()


def post(stub: StubOpenCTI, query: str, variables: dict[str, Any]) -> Any:
    request = urllib.request.Request(
        f"{stub.url}/graphql",
        data=json.dumps({"query": query, "variables": variables}).encode(),
        headers={"Authorization": f"Bearer {stub.token}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30) as answer:
        return json.loads(answer.read())


def test_a_custom_operation_is_answered_and_recorded(stub: StubOpenCTI) -> None:
    indicators = {"indicator--1": "evil.example"}

    def indicator_read(platform: StubOpenCTI, variables: dict[str, Any]) -> dict[str, Any]:
        assert platform is stub
        name = indicators.get(variables["id"])
        if name is None:
            raise OperationError(f"no indicator {variables['id']}", "NOT_FOUND")
        return {"indicator": {"id": variables["id"], "name": name}}

    assert post(stub, INDICATOR_QUERY, {"id": "indicator--1"})["errors"][0]["extensions"] == {
        "code": "UNSUPPORTED"
    }
    stub.add_operation("IndicatorRead", indicator_read)

    answer = post(stub, INDICATOR_QUERY, {"id": "indicator--1"})
    assert answer == {"data": {"indicator": {"id": "indicator--1", "name": "evil.example"}}}
    missing = post(stub, INDICATOR_QUERY, {"id": "indicator--2"})
    assert missing["data"] is None
    assert missing["errors"][0]["extensions"] == {"code": "NOT_FOUND"}
    assert [(c.operation, c.variables, c.outcome) for c in stub.calls] == [
        ("IndicatorRead", {"id": "indicator--1"}, "unknown"),
        ("IndicatorRead", {"id": "indicator--1"}, "ok"),
        ("IndicatorRead", {"id": "indicator--2"}, "graphql_error"),
    ]


def test_faults_apply_to_a_custom_operation(stub: StubOpenCTI) -> None:
    stub.add_operation("IndicatorRead", lambda _stub, v: {"indicator": {"id": v["id"]}})
    stub.fail("IndicatorRead", times=1)
    failed = post(stub, INDICATOR_QUERY, {"id": "indicator--1"})
    assert failed["errors"][0]["extensions"] == {"code": "INJECTED_FAILURE"}
    assert post(stub, INDICATOR_QUERY, {"id": "indicator--1"}) == {
        "data": {"indicator": {"id": "indicator--1"}}
    }


def test_a_builtin_operation_can_be_replaced(stub: StubOpenCTI) -> None:
    stub.add_operation("healthCheck", lambda _stub, _v: {"about": {"version": "9.9.9"}})
    answer = post(stub, "query healthCheck { about { version } }", {})
    assert answer == {"data": {"about": {"version": "9.9.9"}}}


def test_a_custom_operation_answers_a_real_pycti_client(stub: StubOpenCTI) -> None:
    from pycti import OpenCTIApiClient

    stub.add_operation(
        "IndicatorRead", lambda _stub, v: {"indicator": {"id": v["id"], "name": "evil.example"}}
    )
    client = OpenCTIApiClient(stub.url, stub.token, log_level="error")
    result = client.query(INDICATOR_QUERY, {"id": "indicator--1"})
    assert result["data"]["indicator"]["name"] == "evil.example"
    assert "IndicatorRead" in stub.operations()


def test_importing_the_testing_package_imports_neither_pika_nor_pycti() -> None:
    code = (
        "import sys, connector_batching.testing; "
        "print('pika' in sys.modules, 'pycti' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]
