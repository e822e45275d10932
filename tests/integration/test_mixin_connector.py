"""`BatchingConnectorMixin` in a minimal connector class with a real helper."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import pytest
from pycti import OpenCTIConnectorHelper

from connector_batching.config import GenericBatchProcessorConfig
from connector_batching.local import LocalWorkManager
from connector_batching.mixin import BatchingConnectorMixin
from connector_batching.opencti import OpenCTIWorkManager
from connector_batching.testing.stub_platform import StubOpenCTI, drain_queue
from tests.integration.feed import AUTHOR, TLP_RED, FeedRow, modified_of, rows

pytestmark = pytest.mark.broker

STATE_KEY = "feed_cursor"


class FeedConnector(BatchingConnectorMixin):
    """An external-import connector as a user would write it."""

    def __init__(self, helper: OpenCTIConnectorHelper) -> None:
        self.helper = helper
        self.config = GenericBatchProcessorConfig(
            batch_size=25,
            work_name_template="Feed import #{batch_num}",
            state_key=STATE_KEY,
            entity_type="indicators",
            display_name="indicators",
            date_extraction_function=modified_of,
        )

    def run(self, feed: list[FeedRow], fail_after: int | None = None) -> dict[str, Any]:
        since = self.get_cursor(STATE_KEY)
        with self.create_batch_processor(self.config) as processor:
            processor.add_item(TLP_RED)
            processor.add_item(AUTHOR)
            for count, row in enumerate(feed):
                if fail_after is not None and count == fail_after:
                    raise RuntimeError("source went away mid-run")
                if since is None or row.modified > since:
                    processor.add_item(row)
        return processor.get_statistics()


def test_minimal_connector_runs_resumes_and_reads_its_cursor(
    stub: StubOpenCTI, make_helper: Any
) -> None:
    connector = FeedConnector(make_helper())
    manager = connector.work_manager
    assert isinstance(manager, OpenCTIWorkManager)
    assert connector.work_manager is manager  # created once
    assert connector.get_cursor(STATE_KEY) is None

    stats = connector.run(rows(60))
    assert stats["total_items_processed"] == 62
    assert len(stub.works_list()) == 3
    cursor = connector.get_cursor(STATE_KEY)
    assert cursor == rows(60)[-1].modified
    assert cursor is not None and cursor.tzinfo is not None
    assert cursor.utcoffset() == dt.timedelta(0)
    first = drain_queue(stub.amqp_url, stub.push_queue)
    assert len(first) == 60 * 3 + 3 * 2  # marking and author travel with every batch

    # a new process: a new helper registers and gets the cursor back from the platform
    restarted = FeedConnector(make_helper())
    assert restarted.get_cursor(STATE_KEY) == cursor
    stats = restarted.run(rows(80))  # only the 20 new rows go out
    assert stats["total_items_processed"] == 22
    second = drain_queue(stub.amqp_url, stub.push_queue)
    indicators = [o for m in second for o in m.objects if o["type"] == "indicator"]
    assert len(indicators) == 20
    assert restarted.get_cursor(STATE_KEY) == rows(80)[-1].modified
    assert all(work.closed and work.in_error is False for work in stub.works_list())


def test_a_run_that_raises_leaves_no_work_in_progress_and_a_safe_cursor(
    stub: StubOpenCTI, make_helper: Any
) -> None:
    connector = FeedConnector(make_helper())
    with pytest.raises(RuntimeError, match="source went away"):
        connector.run(rows(60), fail_after=40)
    works = stub.works_list()
    assert works and all(work.closed for work in works)
    assert connector.work_manager.open_works == []  # type: ignore[attr-defined]
    # rows 0..39 were accepted and delivered (flushed on exit); the cursor is the last of them
    assert connector.get_cursor(STATE_KEY) == rows(40)[-1].modified
    delivered = drain_queue(stub.amqp_url, stub.push_queue)
    ids = {o["id"] for m in delivered for o in m.objects}
    assert {o.id for row in rows(40) for o in row.to_stix()} <= ids


def test_work_manager_is_settable_for_offline_runs(
    stub: StubOpenCTI, make_helper: Any, tmp_path: Path
) -> None:
    connector = FeedConnector(make_helper())
    connector.work_manager = LocalWorkManager(tmp_path)
    stats = connector.run(rows(30))
    assert stats["total_batches_processed"] == 2
    assert stub.works_list() == []  # nothing went to the platform
    assert connector.get_cursor(STATE_KEY) == rows(30)[-1].modified
    assert len(list(tmp_path.glob("**/*.json"))) == 2
