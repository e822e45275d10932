"""`python -m example_connector` against OpenCTI: the real pycti helper and scheduler,
the stub OpenCTI API and the real RabbitMQ broker (fixtures from tests/integration)."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pycti import MarkingDefinition

from connector_batching.testing.stub_platform import StubOpenCTI, drain_queue
from example_connector.connector import STATE_KEY

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


class _ThreatStub(StubOpenCTI):
    """The stub platform, knowing one malware: the threat URLhaus rows tag as ``Mozi``."""

    MOZI = "malware--3c6d0f2a-4a64-5b9e-9a2b-0d6e1f6c7b10"


def _stix_domain_objects(stub: Any, variables: dict[str, Any]) -> dict[str, Any]:
    names = variables["filters"]["filters"][0]["values"]
    edges = [] if names != ["Mozi"] else [{"node": {"id": "x", "standard_id": _ThreatStub.MOZI}}]
    page = {"startCursor": None, "endCursor": None, "hasNextPage": False}
    page |= {"hasPreviousPage": False, "globalCount": len(edges)}
    return {"stixDomainObjects": {"edges": edges, "pageInfo": page}}


@pytest.fixture
def threat_stub(broker: str) -> Iterator[_ThreatStub]:
    server = _ThreatStub(broker)
    server.add_operation("StixDomainObjects", _stix_domain_objects)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def _json_lines(text: str) -> list[dict[str, Any]]:
    lines = []
    for line in text.splitlines():
        with contextlib.suppress(ValueError):
            record = json.loads(line)
            if isinstance(record, dict):
                lines.append(record)
    return lines


def test_an_upstream_environment_block_does_what_it_did_upstream(
    threat_stub: _ThreatStub, tmp_path: Path
) -> None:
    """Upstream's variables and state, pointed at this connector: the same rows (offline ones
    left out as asked), the same score, threat relationships, continuing upstream's cursor."""
    stub = threat_stub
    rows = make_feed_rows(ROWS)
    feed = write_feed(tmp_path / "feed.csv", rows)
    oldest_first = sorted(rows, key=lambda r: (r[1], int(r[0])))
    upstream_cursor = dt.datetime.fromisoformat(oldest_first[9][1]).replace(tzinfo=dt.UTC)
    stub.state = json.dumps(
        {"last_run": "2025-01-01 00:00:00", "last_processed_entry": upstream_cursor.timestamp()}
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("URLHAUS_", "CONNECTOR_"))}
    env.update(
        OPENCTI_URL=stub.url,
        OPENCTI_TOKEN=stub.token,
        CONNECTOR_ID=stub.connector_id,
        CONNECTOR_TYPE="EXTERNAL_IMPORT",
        CONNECTOR_NAME="Abuse.ch URLhaus",
        CONNECTOR_SCOPE="urlhaus",
        CONNECTOR_CONFIDENCE_LEVEL="40",
        CONNECTOR_UPDATE_EXISTING_DATA="false",
        CONNECTOR_LOG_LEVEL="info",
        CONNECTOR_DURATION_PERIOD="PT0S",  # run once (URLHAUS_INTERVAL is then ignored)
        URLHAUS_CSV_URL=str(feed),
        URLHAUS_DEFAULT_X_OPENCTI_SCORE="65",
        URLHAUS_IMPORT_OFFLINE="false",
        URLHAUS_THREATS_FROM_LABELS="true",
        URLHAUS_INTERVAL="3",
        OPENCTI_JSON_LOGGING="true",
        PYTHONPATH=str(REPO),
    )
    done = subprocess.run(
        [sys.executable, "-m", "example_connector"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert stub.token not in done.stdout + done.stderr

    expected = [r for r in oldest_first[10:] if r[3] != "offline"]
    sent = [obj for m in drain_queue(stub.amqp_url, stub.push_queue) for obj in m.objects]
    indicators = [o for o in sent if o["type"] == "indicator"]
    observables = {o["id"]: o for o in sent if o["type"] == "url"}
    assert sorted(i["external_references"][0]["external_id"] for i in indicators) == sorted(
        r[0] for r in expected
    )
    assert {i["x_opencti_score"] for i in indicators} == {65}
    assert {o["x_opencti_score"] for o in observables.values()} == {65}
    links = [o for o in sent if o.get("target_ref") == stub.MOZI]
    tagged = [r for r in expected if "Mozi" in r[6].split(",")]
    assert tagged and len(links) == 2 * len(tagged)
    assert {o["relationship_type"] for o in links} == {"indicates", "related-to"}
    lookups = [
        c.variables["filters"]["filters"][0]["values"][0]
        for c in stub.calls_of("StixDomainObjects")
    ]
    assert len(lookups) == len(set(lookups))  # each tag asked once per run

    names = [w.name for w in stub.works_list()]
    label = names[0].split(" — ")[0]
    assert label.startswith("URLhaus run @ 20") and label.endswith("Z")
    assert names == [f"{label} — batch #{n}" for n in range(1, len(names) + 1)]
    state = stub.state_dict()
    assert state[STATE_KEY] == max(r[1] for r in expected).replace(" ", "T") + "Z"
    assert state["last_processed_entry"] == upstream_cursor.timestamp()  # left as it was

    records = _json_lines(done.stderr + done.stdout)
    summaries = [r for r in records if str(r.get("message", "")).startswith("URLhaus run done")]
    assert len(summaries) == 1, summaries  # the summary, once
    assert summaries[0]["attributes"]["rows_delivered"] == len(expected)
    assert summaries[0]["attributes"]["cursor_source"] == "last_processed_entry"
    notices = [r for r in records if "URLHAUS_INTERVAL" in str(r.get("message"))]
    assert notices and notices[0]["level"] == "WARNING"
    assert "deprecated" in notices[0]["message"]
