"""``CONNECTOR_QUEUE_PROTOCOL=api``: bundles posted over HTTP, counted exactly all the same.

pycti posts each bundle whole (``stixBundlePush``); the platform queues it as one
message and adds no expectation; the worker splits a bundle of several objects
and counts their expectations itself, and imports a one-object bundle whole
(one report nobody counted: the manager adds it).
"""

from __future__ import annotations

from typing import Any

import pytest

from connector_batching.opencti import OpenCTIWorkManager
from connector_batching.testing.stub_platform import StubOpenCTI
from connector_batching.testing.work_rules import RULE_SETS
from connector_batching.testing.worker_model import WorkerModel
from tests.integration.feed import AUTHOR, TLP_RED, rows

pytestmark = pytest.mark.broker


def test_api_transport_works_complete_exactly_under_both_rule_sets(
    stub: StubOpenCTI, make_helper: Any
) -> None:
    stub.completion_rules = "current"
    helper = make_helper(queue_protocol="api")
    manager = OpenCTIWorkManager(helper, backpressure=False)
    assert manager.publisher == "pycti"
    assert "CONNECTOR_QUEUE_PROTOCOL=api" in manager.pycti_reasons
    with WorkerModel(stub) as worker:
        several = manager.initiate_work("several objects", "indicators")
        manager.send_bundle(several, [TLP_RED, AUTHOR, *rows(3)[0].to_stix()])
        manager.work_to_process(several)
        single = manager.initiate_work("one object", "indicators")
        manager.send_bundle(single, [AUTHOR])
        manager.work_to_process(single)
        worker.wait_idle()
    assert stub.calls_of("StixBundlePush") and worker.splits == 1
    works = {work.name: work for work in stub.works_list()}
    assert works["several objects"].expectations == 1 + 5  # the placeholder; the worker's 5
    assert works["one object"].expectations == 1 + 1  # the placeholder; the one import
    for work in works.values():
        for rules in RULE_SETS:
            verdict = work.verdict(rules)
            assert verdict.complete and not verdict.early, (rules, work)
            assert verdict.processed == verdict.expected, (rules, work)
