"""LocalWorkManager: atomic bundle files, works and state in SQLite, reopen, threads."""

from __future__ import annotations

import json
import os
import sqlite3
import threading
from pathlib import Path

import pytest
import stix2

from connector_batching.config import GenericBatchProcessorConfig
from connector_batching.local import LocalWorkManager
from connector_batching.processor import GenericBatchProcessor
from connector_batching.work_manager import (
    ErrorClosingWorkManager,
    StateReadingWorkManager,
    supports_error_closing,
)


def _indicator(n: int, **kw: object) -> stix2.Indicator:
    return stix2.Indicator(pattern=f"[url:value = 'http://h{n}.test/']", pattern_type="stix", **kw)


def test_send_bundle_writes_one_valid_bundle_file(tmp_path: Path) -> None:
    out = tmp_path / "nested" / "out"
    with LocalWorkManager(out) as manager:
        work_id = manager.initiate_work("Batch #1", "indicator")
        author = {
            "type": "identity",
            "spec_version": "2.1",
            "id": "identity--8a6f3e0c-1b2d-4e5f-9a7b-0c1d2e3f4a5b",
            "name": "Author",
            "created": "2020-01-01T00:00:00.000Z",
            "modified": "2020-01-01T00:00:00.000Z",
        }
        objects = [_indicator(1), author]
        manager.send_bundle(work_id, objects)
        manager.work_to_process(work_id)
        paths = manager.bundle_paths()
        assert len(paths) == 1 and paths[0].parent == out and paths[0].suffix == ".json"
        bundle = json.loads(paths[0].read_text("utf-8"))
        assert bundle["type"] == "bundle" and bundle["id"].startswith("bundle--")
        assert [o["id"] for o in bundle["objects"]] == [str(objects[0].id), objects[1]["id"]]
        (work,) = manager.list_works()
        assert (work.id, work.name, work.entity_type) == (work_id, "Batch #1", "indicator")
        assert (work.status, work.object_count, work.bundle_count) == ("complete", 2, 1)
        assert work.error_message is None and work.completed_at is not None
    assert not list(out.glob("*.part")) and not list(out.glob(".*"))


def test_works_closed_in_error_keep_the_reason(tmp_path: Path) -> None:
    with LocalWorkManager(tmp_path) as manager:
        ok = manager.initiate_work("ok", "indicator")
        bad = manager.initiate_work("bad", "indicator")
        open_ = manager.initiate_work("open", "indicator")
        manager.work_to_process(ok)
        manager.work_to_process(bad, in_error=True, message="send failed: boom")
        assert [w.status for w in manager.list_works()] == ["complete", "error", "in_progress"]
        assert manager.get_work(bad).error_message == "send failed: boom"
        assert [w.id for w in manager.list_works("in_progress")] == [open_]
        assert supports_error_closing(manager)
        assert isinstance(manager, ErrorClosingWorkManager)
        assert isinstance(manager, StateReadingWorkManager)


def test_unknown_work_is_refused_and_writes_nothing(tmp_path: Path) -> None:
    with LocalWorkManager(tmp_path) as manager:
        with pytest.raises(ValueError, match="unknown work id 'work--nope'"):
            manager.send_bundle("work--nope", [_indicator(1)])
        with pytest.raises(ValueError, match="unknown work id"):
            manager.work_to_process("work--nope")
        assert manager.bundle_paths() == []


def test_failed_write_leaves_no_file_and_no_record(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with LocalWorkManager(tmp_path) as manager:
        work_id = manager.initiate_work("w", "indicator")

        def broken_replace(src: str, dst: str) -> None:
            raise OSError(28, "No space left on device")

        monkeypatch.setattr(os, "replace", broken_replace)
        with pytest.raises(OSError, match="No space left"):
            manager.send_bundle(work_id, [_indicator(1)])
        monkeypatch.undo()
        assert sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith("state.db")) == []
        work = manager.get_work(work_id)
        assert (work.object_count, work.bundle_count) == (0, 0)
        # the retry of the same work succeeds and is the only file
        manager.send_bundle(work_id, [_indicator(1)])
        assert len(manager.bundle_paths()) == 1
        assert manager.get_work(work_id).bundle_count == 1


def test_unserialisable_objects_write_nothing(tmp_path: Path) -> None:
    with LocalWorkManager(tmp_path) as manager:
        work_id = manager.initiate_work("w", "indicator")
        with pytest.raises(TypeError):
            manager.send_bundle(work_id, [{"type": "x", "id": "x--1", "value": object()}])
        assert manager.bundle_paths() == []
        assert manager.get_work(work_id).object_count == 0


def test_empty_send_writes_no_file(tmp_path: Path) -> None:
    with LocalWorkManager(tmp_path) as manager:
        work_id = manager.initiate_work("w", "indicator")
        manager.send_bundle(work_id, [])
        assert manager.bundle_paths() == []


def test_state_round_trip_and_overwrite(tmp_path: Path) -> None:
    with LocalWorkManager(tmp_path) as manager:
        assert manager.get_state("cursor") is None
        manager.update_state("cursor", "2025-01-01T00:00:00Z")
        manager.update_state("cursor", "2025-01-02T00:00:00Z")
        manager.update_state("other", "2024-06-01T12:00:00Z")
        assert manager.get_state("cursor") == "2025-01-02T00:00:00Z"
        assert manager.get_states() == {
            "cursor": "2025-01-02T00:00:00Z",
            "other": "2024-06-01T12:00:00Z",
        }


def test_reopen_keeps_works_state_and_file_order(tmp_path: Path) -> None:
    with LocalWorkManager(tmp_path) as first:
        w1 = first.initiate_work("one", "indicator")
        first.send_bundle(w1, [_indicator(1)])
        first.work_to_process(w1)
        first.update_state("cursor", "2025-01-01T00:00:00Z")
    with LocalWorkManager(tmp_path) as second:
        assert second.get_state("cursor") == "2025-01-01T00:00:00Z"
        assert [w.id for w in second.list_works()] == [w1]
        w2 = second.initiate_work("two", "indicator")
        second.send_bundle(w2, [_indicator(2)])
        paths = second.bundle_paths()
        assert len(paths) == 2
        # names sort in write order across reopenings
        second_bundle = json.loads(paths[1].read_text("utf-8"))
        assert second_bundle["objects"][0]["pattern"] == "[url:value = 'http://h2.test/']"
        assert second.list_works()[1].seq > second.list_works()[0].seq


def test_state_db_uses_wal_and_is_readable_by_sqlite(tmp_path: Path) -> None:
    with LocalWorkManager(tmp_path) as manager:
        manager.update_state("k", "2025-01-01T00:00:00Z")
        db = sqlite3.connect(manager.state_db_path)
        try:
            assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
            assert db.execute("SELECT value FROM state WHERE key='k'").fetchone()[0] == (
                "2025-01-01T00:00:00Z"
            )
            assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        finally:
            db.close()


def test_closed_manager_refuses_calls(tmp_path: Path) -> None:
    manager = LocalWorkManager(tmp_path)
    manager.close()
    manager.close()  # idempotent
    assert "closed" in repr(manager)
    with pytest.raises(RuntimeError, match="closed"):
        manager.initiate_work("w", "indicator")
    with pytest.raises(RuntimeError, match="closed"):
        manager.get_state("k")


def test_threads_never_lose_or_mix_bundles(tmp_path: Path) -> None:
    threads_count, per_thread = 6, 15
    errors: list[BaseException] = []
    with LocalWorkManager(tmp_path) as manager:

        def worker(t: int) -> None:
            try:
                for i in range(per_thread):
                    work_id = manager.initiate_work(f"t{t}-{i}", "indicator")
                    manager.send_bundle(work_id, [_indicator(t * 1000 + i)])
                    manager.work_to_process(work_id)
                    manager.update_state(f"t{t}", f"2025-01-01T00:00:{i:02d}Z")
            except BaseException as exc:  # pragma: no cover - reported below
                errors.append(exc)

        threads = [threading.Thread(target=worker, args=(t,)) for t in range(threads_count)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert errors == []
        paths = manager.bundle_paths()
        assert len(paths) == len({p.name for p in paths}) == threads_count * per_thread
        patterns = {json.loads(p.read_text("utf-8"))["objects"][0]["pattern"] for p in paths}
        assert len(patterns) == threads_count * per_thread
        works = manager.list_works()
        assert len(works) == threads_count * per_thread
        assert all(w.status == "complete" and w.object_count == 1 for w in works)
        assert all(
            manager.get_state(f"t{t}") == f"2025-01-01T00:00:{per_thread - 1:02d}Z"
            for t in range(threads_count)
        )


def test_processor_delivers_through_local_manager(tmp_path: Path) -> None:
    config = GenericBatchProcessorConfig(
        batch_size=4,
        work_name_template="Local batch #{batch_num}",
        state_key="cursor",
        entity_type="indicator",
        display_name="indicators",
        date_extraction_function=lambda o: o.get("valid_from"),
    )
    with LocalWorkManager(tmp_path) as manager:
        with GenericBatchProcessor(config, manager) as processor:
            for n in range(10):
                processor.add_item(_indicator(n, valid_from=f"2025-01-{n + 1:02d}T00:00:00Z"))
        assert len(manager.bundle_paths()) == 3
        assert [w.name for w in manager.list_works()] == [
            "Local batch #1",
            "Local batch #2",
            "Local batch #3",
        ]
        assert manager.get_state("cursor") == "2025-01-10T00:00:00Z"


class _CommitFails:
    """A connection proxy whose next COMMIT fails (disk full at commit time)."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db
        self.armed = True

    def execute(self, sql: str, *args: object) -> sqlite3.Cursor:
        if sql == "COMMIT" and self.armed:
            self.armed = False
            raise sqlite3.OperationalError("database or disk is full")
        return self.db.execute(sql, *args)

    def close(self) -> None:
        self.db.close()


def test_failed_commit_takes_the_file_back(tmp_path: Path) -> None:
    with LocalWorkManager(tmp_path) as manager:
        work_id = manager.initiate_work("w", "indicator")
        manager._db = _CommitFails(manager._db)  # type: ignore[arg-type,assignment]
        with pytest.raises(sqlite3.OperationalError, match="disk is full"):
            manager.send_bundle(work_id, [_indicator(1)])
        assert manager.bundle_paths() == []
        assert manager.get_work(work_id).bundle_count == 0
        manager.send_bundle(work_id, [_indicator(1)])  # the connection is usable again
        assert len(manager.bundle_paths()) == 1


def test_reopening_removes_what_a_crash_left_mid_write(tmp_path: Path) -> None:
    with LocalWorkManager(tmp_path) as manager:
        work_id = manager.initiate_work("w", "indicator")
        manager.send_bundle(work_id, [_indicator(1)])
    leftover = tmp_path / ".20250101T000000000000Z_00000002_w000001_abc.json.x1y2.part"
    leftover.write_bytes(b'{"type": "bundle", "objects": [')  # a write cut short
    with LocalWorkManager(tmp_path) as manager:
        assert manager.stale_files_removed == 1
        assert not leftover.exists()
        assert len(manager.bundle_paths()) == 1
