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


# -- works: multipart, the work read, live status under the platform's rules -------

WORK_ADD = (
    "mutation workAdd($connectorId: String!, $friendlyName: String, $isMultiPartWork: Boolean) "
    "{ workAdd(connectorId: $connectorId, friendlyName: $friendlyName, "
    "isMultiPartWork: $isMultiPartWork) { id } }"
)
ADD_EXPECTATIONS = (
    "mutation addExpectations($id: ID!, $expectations: Int) "
    "{ workEdit(id: $id) { addExpectations(expectations: $expectations) } }"
)
REPORT_EXPECTATION = (
    "mutation reportExpectation($id: ID!, $error: WorkErrorInput) "
    "{ workEdit(id: $id) { reportExpectation(error: $error) } }"
)
TO_PROCESSED = (
    "mutation workToProcessed($id: ID!, $message: String, $inError: Boolean) "
    "{ workEdit(id: $id) { toProcessed (message: $message, inError: $inError) } }"
)
TO_RECEIVED = (
    "mutation workToReceived($id: ID!, $message: String) "
    "{ workEdit(id: $id) { toReceived (message: $message) } }"
)
WORK_READ = (
    "query ConnectorBatchingWork($id: ID!) { work(id: $id) { id status "
    "tracking { import_expected_number import_processed_number } } }"
)


def work_add(stub: StubOpenCTI, **variables: Any) -> str:
    answer = post(stub, WORK_ADD, {"connectorId": stub.connector_id, **variables})
    return str(answer["data"]["workAdd"]["id"])


def add_expectations(stub: StubOpenCTI, work_id: str, n: int) -> None:
    assert "errors" not in post(stub, ADD_EXPECTATIONS, {"id": work_id, "expectations": n})


def report(stub: StubOpenCTI, work_id: str, times: int = 1) -> None:
    for _ in range(times):
        assert "errors" not in post(stub, REPORT_EXPECTATION, {"id": work_id, "error": None})


def to_processed(stub: StubOpenCTI, work_id: str, in_error: bool = False) -> None:
    variables = {"id": work_id, "message": "done", "inError": in_error}
    assert "errors" not in post(stub, TO_PROCESSED, variables)


def status(stub: StubOpenCTI, work_id: str) -> str:
    return str(post(stub, WORK_READ, {"id": work_id})["data"]["work"]["status"])


def test_work_add_stores_multipart_as_pycti_sends_it(stub: StubOpenCTI) -> None:
    multipart = work_add(stub, friendlyName="a", isMultiPartWork=True)
    single = work_add(stub, friendlyName="b", isMultiPartWork=False)
    unsaid = work_add(stub, friendlyName="c")
    assert [stub.works[w].is_multipart for w in (multipart, single, unsaid)] == [
        True,
        False,
        False,
    ]


def test_a_work_is_read_by_id_and_unknown_ones_are_none(stub: StubOpenCTI) -> None:
    work_id = work_add(stub, friendlyName="a")
    add_expectations(stub, work_id, 3)
    report(stub, work_id)
    assert post(stub, WORK_READ, {"id": work_id}) == {
        "data": {
            "work": {
                "id": work_id,
                "status": "progress",
                "tracking": {"import_expected_number": 3, "import_processed_number": 1},
            }
        }
    }
    assert post(stub, WORK_READ, {"id": "work_gone"}) == {"data": {"work": None}}
    stub.fail("ConnectorBatchingWork", times=1, kind="graphql")
    failed = post(stub, WORK_READ, {"id": work_id})
    assert failed["errors"][0]["extensions"] == {"code": "INJECTED_FAILURE"}
    assert [c.outcome for c in stub.calls_of("ConnectorBatchingWork")] == [
        "ok",
        "ok",
        "graphql_error",
    ]


def test_pycti_get_work_reads_the_work(stub: StubOpenCTI) -> None:
    from pycti import OpenCTIApiClient

    client = OpenCTIApiClient(stub.url, stub.token, log_level="error")
    work_id = work_add(stub, friendlyName="a")
    add_expectations(stub, work_id, 1)
    to_processed(stub, work_id)
    work = client.work.get_work(work_id=work_id)
    assert work["id"] == work_id and work["status"] == "complete"
    assert work["tracking"] == {"import_expected_number": 1, "import_processed_number": 0}
    assert work["processed_time"] is not None and work["completed_time"] is not None
    assert client.work.get_work(work_id="work_gone") is None
    stub.fail("WorkQuery", times=1, kind="http_500")
    with pytest.raises(ValueError, match="Internal Server Error"):  # pycti's HTTP error
        client.work.get_work(work_id=work_id)


def test_without_rules_a_work_completes_when_its_connector_closes_it(stub: StubOpenCTI) -> None:
    assert stub.completion_rules is None and not stub.realistic_completion
    work_id = work_add(stub, friendlyName="a")
    add_expectations(stub, work_id, 5)
    to_processed(stub, work_id, in_error=True)
    work = stub.works[work_id]
    assert work.closed and work.in_error and work.closed_count == 1
    assert work.events == [("add", 5), ("processed", 1)]
    assert not work.verdict("current").complete  # the platform would not have


def test_current_rules_complete_a_non_multipart_work_at_the_report_that_reaches_expected(
    stub: StubOpenCTI,
) -> None:
    stub.completion_rules = "current"
    work_id = work_add(stub, friendlyName="bundle mode")
    add_expectations(stub, work_id, 2)
    report(stub, work_id)
    assert status(stub, work_id) == "progress"
    report(stub, work_id)
    assert status(stub, work_id) == "complete"  # before its connector closed it
    add_expectations(stub, work_id, 2)  # a completed work never goes back
    post(stub, TO_RECEIVED, {"id": work_id, "message": "again"})
    assert status(stub, work_id) == "complete"
    work = stub.works[work_id]
    assert work.events == [("add", 2), ("report", 1), ("report", 1), ("add", 2)]
    verdict = work.verdict("current")
    assert verdict.completed_at == 2 and verdict.early


def test_current_rules_wait_for_the_close_of_a_multipart_work(stub: StubOpenCTI) -> None:
    stub.completion_rules = "current"
    work_id = work_add(stub, friendlyName="split", isMultiPartWork=True)
    add_expectations(stub, work_id, 2)
    report(stub, work_id, times=3)  # an overshoot
    assert status(stub, work_id) == "progress"
    to_processed(stub, work_id)
    assert status(stub, work_id) == "complete"
    assert stub.works[work_id].verdict("current").completed_at == 4


def test_older_rules_leave_an_overshoot_in_progress(stub: StubOpenCTI) -> None:
    stub.completion_rules = "older"
    overshot = work_add(stub, friendlyName="counted late", isMultiPartWork=True)
    report(stub, overshot, times=3)  # reports in before their expectations
    add_expectations(stub, overshot, 2)
    to_processed(stub, overshot)
    assert status(stub, overshot) == "progress"
    exact = work_add(stub, friendlyName="exact", isMultiPartWork=True)
    add_expectations(stub, exact, 2)
    to_processed(stub, exact)
    assert status(stub, exact) == "progress"
    report(stub, exact, times=2)
    assert status(stub, exact) == "complete"
    for work_id in (overshot, exact):
        work = stub.works[work_id]
        assert work.verdict("older").complete == work.closed


def test_realistic_completion_is_the_current_rules(stub: StubOpenCTI) -> None:
    stub.realistic_completion = True
    assert stub.completion_rules == "current" and stub.realistic_completion
    stub.realistic_completion = False
    assert stub.completion_rules is None
    stub.completion_rules = "older"
    assert stub.realistic_completion
    with pytest.raises(ValueError, match="unknown completion rules"):
        stub.completion_rules = "newest"
    assert stub.completion_rules == "older"


def test_in_process_adds_and_reports_follow_the_rules(stub: StubOpenCTI) -> None:
    stub.completion_rules = "current"
    work_id = work_add(stub, friendlyName="worker side")
    assert stub.add_expectations(work_id, 1)
    assert stub.report_expectation(work_id)
    assert stub.works[work_id].closed
    assert not stub.add_expectations("work_gone", 1)
    assert not stub.report_expectation("work_gone")
    stub.report_imported([None, "work_gone", work_id])  # unknown ones skipped
    assert stub.works[work_id].events == [("add", 1), ("report", 1), ("report", 1)]
