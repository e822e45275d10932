"""Dead letters in the example connector: failed rows survive the run and go first next time."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from connector_batching.local import LocalWorkManager
from example_connector.__main__ import DEAD_LETTERS_FILE, main
from example_connector.connector import STATE_KEY, URLhausConnector
from example_connector.settings import load_settings

from .conftest import (
    assert_reference_complete,
    dead_letter_count,
    indicator_row_ids,
    iso_z,
    latest,
    make_feed_rows,
    read_state,
    read_works,
    record,
    summary_table,
    write_feed,
)

ROWS = 200
BATCH = 20
FAILING_SENDS = (3, 7)  # the 3rd and the 7th batch fail for good


class FailingSends(LocalWorkManager):
    """A ``LocalWorkManager`` whose chosen ``send_bundle`` calls raise (a full disk, say)."""

    def __init__(self, directory: Path, failing: Sequence[int]) -> None:
        super().__init__(directory)
        self.failing = set(failing)
        self.sends = 0

    def send_bundle(self, work_id: str, objects: Sequence[Any]) -> None:
        self.sends += 1
        if self.sends in self.failing:
            raise OSError(28, "No space left on device (injected)")
        super().send_bundle(work_id, objects)


def test_failed_batches_are_kept_and_resent_first_by_the_next_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rows = make_feed_rows(ROWS)
    feed = write_feed(tmp_path / "feed.csv", rows, malformed=False)
    out = tmp_path / "out"
    oldest_first = sorted(rows, key=lambda r: (r[1], int(r[0])))
    failed = [row for n in FAILING_SENDS for row in oldest_first[(n - 1) * BATCH : n * BATCH]]
    failed_ids = [r[0] for r in failed]

    # Run 1: a manager that fails two batches for good (no retries).
    settings = load_settings(environ={"URLHAUS_FEED_URL": str(feed), "URLHAUS_MAX_RETRIES": "0"})
    with FailingSends(out, FAILING_SENDS) as manager:
        connector = URLhausConnector(
            settings,
            work_manager=manager,
            logger=logging.getLogger("test"),
            dead_letter_path=out / DEAD_LETTERS_FILE,
        )
        first = connector.run_once(batch_size=BATCH)
    assert first.failed_batches == 2 and first.rows_failed == 2 * BATCH
    assert first.rows_delivered == ROWS - 2 * BATCH
    assert dead_letter_count(out / DEAD_LETTERS_FILE) == 2 * BATCH
    assert sorted(indicator_row_ids(out)) == sorted(
        r[0] for r in oldest_first if r[0] not in set(failed_ids)
    )
    works = read_works(out)
    assert [s for s, _ in works].count("error") == 2 and "in_progress" not in dict(works)
    assert all("No space left" in (m or "") for s, m in works if s == "error")
    # the cursor is held just before the first failed row
    held = read_state(out, STATE_KEY)
    assert held is not None and held < iso_z(failed[0][1])
    assert held > iso_z(oldest_first[(FAILING_SENDS[0] - 1) * BATCH - 1][1])
    delivered_before = len(list(out.glob("*.json")))

    # Run 2: the real CLI on a healthy LocalWorkManager, same directory, same feed.
    code = main(["--offline", str(out), "--feed", str(feed), "--batch-size", str(BATCH)])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    table = summary_table(captured.out)
    assert table["dead letters"] == f"{2 * BATCH} re-sent, 0 remaining"
    assert table["rows failed"] == "0"
    new_files = sorted(out.glob("*.json"))[delivered_before:]
    resent = []
    for path in new_files:
        resent.append(indicator_row_ids_of(path))
    # the first bundles of the healthy run are exactly the dead letters, in order
    assert resent[0] + resent[1] == failed_ids
    # ... and each failed row goes out once in that run (the feed's copy is skipped)
    second_run_ids = [i for ids in resent for i in ids]
    assert sorted(i for i in second_run_ids if i in set(failed_ids)) == sorted(failed_ids)
    assert dead_letter_count(out / DEAD_LETTERS_FILE) == 0
    assert read_state(out, STATE_KEY) == latest(rows)
    assert set(indicator_row_ids(out)) == {r[0] for r in rows}
    assert "in_progress" not in dict(read_works(out))
    # a new process re-sending dead letters first has not seen the author yet: the
    # connector puts it (and the marking) in every batch
    assert_reference_complete(out)

    # Run 3: nothing left to do.
    assert main(["--offline", str(out), "--feed", str(feed)]) == 0
    table = summary_table(capsys.readouterr().out)
    assert table["dead letters"] == "0 re-sent, 0 remaining"
    assert table["bundles written"] == "0"
    record(
        "02",
        "`send_bundle` raises (disk full) on 2 of 10 batches, `max_retries=0`",
        "both batches fail for good: works closed in error with the reason, 40 rows "
        "written to `dead_letters.db`, cursor held before the first of them, the other 8 "
        "batches delivered; the next run re-sends the 40 rows first (its first two "
        "bundles, reference-complete: author and marking included), skips the feed's "
        "copies of them, empties the store and ends at the latest row's date",
    )


def indicator_row_ids_of(path: Path) -> list[str]:
    import json

    bundle = json.loads(path.read_text("utf-8"))
    return [
        o["external_references"][0]["external_id"]
        for o in bundle["objects"]
        if o["type"] == "indicator"
    ]


def test_dead_letters_that_fail_again_stay_for_the_run_after(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rows = make_feed_rows(60)
    feed = write_feed(tmp_path / "feed.csv", rows, malformed=False)
    out = tmp_path / "out"
    settings = load_settings(environ={"URLHAUS_FEED_URL": str(feed), "URLHAUS_MAX_RETRIES": "0"})

    def run(failing: Sequence[int]) -> Any:
        with FailingSends(out, failing) as manager:
            return URLhausConnector(
                settings, work_manager=manager, dead_letter_path=out / DEAD_LETTERS_FILE
            ).run_once(batch_size=BATCH)

    first = run([2])  # rows 21-40 fail
    assert first.rows_failed == BATCH
    second = run([1])  # their re-send is the first batch: it fails again
    assert second.dead_letters_resent == 0 and second.dead_letters_remaining == BATCH
    assert dead_letter_count(out / DEAD_LETTERS_FILE) == BATCH
    oldest_first = sorted(rows, key=lambda r: (r[1], int(r[0])))
    held = read_state(out, STATE_KEY)
    assert held is not None and held < iso_z(oldest_first[BATCH][1])  # still held
    third = run([])
    assert third.dead_letters_resent == BATCH and third.dead_letters_remaining == 0
    assert read_state(out, STATE_KEY) == latest(rows)
    assert set(indicator_row_ids(out)) == {r[0] for r in rows}
    record(
        "03",
        "the dead letters' re-send fails again in the next run",
        "they stay in the store (attempts counted) and keep holding the cursor; the "
        "third, healthy run delivers them and the cursor reaches the latest row",
    )


def test_online_start_refuses_a_dead_letter_path_it_cannot_open(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    for name, value in {
        "OPENCTI_URL": "http://127.0.0.1:9",
        "OPENCTI_TOKEN": "0b7c4d2e-9f1a-4c3b-8e5d-000000000000",
        "CONNECTOR_ID": "0e0f6d28-5a3a-4c2e-9f50-7f3c1b2a9d11",
        "URLHAUS_DEAD_LETTER_PATH": str(blocker / "dead_letters.db"),
    }.items():
        monkeypatch.setenv(name, value)
    monkeypatch.chdir(tmp_path)
    assert main([]) == 2  # before any connection to the platform
    err = capsys.readouterr().err
    assert "URLHAUS_DEAD_LETTER_PATH (urlhaus.dead_letter_path): cannot open" in err
