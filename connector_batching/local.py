"""`LocalWorkManager`: batches become STIX 2.1 bundle files, state lives in SQLite.

The embedded default work manager: no OpenCTI needed.  Each ``send_bundle``
writes one bundle file (``*.json``) under ``directory``; the file appears
atomically (temporary file in the same directory, ``fsync``, ``os.replace``),
so a crash never leaves a half-written bundle.  Works and state keys live in
``state.db`` (SQLite, WAL journal, one transaction per write).  The bundle files
can be imported into OpenCTI as they are (Data → Import).

A bundle file and its record (a row in ``state.db``) come together or not at
all: a send that fails at any step (temporary file, ``fsync``, rename, directory
``fsync``, commit) takes its file back before it raises, so the retry of a batch
never leaves it in two files.

Opening a directory also repairs what a killed process left behind: temporary
files of a bundle being written are removed; unless ``close_interrupted`` is
false, bundle files without a record (a process killed after the rename, before
the commit: that send never returned, so the cursor did not move past its rows
and the next run sends them again) are removed, and works still
``in_progress`` (a process killed between opening a work and closing it) are
closed with status ``error`` and the message ``"interrupted"`` (see
:meth:`LocalWorkManager.close_interrupted_works`).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import re
import sqlite3
import threading
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Literal

from connector_batching.atomic_files import write_atomically
from connector_batching.stix import bundle_json

__all__ = ["LocalWorkManager", "WorkRecord", "WorkStatus"]

WorkStatus = Literal["in_progress", "complete", "error"]

STATE_DB_NAME = "state.db"

#: The name ``send_bundle`` gives a bundle file: time, bundle and work numbers, work id.
_BUNDLE_FILE = re.compile(r"\d{8}T\d{12}Z_\d{8,}_w\d{6,}_[0-9a-f]{12}\.json")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS works (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    name TEXT NOT NULL,
    entity_type TEXT NOT NULL,
    status TEXT NOT NULL,
    error_message TEXT,
    object_count INTEGER NOT NULL DEFAULT 0,
    bundle_count INTEGER NOT NULL DEFAULT 0,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    completed_at TEXT
);
CREATE TABLE IF NOT EXISTS bundles (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    work_id TEXT NOT NULL REFERENCES works(id),
    file_name TEXT NOT NULL UNIQUE,
    object_count INTEGER NOT NULL,
    created_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS state (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
"""


@dataclass(frozen=True, slots=True)
class WorkRecord:
    """One work as stored by :class:`LocalWorkManager`."""

    id: str
    seq: int
    name: str
    entity_type: str
    status: WorkStatus
    error_message: str | None
    object_count: int
    bundle_count: int
    created_at: str
    updated_at: str
    completed_at: str | None


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _iso(moment: dt.datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class LocalWorkManager:
    """A work manager writing one STIX 2.1 bundle file per batch under ``directory``.

    Thread-safe; use it as a context manager or call :meth:`close` when done.
    Opening removes temporary files a crash left behind and, unless
    ``close_interrupted`` is false, the bundle files a killed process left
    without their record and the works it left in progress
    (:meth:`close_interrupted_works`), so one directory is meant for one
    process at a time (open it with ``close_interrupted=False`` to read a
    directory another process may be writing).
    """

    #: Message of the works closed by :meth:`close_interrupted_works`.
    INTERRUPTED = "interrupted"

    def __init__(
        self, directory: str | os.PathLike[str], *, close_interrupted: bool = True
    ) -> None:
        self._directory = Path(directory)
        self._directory.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db: sqlite3.Connection | None = sqlite3.connect(
            self._directory / STATE_DB_NAME,
            isolation_level=None,  # explicit transactions below
            check_same_thread=False,
            timeout=30.0,
        )
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute("PRAGMA foreign_keys=ON")
        with self._transaction() as db:
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    db.execute(statement)
        #: Temporary files of interrupted writes removed when the directory was opened.
        self.stale_files_removed = self._remove_stale_temp_files()
        #: Bundle files without a record (a send killed before its commit) removed
        #: when the directory was opened.
        self.unrecorded_files_removed = self._remove_unrecorded_files() if close_interrupted else 0
        #: Works found in progress and closed as interrupted when the directory was opened.
        self.interrupted_works_closed = self.close_interrupted_works() if close_interrupted else 0

    def close_interrupted_works(self, message: str = INTERRUPTED) -> int:
        """Close, with status ``error`` and ``message``, every work still in progress.

        Such works belong to a process that was killed between opening a work
        and closing it (its batch was not delivered, or its file was written
        but the work not closed: either way the cursor did not move past it, so
        the next run sends those rows again in a new work).  Called when the
        directory is opened; call it yourself only when no other process uses
        the directory.
        Returns how many works were closed.
        """
        now = _iso(_now())
        with self._transaction() as db:
            cursor = db.execute(
                "UPDATE works SET status = 'error', error_message = ?, updated_at = ?,"
                " completed_at = ? WHERE status = 'in_progress'",
                (message, now, now),
            )
            return int(cursor.rowcount or 0)

    def _remove_stale_temp_files(self) -> int:
        """Delete temporary files a crash left mid-write (never valid bundles)."""
        removed = 0
        for path in self._directory.glob(".*.json.*.part"):
            with contextlib.suppress(OSError):
                path.unlink()
                removed += 1
        return removed

    def _remove_unrecorded_files(self) -> int:
        """Delete the bundle files whose record was never committed.

        Such a file is complete, but its ``send_bundle`` was killed before it
        returned, so the batch was not delivered: the cursor did not move past
        its rows and the next run sends them again (keeping the file would put
        that batch in two files).  Files not named as ``send_bundle`` names them
        are left alone.
        """
        with self._lock:
            recorded = {
                str(name) for (name,) in self._connection().execute("SELECT file_name FROM bundles")
            }
        removed = 0
        for path in self._directory.glob("*.json"):
            if path.name in recorded or not _BUNDLE_FILE.fullmatch(path.name):
                continue
            with contextlib.suppress(OSError):
                path.unlink()
                removed += 1
        return removed

    # -- plumbing ---------------------------------------------------------

    @property
    def directory(self) -> Path:
        """The directory holding the bundle files and ``state.db``."""
        return self._directory

    @property
    def state_db_path(self) -> Path:
        """Path of the SQLite database holding works and state."""
        return self._directory / STATE_DB_NAME

    def _connection(self) -> sqlite3.Connection:
        if self._db is None:
            raise RuntimeError(f"LocalWorkManager({str(self._directory)!r}) is closed")
        return self._db

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """One write transaction, under the manager lock."""
        with self._lock:
            db = self._connection()
            db.execute("BEGIN IMMEDIATE")
            try:
                yield db
                db.execute("COMMIT")
            except BaseException:
                with contextlib.suppress(sqlite3.Error):
                    db.execute("ROLLBACK")
                raise

    def _require_work(self, db: sqlite3.Connection, work_id: str) -> tuple[int, str]:
        row = db.execute("SELECT seq, status FROM works WHERE id = ?", (work_id,)).fetchone()
        if row is None:
            raise ValueError(f"unknown work id {work_id!r} (not created by initiate_work)")
        return int(row[0]), str(row[1])

    # -- WorkManager protocol ---------------------------------------------

    def initiate_work(self, work_name: str, entity_type: str) -> str:
        """Create a work (status ``in_progress``) and return its id."""
        work_id = f"work--{uuid.uuid4()}"
        now = _iso(_now())
        with self._transaction() as db:
            db.execute(
                "INSERT INTO works (id, name, entity_type, status, created_at, updated_at)"
                " VALUES (?, ?, ?, 'in_progress', ?, ?)",
                (work_id, work_name, entity_type, now, now),
            )
        return work_id

    def send_bundle(self, work_id: str, objects: Sequence[Any]) -> None:
        """Write ``objects`` as one STIX 2.1 bundle file for ``work_id``.

        Nothing is written for an empty list.  Raises ``ValueError`` for an
        unknown work id, ``OSError`` when the file cannot be written and
        ``sqlite3.Error`` when its record cannot be committed; whatever step
        fails, neither the file nor its record is left behind, so a retry
        leaves the batch in exactly one file.
        """
        if not objects:
            with self._lock:
                self._require_work(self._connection(), work_id)
            return
        payload = bundle_json(objects).encode("utf-8")
        count = len(objects)
        moment = _now()
        with self._lock:
            db = self._connection()
            db.execute("BEGIN IMMEDIATE")
            path: Path | None = None
            try:
                work_seq, _status = self._require_work(db, work_id)
                cursor = db.execute(
                    "INSERT INTO bundles (work_id, file_name, object_count, created_at)"
                    " VALUES (?, '', ?, ?)",
                    (work_id, count, _iso(moment)),
                )
                bundle_seq = int(cursor.lastrowid or 0)
                file_name = (
                    f"{moment.strftime('%Y%m%dT%H%M%S%fZ')}_{bundle_seq:08d}"
                    f"_w{work_seq:06d}_{work_id[-12:]}.json"
                )
                db.execute(
                    "UPDATE bundles SET file_name = ? WHERE seq = ?", (file_name, bundle_seq)
                )
                db.execute(
                    "UPDATE works SET object_count = object_count + ?,"
                    " bundle_count = bundle_count + 1, updated_at = ? WHERE id = ?",
                    (count, _iso(moment), work_id),
                )
                path = self._directory / file_name  # a new name: nothing there to lose
                write_atomically(path, payload)
                db.execute("COMMIT")
            except BaseException:
                with contextlib.suppress(sqlite3.Error):
                    db.execute("ROLLBACK")
                if path is not None:  # the record is rolled back: take the file back too
                    with contextlib.suppress(OSError):  # (not written: nothing to remove)
                        path.unlink()
                raise

    def work_to_process(
        self, work_id: str, in_error: bool = False, message: str | None = None
    ) -> None:
        """Close the work: ``complete``, or ``error`` with ``message`` when ``in_error``."""
        status: WorkStatus = "error" if in_error else "complete"
        now = _iso(_now())
        with self._transaction() as db:
            self._require_work(db, work_id)
            db.execute(
                "UPDATE works SET status = ?, error_message = ?, updated_at = ?,"
                " completed_at = ? WHERE id = ?",
                (status, message if in_error else None, now, now, work_id),
            )

    def update_state(self, state_key: str, date_str: str) -> None:
        """Store ``date_str`` as the cursor under ``state_key``."""
        with self._transaction() as db:
            db.execute(
                "INSERT INTO state (key, value, updated_at) VALUES (?, ?, ?)"
                " ON CONFLICT(key) DO UPDATE SET value = excluded.value,"
                " updated_at = excluded.updated_at",
                (state_key, date_str, _iso(_now())),
            )

    def get_state(self, state_key: str) -> str | None:
        """Return the cursor stored under ``state_key``, or ``None``."""
        with self._lock:
            row = (
                self._connection()
                .execute("SELECT value FROM state WHERE key = ?", (state_key,))
                .fetchone()
            )
        return None if row is None else str(row[0])

    # -- reads --------------------------------------------------------------

    def get_states(self) -> dict[str, str]:
        """All state keys and their values."""
        with self._lock:
            rows = self._connection().execute("SELECT key, value FROM state ORDER BY key")
            return {str(key): str(value) for key, value in rows}

    def get_work(self, work_id: str) -> WorkRecord:
        """The stored record of ``work_id`` (``ValueError`` when unknown)."""
        for work in self._select_works("WHERE id = ?", (work_id,)):
            return work
        raise ValueError(f"unknown work id {work_id!r}")

    def list_works(self, status: WorkStatus | None = None) -> list[WorkRecord]:
        """All works in creation order, optionally only those with ``status``."""
        if status is None:
            return self._select_works("", ())
        return self._select_works("WHERE status = ?", (status,))

    def _select_works(self, where: str, params: tuple[Any, ...]) -> list[WorkRecord]:
        query = (
            "SELECT id, seq, name, entity_type, status, error_message, object_count,"
            f" bundle_count, created_at, updated_at, completed_at FROM works {where}"
            " ORDER BY seq"
        )
        with self._lock:
            rows = self._connection().execute(query, params).fetchall()
        return [WorkRecord(*row) for row in rows]

    def bundle_paths(self) -> list[Path]:
        """Paths of the bundle files in this directory, oldest first."""
        return sorted(p for p in self._directory.glob("*.json") if p.is_file())

    # -- lifecycle ------------------------------------------------------------

    def close(self) -> None:
        """Close the database; later calls raise ``RuntimeError``.  Idempotent."""
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None

    def __enter__(self) -> LocalWorkManager:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._db is None else "open"
        return f"LocalWorkManager({str(self._directory)!r}, {state})"
