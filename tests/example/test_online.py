"""`python -m example_connector` against OpenCTI: the real pycti helper and scheduler,
the stub OpenCTI API and the real RabbitMQ broker (fixtures from tests/integration)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from pycti import MarkingDefinition

from example_connector.connector import STATE_KEY
from tests.integration.stub_opencti import StubOpenCTI, drain_queue

from .conftest import REPO, make_feed_rows, write_feed

pytestmark = pytest.mark.broker

ROWS = 60
BATCH = 25


def _env(platform: StubOpenCTI, feed: Path, period: str = "PT0S") -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("URLHAUS_", "CONNECTOR_"))}
    env.update(
        OPENCTI_URL=platform.url,
        OPENCTI_TOKEN=platform.token,
        OPENCTI_JSON_LOGGING="false",
        CONNECTOR_ID=platform.connector_id,
        CONNECTOR_DURATION_PERIOD=period,  # PT0S: run once, then exit
        URLHAUS_FEED_URL=str(feed),
        URLHAUS_BATCH_SIZE=str(BATCH),
        URLHAUS_TLP_LEVEL="red",
        PYTHONPATH=str(REPO),
    )
    return env


def _run(platform: StubOpenCTI, feed: Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "example_connector"],
        cwd=cwd,
        env=_env(platform, feed),
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )


def test_scheduled_run_delivers_batches_as_works_and_saves_the_cursor(
    stub: StubOpenCTI, tmp_path: Path
) -> None:
    rows = make_feed_rows(ROWS)
    feed = write_feed(tmp_path / "feed.csv", rows)
    done = _run(stub, feed, tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert stub.token not in done.stdout + done.stderr

    works = stub.works_list()
    assert len(works) == 3  # ceil(60 / 25)
    assert all(w.closed and not w.in_error for w in works), works
    expected_cursor = max(r[1] for r in rows).replace(" ", "T") + "Z"
    assert expected_cursor in str(stub.state_dict()), stub.state_dict()

    # pycti's splitter sends one message per object, in dependency order
    red = MarkingDefinition.generate_id("TLP", "TLP:RED")
    sent = [obj for m in drain_queue(stub.amqp_url, stub.push_queue) for obj in m.objects]
    sent_ids = {obj["id"] for obj in sent}
    indicators = [obj for obj in sent if obj["type"] == "indicator"]
    assert {i["external_references"][0]["external_id"] for i in indicators} == {r[0] for r in rows}
    for indicator in indicators:
        assert indicator["object_marking_refs"] == [red]  # TLP:RED kept on every indicator
        assert indicator["created_by_ref"] in sent_ids
    assert red in sent_ids
    assert sum(obj["type"] == "relationship" for obj in sent) == ROWS

    again = _run(stub, feed, tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    assert len(stub.works_list()) == 3  # nothing new: no work opened
    assert drain_queue(stub.amqp_url, stub.push_queue) == []
    assert STATE_KEY in str(stub.state_dict())


def test_unreadable_feed_is_logged_and_left_for_the_next_run(
    stub: StubOpenCTI, tmp_path: Path
) -> None:
    done = _run(stub, tmp_path / "missing.csv", tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "URLhaus run skipped, the next run retries: cannot open feed file" in done.stderr
    assert stub.works_list() == []
    assert STATE_KEY not in str(stub.state_dict())


def test_sigterm_between_scheduled_runs_exits_0(stub: StubOpenCTI, tmp_path: Path) -> None:
    feed = write_feed(tmp_path / "feed.csv", make_feed_rows(10))
    proc = subprocess.Popen(
        [sys.executable, "-m", "example_connector"],
        cwd=tmp_path,
        env=_env(stub, feed, period="PT1H"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        stub.wait_for(lambda: STATE_KEY in str(stub.state_dict()), "the first run", timeout=90)
        assert proc.poll() is None  # scheduled: waiting for the next run
        proc.send_signal(signal.SIGTERM)
        _out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err[-3000:]
    assert all(w.closed for w in stub.works_list())
