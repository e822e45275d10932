"""LocalWorkManager under faults: whatever step of a send fails, one batch is one file.

Each step of ``send_bundle`` (temporary file, its ``fsync``, ``os.replace``, the
directory ``fsync``, the SQLite ``COMMIT``) is made to fail once; the send must
raise, leave no bundle file and no record, and the retry must leave exactly one
bundle file for the batch, recorded in ``state.db``.  A process killed between
the rename and the commit leaves a complete file without a record: reopening the
directory takes it back, so the re-sent batch is not in two files either.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import stat
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import stix2

from connector_batching import GenericBatchProcessor, GenericBatchProcessorConfig
from connector_batching.local import LocalWorkManager

REPO = Path(__file__).resolve().parents[2]


def _indicator(n: int) -> stix2.Indicator:
    return stix2.Indicator(
        id=f"indicator--{n:08d}-0000-4000-8000-000000000000",
        pattern=f"[url:value = 'http://h{n}.test/']",
        pattern_type="stix",
        valid_from="2024-01-01T00:00:00Z",
    )


def _is_directory(fd: int) -> bool:
    return stat.S_ISDIR(os.fstat(fd).st_mode)


def _recorded(directory: Path) -> list[tuple[str, str, int]]:
    """(work id, file name, object count) of every bundle recorded in ``state.db``."""
    db = sqlite3.connect(directory / "state.db")
    try:
        rows = db.execute(
            "SELECT work_id, file_name, object_count FROM bundles ORDER BY seq"
        ).fetchall()
    finally:
        db.close()
    return [(str(w), str(f), int(n)) for w, f, n in rows]


def _everything_in(directory: Path) -> list[str]:
    """Every entry of ``directory`` but the SQLite files (temporary files included)."""
    return sorted(p.name for p in directory.iterdir() if not p.name.startswith("state.db"))


class _FailOnce:
    """Calls ``real`` except the first time ``applies`` holds: then raises ``OSError``."""

    def __init__(self, real: Callable[..., Any], applies: Callable[..., bool]) -> None:
        self.real = real
        self.applies = applies
        self.fired = 0

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if not self.fired and self.applies(*args, **kwargs):
            self.fired += 1
            raise OSError(5, "Input/output error (injected)")
        return self.real(*args, **kwargs)


class _CommitFailsOnce:
    """A connection proxy whose first COMMIT after ``arm()`` fails."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db
        self.armed = False
        self.fired = 0

    def execute(self, sql: str, *args: Any) -> sqlite3.Cursor:
        if sql == "COMMIT" and self.armed:
            self.armed = False
            self.fired += 1
            raise sqlite3.OperationalError("disk I/O error (injected)")
        return self.db.execute(sql, *args)

    def close(self) -> None:
        self.db.close()


def _inject(
    step: str, monkeypatch: pytest.MonkeyPatch, manager: LocalWorkManager
) -> Callable[[], int]:
    """Make ``step`` of the next send fail once; returns how many times it fired."""
    if step == "commit":
        proxy = _CommitFailsOnce(manager._db)  # type: ignore[arg-type]
        manager._db = proxy  # type: ignore[assignment]
        proxy.armed = True
        return lambda: proxy.fired
    fault: _FailOnce
    if step == "temporary file":
        fault = _FailOnce(tempfile.mkstemp, lambda *a, **k: True)
        monkeypatch.setattr(tempfile, "mkstemp", fault)
    elif step == "file fsync":
        fault = _FailOnce(os.fsync, lambda fd: not _is_directory(fd))
        monkeypatch.setattr(os, "fsync", fault)
    elif step == "rename":
        fault = _FailOnce(os.replace, lambda *a, **k: True)
        monkeypatch.setattr(os, "replace", fault)
    elif step == "directory fsync":
        fault = _FailOnce(os.fsync, _is_directory)
        monkeypatch.setattr(os, "fsync", fault)
    else:  # pragma: no cover - a typo in the parameters
        raise AssertionError(step)
    return lambda: fault.fired


STEPS = ["temporary file", "file fsync", "rename", "directory fsync", "commit"]


@pytest.mark.parametrize("step", STEPS)
def test_a_failed_send_then_its_retry_leave_one_recorded_file(
    step: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    objects = [_indicator(1), _indicator(2)]
    with LocalWorkManager(tmp_path) as manager:
        work_id = manager.initiate_work("Batch #1", "indicator")
        fired = _inject(step, monkeypatch, manager)
        with pytest.raises((OSError, sqlite3.Error)):
            manager.send_bundle(work_id, objects)
        assert fired() == 1
        # the failed send left nothing: no file, no temporary file, no record
        assert _everything_in(tmp_path) == []
        assert _recorded(tmp_path) == []
        assert manager.get_work(work_id).bundle_count == 0

        manager.send_bundle(work_id, objects)  # the retry, same work
        assert fired() == 1
        files = _everything_in(tmp_path)
        assert len(files) == 1, files
        assert _recorded(tmp_path) == [(work_id, files[0], 2)]
        bundle = json.loads((tmp_path / files[0]).read_text("utf-8"))
        assert [o["id"] for o in bundle["objects"]] == [o.id for o in objects]
        work = manager.get_work(work_id)
        assert (work.bundle_count, work.object_count) == (1, 2)


def test_directory_fsync_failing_after_the_rename_is_retried_by_the_processor(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The case reported: the rename done, the directory fsync fails, the processor retries."""
    fault = _FailOnce(os.fsync, _is_directory)
    monkeypatch.setattr(os, "fsync", fault)
    config = GenericBatchProcessorConfig(
        batch_size=3,
        work_name_template="Batch #{batch_num}",
        state_key="cursor",
        entity_type="indicator",
        display_name="indicators",
        max_retries=1,
        retry_delay=0.0,
    )
    with LocalWorkManager(tmp_path) as manager:
        with GenericBatchProcessor(config, manager) as processor:
            processor.add_items([_indicator(n) for n in range(1, 4)])
        assert fault.fired == 1
        assert processor.get_statistics()["retries"] == 1
        files = _everything_in(tmp_path)
        assert len(files) == 1, files  # the batch is in one file ...
        (work,) = manager.list_works()
        assert _recorded(tmp_path) == [(work.id, files[0], 3)]  # ... and that file is recorded
        assert (work.status, work.bundle_count) == ("complete", 1)


def test_a_file_that_could_not_be_taken_back_is_removed_at_the_next_open(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The directory fsync fails and so does the unlink of the file: the file stays,
    without a record, until the directory is opened again."""
    real_unlink = os.unlink

    def unlink(path: Any, *args: Any, **kwargs: Any) -> None:
        if str(path).endswith(".json"):  # the bundle file cannot be removed (EIO)
            raise OSError(5, "Input/output error (injected)")
        real_unlink(path, *args, **kwargs)

    monkeypatch.setattr(os, "fsync", _FailOnce(os.fsync, _is_directory))
    monkeypatch.setattr(os, "unlink", unlink)
    with LocalWorkManager(tmp_path) as manager:
        work_id = manager.initiate_work("Batch #1", "indicator")
        with pytest.raises(OSError):
            manager.send_bundle(work_id, [_indicator(1)])
        assert len(manager.bundle_paths()) == 1  # complete, but without a record
        assert _recorded(tmp_path) == []
    monkeypatch.undo()
    with LocalWorkManager(tmp_path) as manager:
        assert manager.unrecorded_files_removed == 1
        assert manager.bundle_paths() == []
        assert manager.get_work(work_id).status == "error"  # closed as interrupted


_KILLED_AFTER_RENAME = """
import os, signal, stat, sys
import stix2
from connector_batching.local import LocalWorkManager

real_fsync = os.fsync
def fsync(fd):
    if stat.S_ISDIR(os.fstat(fd).st_mode) and kill[0]:
        os.kill(os.getpid(), signal.SIGKILL)  # the file is in place, its record is not
    real_fsync(fd)
os.fsync = fsync
kill = [False]
manager = LocalWorkManager(sys.argv[1])
indicator = lambda n: stix2.Indicator(
    id=f"indicator--{n:08d}-0000-4000-8000-000000000000",
    pattern=f"[url:value = 'http://h{n}.test/']", pattern_type="stix",
    valid_from="2024-01-01T00:00:00Z",
)
first = manager.initiate_work("Batch #1", "indicator")
manager.send_bundle(first, [indicator(1)])
manager.work_to_process(first)
second = manager.initiate_work("Batch #2", "indicator")
print(second, flush=True)
kill[0] = True
manager.send_bundle(second, [indicator(2)])
"""


@pytest.fixture
def killed_after_rename(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    """A directory a process left after a SIGKILL between the rename and the commit."""
    out = tmp_path / "out"
    done = subprocess.run(
        [sys.executable, "-c", _KILLED_AFTER_RENAME, str(out)],
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == -signal.SIGKILL, done.stderr[-2000:]
    assert len(list(out.glob("*.json"))) == 2  # batch 2's file is complete ...
    assert len(_recorded(out)) == 1  # ... but only batch 1's is recorded
    yield out, done.stdout.strip()


def test_a_file_left_without_its_record_by_a_kill_is_removed_at_the_next_open(
    killed_after_rename: tuple[Path, str],
) -> None:
    out, interrupted = killed_after_rename
    (out / "notes.json").write_text("{}", "utf-8")  # not a bundle file of ours: kept
    with LocalWorkManager(out) as manager:
        assert manager.unrecorded_files_removed == 1
        assert manager.interrupted_works_closed == 1
        assert manager.get_work(interrupted).status == "error"
        recorded = [name for _w, name, _n in _recorded(out)]
        assert sorted(p.name for p in manager.bundle_paths()) == sorted([*recorded, "notes.json"])
        # the next run sends batch 2 again: it ends up in one file, recorded
        again = manager.initiate_work("Batch #2", "indicator")
        manager.send_bundle(again, [_indicator(2)])
        assert len(_recorded(out)) == 2
        assert len(list(out.glob("*_w*.json"))) == 2


def test_a_directory_opened_without_closing_interrupted_works_keeps_unrecorded_files(
    killed_after_rename: tuple[Path, str],
) -> None:
    """``close_interrupted=False`` is for a directory another process may be writing:
    a file without a record may be that process's send, between rename and commit."""
    out, _interrupted = killed_after_rename
    with LocalWorkManager(out, close_interrupted=False) as manager:
        assert manager.unrecorded_files_removed == 0
        assert len(manager.bundle_paths()) == 2
