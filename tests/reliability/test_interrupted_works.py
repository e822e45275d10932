"""Works a killed process left "in progress" are closed ("interrupted") at the next start."""

from __future__ import annotations

import subprocess
from pathlib import Path

from connector_batching.local import LocalWorkManager
from example_connector.connector import STATE_KEY

from .conftest import (
    child_env,
    cli,
    indicator_row_ids,
    latest,
    make_feed_rows,
    read_bundle_records,
    read_state,
    read_works,
    record,
    run_until,
    summary_table,
    write_feed,
)


def test_opening_closes_works_left_in_progress(tmp_path: Path) -> None:
    with LocalWorkManager(tmp_path) as manager:
        open_work = manager.initiate_work("Batch #1", "indicator")
        done = manager.initiate_work("Batch #2", "indicator")
        manager.work_to_process(done)
    with LocalWorkManager(tmp_path, close_interrupted=False) as manager:
        assert manager.interrupted_works_closed == 0
        assert manager.get_work(open_work).status == "in_progress"
    with LocalWorkManager(tmp_path) as manager:
        assert manager.interrupted_works_closed == 1
        work = manager.get_work(open_work)
        assert (work.status, work.error_message) == ("error", "interrupted")
        assert work.completed_at is not None
        assert manager.get_work(done).status == "complete"
        assert manager.close_interrupted_works() == 0  # idempotent


def _kill_at(tmp_path: Path, args: list[str], event: str, n: int) -> None:
    """Run the CLI until its ``n``-th ``event`` (see ``slow_run.py``), then SIGKILL it."""
    ended = run_until(tmp_path, args, event, n)
    assert ended is None, f"the run ended before {event} {n} ({ended and ended.returncode})"


def test_sigkill_mid_send_leaves_a_work_that_the_next_start_closes(tmp_path: Path) -> None:
    rows = make_feed_rows(100)
    feed = write_feed(tmp_path / "feed.csv", rows, malformed=False)
    out = tmp_path / "out"
    args = ["--offline", str(out), "--feed", str(feed), "--batch-size", "10"]
    _kill_at(tmp_path, args, "send_bundle", 4)

    works = read_works(out)
    assert [s for s, _ in works] == ["complete"] * 3 + ["in_progress"]
    oldest_first = sorted(rows, key=lambda r: (r[1], int(r[0])))
    assert read_state(out, STATE_KEY) == latest(oldest_first[:30])

    done = subprocess.run(
        cli(*args), env=child_env(), cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert "closed 1 works an interrupted run left in progress" in done.stderr
    assert summary_table(done.stdout)["rows delivered"] == "70 of 70"
    works = read_works(out)
    assert works[3] == ("error", "interrupted")
    assert "in_progress" not in dict(works)
    assert sorted(indicator_row_ids(out)) == sorted(r[0] for r in rows)  # each row once
    assert read_state(out, STATE_KEY) == latest(rows)
    record(
        "05",
        "SIGKILL while batch 4 of 10 is being sent (its work open, its file not written)",
        "state.db shows batches 1-3 complete, batch 4's work in progress and the cursor "
        "at batch 3's last row; the next start closes that work (status error, "
        "`interrupted`) and delivers rows 31-100, each row exactly once overall",
    )


def test_sigkill_after_the_file_before_its_record_resends_that_batch_once(
    tmp_path: Path,
) -> None:
    rows = make_feed_rows(100)
    feed = write_feed(tmp_path / "feed.csv", rows, malformed=False)
    out = tmp_path / "out"
    args = ["--offline", str(out), "--feed", str(feed), "--batch-size", "10"]
    _kill_at(tmp_path, args, "write", 4)

    # batch 4's file is complete, but its record and the cursor never got committed
    oldest_first = sorted(rows, key=lambda r: (r[1], int(r[0])))
    assert sorted(indicator_row_ids(out)) == sorted(r[0] for r in oldest_first[:40])
    assert len(read_bundle_records(out)) == 3
    assert [s for s, _ in read_works(out)] == ["complete"] * 3 + ["in_progress"]
    assert read_state(out, STATE_KEY) == latest(oldest_first[:30])

    done = subprocess.run(
        cli(*args), env=child_env(), cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    # the file without a record was taken back at the start, and batch 4 sent again
    assert sorted(indicator_row_ids(out)) == sorted(r[0] for r in rows)  # each row once
    assert sorted(p.name for p in out.glob("*.json")) == sorted(read_bundle_records(out))
    assert read_works(out)[3] == ("error", "interrupted")
    assert read_state(out, STATE_KEY) == latest(rows)
    record(
        "05b",
        "SIGKILL after batch 4's bundle file is in place but before its record and the "
        "cursor are committed",
        "the file is complete (written atomically) but has no record in `state.db`; the "
        "next start removes it, closes the work as `interrupted` and, the cursor being at "
        "batch 3, sends batch 4's 10 rows again: each row is in exactly one bundle file, "
        "every file has its record",
    )
