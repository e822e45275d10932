"""The public stub platform answers an operation a connector adds, for a real pycti helper."""

from __future__ import annotations

from typing import Any

import pytest

from connector_batching.testing.stub_platform import OperationError, StubOpenCTI
from tests.integration.conftest import HelperFactory

pytestmark = pytest.mark.broker


def test_a_real_helper_reads_through_an_added_operation(
    stub: StubOpenCTI, make_helper: HelperFactory
) -> None:
    known = {"indicator--1": {"id": "indicator--1", "name": "evil.example", "x_opencti_score": 80}}

    def indicator(platform: StubOpenCTI, variables: dict[str, Any]) -> dict[str, Any]:
        assert platform is stub
        if variables["id"] == "indicator--boom":
            raise OperationError("indexing in progress", "DATABASE_ERROR")
        return {"indicator": known.get(variables["id"])}

    helper = make_helper(log_level="error")
    stub.add_operation("Indicator", indicator)  # pycti: query Indicator($id: String!)
    assert helper.api.indicator.read(id="indicator--1")["x_opencti_score"] == 80
    assert helper.api.indicator.read(id="indicator--2") is None
    with pytest.raises(ValueError, match="indexing in progress"):
        helper.api.indicator.read(id="indicator--boom")
    assert [(c.variables["id"], c.outcome) for c in stub.calls_of("Indicator")] == [
        ("indicator--1", "ok"),
        ("indicator--2", "ok"),
        ("indicator--boom", "graphql_error"),
    ]
