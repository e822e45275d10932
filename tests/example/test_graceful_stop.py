"""SIGTERM / Ctrl-C during an offline run: exit 0, cursor saved, nothing half-written."""

from __future__ import annotations

import json
import math
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from connector_batching.local import LocalWorkManager
from example_connector.connector import STATE_KEY

from .conftest import REPO, make_feed_rows, write_feed

ROWS = 400
BATCH = 25
PAUSE_AT = 3 * BATCH + 7  # mid-batch: the 4th batch holds 7 rows when the signal lands


def _wait_for(path: Path, proc: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + 90
    while not path.exists():
        if proc.poll() is not None:
            out, err = proc.communicate()
            pytest.fail(f"connector exited early ({proc.returncode}):\n{out}\n{err}")
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail("connector never reached the pause point")
        time.sleep(0.02)


def _start_pausing(
    tmp_path: Path, feed: Path, pause_at: int
) -> tuple[subprocess.Popen[str], list[str], dict[str, str], Path]:
    """Start an offline run that pauses at row ``pause_at``; returns once it is paused."""
    out = tmp_path / "out"
    ready, go = tmp_path / "ready", tmp_path / "go"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("URLHAUS_", "CONNECTOR_"))}
    env.update(
        PAUSE_AT_ROW=str(pause_at),
        PAUSE_READY=str(ready),
        PAUSE_GO=str(go),
        PYTHONPATH=str(REPO),
    )
    args = ["--offline", str(out), "--feed", str(feed), "--batch-size", str(BATCH)]
    proc = subprocess.Popen(
        [sys.executable, str(Path(__file__).with_name("pausing_run.py")), *args],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    _wait_for(ready, proc)
    return proc, args, env, go


def _run_cli(args: list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """The offline CLI to completion, output captured."""
    return subprocess.run(
        [sys.executable, "-m", "example_connector", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _indicator_row_ids(out: Path) -> list[str]:
    ids = []
    for path in sorted(out.glob("*.json")):
        bundle = json.loads(path.read_text("utf-8"))
        ids += [
            o["external_references"][0]["external_id"]
            for o in bundle["objects"]
            if o["type"] == "indicator"
        ]
    return ids


def test_a_crash_inside_rows_of_one_second_loses_none(tmp_path: Path) -> None:
    rows = make_feed_rows(60)
    tie = rows[20][1]
    for row in rows[20:32]:  # 12 rows added in the same second, across the 25-row boundary
        row[1] = tie
    feed = write_feed(tmp_path / "feed.csv", rows)
    proc, args, env, _go = _start_pausing(tmp_path, feed, pause_at=28)
    proc.kill()  # SIGKILL: no flush, no cleanup
    proc.communicate(timeout=60)
    out = tmp_path / "out"
    with LocalWorkManager(out) as manager:
        cursor = manager.get_state(STATE_KEY)
    assert cursor is None or cursor < tie.replace(" ", "T") + "Z"  # never inside the second
    assert not list(out.glob("*.part")) and not list(out.glob(".*"))

    env.pop("PAUSE_AT_ROW")
    done = _run_cli(args, tmp_path, env)
    assert done.returncode == 0, done.stderr
    assert set(_indicator_row_ids(out)) == {r[0] for r in rows}  # every row, the tie included


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_signal_mid_run_flushes_saves_cursor_and_exits_0(
    tmp_path: Path, signum: signal.Signals
) -> None:
    rows = make_feed_rows(ROWS)
    feed = write_feed(tmp_path / "feed.csv", rows)
    out = tmp_path / "out"
    ready, go = tmp_path / "ready", tmp_path / "go"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("URLHAUS_", "CONNECTOR_"))}
    env.update(
        PAUSE_AT_ROW=str(PAUSE_AT),
        PAUSE_READY=str(ready),
        PAUSE_GO=str(go),
        PYTHONPATH=os.pathsep.join([str(REPO), str(Path(__file__).parent)]),
    )
    args = ["--offline", str(out), "--feed", str(feed), "--batch-size", str(BATCH)]
    proc = subprocess.Popen(
        [sys.executable, str(Path(__file__).with_name("pausing_run.py")), *args],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    _wait_for(ready, proc)
    proc.send_signal(signum)
    go.touch()
    out_text, err_text = proc.communicate(timeout=120)
    assert proc.returncode == 0, err_text
    assert "stopped early" in out_text
    assert f"{signal.Signals(signum).name} received" in err_text

    # exactly the rows up to the pause point were delivered, oldest first
    oldest_first = sorted(rows, key=lambda r: (r[1], int(r[0])))
    delivered = oldest_first[:PAUSE_AT]
    assert not list(out.glob("*.part")) and not list(out.glob(".*"))
    paths = sorted(out.glob("*.json"))
    assert len(paths) == math.ceil(PAUSE_AT / BATCH)
    row_ids = []
    for path in paths:
        bundle = json.loads(path.read_text("utf-8"))  # complete, parseable files
        row_ids += [
            o["external_references"][0]["external_id"]
            for o in bundle["objects"]
            if o["type"] == "indicator"
        ]
    assert sorted(row_ids) == sorted(r[0] for r in delivered)
    with LocalWorkManager(out) as manager:
        assert manager.get_state(STATE_KEY) == delivered[-1][1].replace(" ", "T") + "Z"
        assert all(w.status == "complete" for w in manager.list_works())
    db = sqlite3.connect(out / "state.db")
    try:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    finally:
        db.close()

    # the next run picks up exactly where the stopped one left off
    env.pop("PAUSE_AT_ROW")
    done = _run_cli(args, tmp_path, env)
    assert done.returncode == 0, done.stderr
    all_ids = []
    for path in sorted(out.glob("*.json")):
        bundle = json.loads(path.read_text("utf-8"))
        all_ids += [
            o["external_references"][0]["external_id"]
            for o in bundle["objects"]
            if o["type"] == "indicator"
        ]
    assert sorted(all_ids) == sorted(r[0] for r in rows)  # each row once, none lost


@pytest.mark.parametrize(
    "variable", ["CONNECTOR_BATCHING_OUTPUT_DIRECTORY", "URLHAUS_OFFLINE_DIRECTORY"]
)
def test_file_output_runs_on_schedule_says_so_and_stops_on_sigterm(
    tmp_path: Path, variable: str
) -> None:
    rows = make_feed_rows(30)
    feed = write_feed(tmp_path / "feed.csv", rows)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("URLHAUS_", "CONNECTOR_"))}
    env.update(
        {variable: str(tmp_path / "data")},  # the variable or its earlier name (an alias)
        OPENCTI_URL="http://opencti.test:8080",  # set, but unused: said at WARNING
        URLHAUS_CSV_URL=str(feed),
        CONNECTOR_DURATION_PERIOD="PT1H",
        PYTHONPATH=str(REPO),
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "example_connector"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    printed = []
    for line in proc.stdout:  # the first run's summary, then the wait for the next run
        printed.append(line)
        if line.startswith("rate"):
            break
    assert any(line.startswith("rows delivered") and "30 of 30" in line for line in printed)
    assert proc.poll() is None  # waiting for the next run, not exited
    proc.send_signal(signal.SIGTERM)
    _out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    (warning,) = [line for line in err.splitlines() if "File output configured" in line]
    assert "WARNING" in warning and "nothing is sent to OpenCTI" in warning
    assert "OPENCTI_URL unused" in warning
    with LocalWorkManager(tmp_path / "data") as manager:
        assert manager.get_state(STATE_KEY) == max(r[1] for r in rows).replace(" ", "T") + "Z"
