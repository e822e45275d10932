"""Recovery at the next start: works a killed process left in progress, and a connector
state the operator reset between two runs.  Real helper, stub platform, real broker."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from connector_batching.opencti import OpenCTIWorkManager
from connector_batching.testing.stub_platform import StubOpenCTI, drain_queue
from tests.integration.conftest import helper_config
from tests.integration.feed import rows
from tests.integration.test_mixin_connector import STATE_KEY, FeedConnector

pytestmark = pytest.mark.broker

ROOT = Path(__file__).resolve().parents[2]

# A connector process that opens a work, sends its bundle and is killed before it
# closes the work (SIGKILL: no handler, no finally block runs).
KILLED_RUN = """
import json, os, signal, sys
from pycti import OpenCTIConnectorHelper
from connector_batching.opencti import OpenCTIWorkManager
from tests.integration.feed import rows

helper = OpenCTIConnectorHelper(json.loads(sys.argv[1]))
manager = OpenCTIWorkManager(helper, backpressure=False)
work = manager.initiate_work("Feed import #1", "indicators")
manager.send_bundle(work, [obj for row in rows(5) for obj in row.to_stix()])
print(work, flush=True)
os.kill(os.getpid(), signal.SIGKILL)
"""


def test_works_of_a_killed_process_are_closed_at_the_next_start(
    stub: StubOpenCTI, make_helper: Any
) -> None:
    stub.realistic_completion = True
    done = subprocess.run(
        [sys.executable, "-c", KILLED_RUN, json.dumps(helper_config(stub, log_level="error"))],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert done.returncode == -signal.SIGKILL, done.stderr[-2000:]
    killed_work = done.stdout.strip().splitlines()[-1]
    (work,) = stub.works_list()
    assert work.id == killed_work and not work.closed and work.processed_time is None
    assert work.expectations == 15 + 1  # its 15 messages wait in the queue; the placeholder

    # other works the listing must leave alone
    still_importing = stub.add_work("Feed import #9", processed=True)  # closed by its run
    finished = stub.add_work("Feed import #8", status="complete", processed=True)
    other = stub.add_work("Other connector")
    other.connector_id = "another-connector"

    connector = FeedConnector(make_helper())
    manager = connector.work_manager  # created: the interrupted work is closed here
    assert isinstance(manager, OpenCTIWorkManager)
    assert manager.counters["interrupted_works_closed"] == 1
    assert work.closed and work.in_error is True
    assert work.messages[-1] == "interrupted"
    assert work.expectations == 0  # none of its messages imported yet: all withdrawn
    assert not still_importing.closed and still_importing.messages == []
    assert finished.messages == [] and not other.closed
    listing = [c for c in stub.calls if c.operation == "ConnectorBatchingOpenWorks"]
    assert len(listing) == 1
    filters = listing[0].variables["filters"]["filters"]
    assert {"key": "status", "values": ["wait", "progress"]} in filters

    # the new run delivers from the cursor (none saved: from the start)
    stats = connector.run(rows(5))
    assert stats["total_items_processed"] == 7
    assert len(drain_queue(stub.amqp_url, stub.push_queue)) == 15 + 17


class NoCleanupConnector(FeedConnector):
    close_interrupted_works_at_start = False


def test_closing_interrupted_works_can_be_turned_off_and_never_raises(
    stub: StubOpenCTI, make_helper: Any
) -> None:
    left = stub.add_work("Feed import #4")
    connector = NoCleanupConnector(make_helper())
    manager = connector.work_manager
    assert isinstance(manager, OpenCTIWorkManager)
    assert not left.closed
    assert stub.calls_of("ConnectorBatchingOpenWorks") == []

    stub.fail("ConnectorBatchingOpenWorks", times=1, kind="http_500")
    assert manager.close_interrupted_works() == 0  # logged, not raised
    assert not left.closed
    assert manager.close_interrupted_works() == 1
    assert left.closed and left.in_error is True


def test_a_state_reset_between_runs_is_used_by_a_new_process(
    stub: StubOpenCTI, make_helper: Any
) -> None:
    first = FeedConnector(make_helper())
    first.run(rows(40))
    saved = first.get_cursor(STATE_KEY)
    assert saved == rows(40)[-1].modified
    first.helper.ping.stop()  # the process ends
    drain_queue(stub.amqp_url, stub.push_queue)

    reset_to = rows(40)[29].modified  # the operator re-imports the last ten rows
    stub.reset_state({STATE_KEY: reset_to.strftime("%Y-%m-%dT%H:%M:%SZ")})
    second = FeedConnector(make_helper())
    assert second.get_cursor(STATE_KEY) == reset_to
    stats = second.run(rows(40))
    assert stats["total_items_processed"] == 12  # rows 30..39, marking and author
    indicators = [
        o
        for m in drain_queue(stub.amqp_url, stub.push_queue)
        for o in m.objects
        if o["type"] == "indicator"
    ]
    assert len(indicators) == 10
    assert second.get_cursor(STATE_KEY) == saved


@pytest.mark.parametrize("reset", [None, "2026-01-01T00:09:00Z"], ids=["cleared", "moved-back"])
def test_a_state_reset_between_runs_is_used_by_a_long_lived_process(
    stub: StubOpenCTI, make_helper: Any, reset: str | None
) -> None:
    connector = FeedConnector(make_helper())
    connector.run(rows(30))
    assert connector.get_cursor(STATE_KEY) == rows(30)[-1].modified
    drain_queue(stub.amqp_url, stub.push_queue)

    # between two scheduled runs, before pycti's ping thread (every 40 s) sees the reset
    stub.reset_state(None if reset is None else {STATE_KEY: reset})
    stale = connector.helper.get_state()
    assert stale is not None and STATE_KEY in stale  # the helper's copy is stale
    stats = connector.run(rows(30))
    expected = 30 if reset is None else 20  # all rows, or those after 00:09
    assert stats["total_items_processed"] == expected + 2
    indicators = [
        o
        for m in drain_queue(stub.amqp_url, stub.push_queue)
        for o in m.objects
        if o["type"] == "indicator"
    ]
    assert len(indicators) == expected
    manager = connector.work_manager
    assert isinstance(manager, OpenCTIWorkManager)
    assert manager.counters["state_refreshes"] == 1
    assert stub.state_dict() == {STATE_KEY: "2026-01-01T00:29:00Z"}


def test_a_state_reset_during_a_run_is_kept_not_overwritten(
    stub: StubOpenCTI, make_helper: Any
) -> None:
    stub.state = json.dumps({"feed_etag": "abc"})
    helper = make_helper()
    manager = OpenCTIWorkManager(helper, backpressure=False)
    manager.update_state("cursor", "2026-01-01T00:00:00Z")
    assert stub.state_dict() == {"feed_etag": "abc", "cursor": "2026-01-01T00:00:00Z"}

    # the operator resets the state; the next ping to reach the platform is our save
    stub.reset_state({"feed_etag": "reset"})
    manager.update_state("cursor", "2026-01-02T00:00:00Z")
    expected = {"feed_etag": "reset", "cursor": "2026-01-02T00:00:00Z"}
    assert stub.state_dict() == expected  # pycti's force_ping would restore "abc"
    assert helper.get_state() == expected  # and the helper's copy follows
    assert manager.counters["state_resets_seen"] == 1
    manager.update_state("cursor", "2026-01-03T00:00:00Z")
    assert stub.state_dict()["feed_etag"] == "reset"
    assert manager.counters["state_resets_seen"] == 1
