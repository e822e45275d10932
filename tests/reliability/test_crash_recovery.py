"""SIGKILL at random points of a long offline run, restart, repeat; then a clean run.

The real CLI runs in a subprocess (through ``slow_run.py``, whose hooks on the
real ``LocalWorkManager`` stop it at a chosen event: the directory opened, a
work created, a send begun, a file written before its record, a work about to
be closed, a cursor about to be written).  The event and its occurrence come
from a seeded random, so a failure reproduces (``CRASH_SEED`` overrides the
seed); the kill lands on that event whatever the machine's speed.  After every
kill the directory is checked as a restarted process would find it; at the end
the union of the delivered rows must be the feed's good rows, with the cursor
at the latest of them.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
from collections import Counter
from pathlib import Path

from example_connector.connector import STATE_KEY

from .conftest import (
    assert_reference_complete,
    child_env,
    cli,
    dead_letter_count,
    indicator_row_ids,
    iso_z,
    latest,
    make_feed_rows,
    read_state,
    read_works,
    record,
    run_until,
    summary_table,
    write_feed,
)

SEED = int(os.environ.get("CRASH_SEED", "20261129"))
ROWS = 3000
BATCH = 40
KILLS = 6
#: Where a run can be killed (events of ``slow_run.py``) and which occurrences of
#: each: few enough that every run reaches them (a run sends at least 20 batches here).
KILL_POINTS: dict[str, tuple[int, int]] = {
    "open": (1, 1),
    "recover": (1, 1),
    "initiate_work": (1, 8),
    "send_bundle": (1, 8),
    "write": (1, 8),
    "work_to_process": (1, 8),
    "update_state": (1, 8),
}
#: With every 5th send failing: kill after the 5th send, so each run leaves dead letters.
KILL_POINTS_AFTER_A_FAILURE = {
    event: (6, 12) for event in ("initiate_work", "send_bundle", "write", "work_to_process")
}


def _feed_rows() -> list[list[str]]:
    rows = make_feed_rows(ROWS, seed=SEED)
    for n in range(25, ROWS, 25):  # every 25th row shares the second of the one before
        rows[n][1] = rows[n - 1][1]
    return rows


def _check_directory(out: Path, rows: list[list[str]]) -> list[str]:
    """What a restarted process would find: parseable files, a cursor passing no
    undelivered row.  Returns the delivered row ids."""
    delivered = indicator_row_ids(out)  # json.loads of each whole file
    cursor = read_state(out, STATE_KEY)
    if cursor is not None:
        covered = {r[0] for r in rows if iso_z(r[1]) <= cursor}
        missing = covered - set(delivered)
        assert not missing, f"cursor {cursor} passes undelivered rows {sorted(missing)[:5]}"
    return delivered


def _kill_repeatedly(
    rng: random.Random,
    tmp_path: Path,
    args: list[str],
    rows: list[list[str]],
    kills: int,
    kill_points: dict[str, tuple[int, int]],
    **env: str,
) -> list[str]:
    """Start the CLI ``kills`` times, SIGKILL each at an event chosen by ``rng``
    among ``kill_points`` (which event, which occurrence of it); returns the
    events, as ``event:N``."""
    out = Path(args[1])
    points: list[str] = []
    for _ in range(kills):
        event = rng.choice(sorted(kill_points))
        n = rng.randint(*kill_points[event])
        ended = run_until(tmp_path, args, event, n, **env)
        assert ended is None, f"the run ended before {event} {n}: {ended}"
        points.append(f"{event}:{n}")
        _check_directory(out, rows)
    return points


def test_random_sigkills_then_a_clean_run_deliver_every_row(tmp_path: Path) -> None:
    rng = random.Random(SEED)
    rows = _feed_rows()
    feed = write_feed(tmp_path / "feed.csv", rows)  # with the malformed rows
    out = tmp_path / "out"
    args = ["--offline", str(out), "--feed", str(feed), "--batch-size", str(BATCH)]
    points = _kill_repeatedly(rng, tmp_path, args, rows, KILLS, KILL_POINTS)
    killed = len(points)

    done = subprocess.run(
        cli(*args), env=child_env(), cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert summary_table(done.stdout)["rows failed"] == "0"

    delivered = _check_directory(out, rows)
    assert set(delivered) == {r[0] for r in rows}  # every good row, nothing else
    assert read_state(out, STATE_KEY) == latest(rows)
    works = read_works(out)
    assert "in_progress" not in dict(works)
    interrupted = [w for w in works if w[0] == "error"]
    assert all(message == "interrupted" for _, message in interrupted)
    assert len(interrupted) <= killed
    assert not list(out.glob(".*")) and not list(out.glob("*.part"))  # no temp file left
    for path in out.glob("*.json"):
        assert json.loads(path.read_text("utf-8"))["objects"]  # complete, non-empty
    assert_reference_complete(out)
    # a kill costs at most the batch in flight: duplicates stay under one batch per kill
    per_batch = 2 * BATCH  # a batch of BATCH groups; a group holds at most 2 rows here
    duplicates = sum(n - 1 for n in Counter(delivered).values())
    assert duplicates <= killed * per_batch
    record(
        "06",
        f"SIGKILL at {KILLS} points of a {ROWS}-row run, batches of {BATCH}, restarted "
        "each time, then a clean run; each point an event chosen at random (seeded): the "
        "directory opened, its recovery, a work created, a send begun, a file written "
        "before its record, a work about to be closed, a cursor about to be written",
        "after each kill every bundle file parses and the cursor passes no undelivered "
        "row; each restart closes the works left in progress (`interrupted`) and resumes "
        "after the last checkpoint, re-sending at most the batch in flight; the clean "
        "run ends with every good row delivered, no work in progress, no temporary file, "
        "cursor at the latest row",
    )


def test_random_sigkills_while_batches_fail_and_dead_letters_are_resent(tmp_path: Path) -> None:
    """Every 5th send fails for good (no retries): dead letters pile up, then each
    restart re-sends them first — and gets killed again, mid-way, at random."""
    rng = random.Random(SEED + 1)
    rows = _feed_rows()[:1500]
    feed = write_feed(tmp_path / "feed.csv", rows, malformed=False)
    out = tmp_path / "out"
    args = ["--offline", str(out), "--feed", str(feed), "--batch-size", str(BATCH)]
    _kill_repeatedly(
        rng,
        tmp_path,
        args,
        rows,
        4,
        KILL_POINTS_AFTER_A_FAILURE,
        FAIL_EVERY="5",
        URLHAUS_MAX_RETRIES="0",
    )
    assert dead_letter_count(out / "dead_letters.db") > 0  # failures were kept

    done = subprocess.run(
        cli(*args), env=child_env(), cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    table = summary_table(done.stdout)
    assert table["dead letters"].endswith(", 0 remaining")
    assert dead_letter_count(out / "dead_letters.db") == 0
    delivered = _check_directory(out, rows)
    assert set(delivered) == {r[0] for r in rows}
    assert read_state(out, STATE_KEY) == latest(rows)
    works = read_works(out)
    assert "in_progress" not in dict(works)
    assert {m.split(":")[0] for s, m in works if s == "error" and m} <= {
        "interrupted",
        "OSError",
    }
    assert_reference_complete(out)
    record(
        "07",
        "every 5th send fails for good (`max_retries=0`) and SIGKILL at 4 events chosen at "
        "random (seeded, after the 5th send) of a 1500-row run, restarted each time, then "
        "a clean run",
        "failed batches go to `dead_letters.db` and hold the cursor; each restart re-sends "
        "them first (and may be killed while doing it: they stay stored until delivered); "
        "the clean run empties the store, every row is delivered, no work in progress, "
        "cursor at the latest row",
    )
