"""Dead letters: items of batches that failed for good, kept in SQLite across restarts."""

from __future__ import annotations

import datetime as dt
import json
import sqlite3
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from connector_batching.dates import format_instant, utc_now
from connector_batching.stix import to_stix_dict

DateSpan = tuple[dt.datetime, dt.datetime] | None

_SCHEMA = """
CREATE TABLE IF NOT EXISTS dead_letters (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    state_key TEXT NOT NULL,
    payload TEXT NOT NULL,
    earliest_us INTEGER,
    latest_us INTEGER,
    error TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 1,
    first_failed_at TEXT NOT NULL,
    last_failed_at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS dead_letters_key ON dead_letters (state_key, id);
"""
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_MAX_ERROR = 2_000


def _to_us(instant: dt.datetime) -> int:
    return (instant - _EPOCH) // dt.timedelta(microseconds=1)


def _from_us(value: int | None) -> dt.datetime | None:
    return None if value is None else _EPOCH + dt.timedelta(microseconds=value)


def _encode(payload: Any) -> str:
    if type(payload) is list:
        return json.dumps([to_stix_dict(member) for member in payload], ensure_ascii=False)
    return json.dumps(to_stix_dict(payload), ensure_ascii=False)


class DeadLetterStore:
    """A SQLite file of failed items (STIX JSON, dates, error, attempts).

    Each write is one transaction, so a crash never leaves a partial record.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._connection: sqlite3.Connection | None = None
        with self._lock:
            self._db.executescript(_SCHEMA)

    @property
    def _db(self) -> sqlite3.Connection:
        """The connection, opened on first use (again after :meth:`close`)."""
        if self._connection is None:
            db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=FULL")
            self._connection = db
        return self._connection

    def add(self, state_key: str, items: Iterable[tuple[Any, DateSpan]], error: str) -> list[int]:
        """Persist failed items; returns their row ids in order."""
        now = format_instant(utc_now())
        rows = [
            (
                state_key,
                _encode(payload),
                None if span is None else _to_us(span[0]),
                None if span is None else _to_us(span[1]),
                error[:_MAX_ERROR],
                now,
                now,
            )
            for payload, span in items
        ]
        ids: list[int] = []
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                for row in rows:
                    cursor = self._db.execute(
                        "INSERT INTO dead_letters (state_key, payload, earliest_us, latest_us,"
                        " error, first_failed_at, last_failed_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                        row,
                    )
                    ids.append(int(cursor.lastrowid or 0))
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        return ids

    def failed_again(self, row_ids: Iterable[int], error: str) -> None:
        """Count one more failed attempt for these rows."""
        now = format_instant(utc_now())
        with self._lock:
            self._db.executemany(
                "UPDATE dead_letters SET attempts = attempts + 1, error = ?, last_failed_at = ?"
                " WHERE id = ?",
                [(error[:_MAX_ERROR], now, row_id) for row_id in row_ids],
            )

    def remove(self, row_ids: Iterable[int]) -> None:
        """Forget delivered (or handled) rows."""
        with self._lock:
            self._db.executemany("DELETE FROM dead_letters WHERE id = ?", [(r,) for r in row_ids])

    def discard(self, state_key: str, keep: Iterable[int] = ()) -> int:
        """Delete every row of ``state_key`` except the ``keep`` row ids; returns how many."""
        kept = set(keep)
        with self._lock:
            ids = [
                row_id
                for (row_id,) in self._db.execute(
                    "SELECT id FROM dead_letters WHERE state_key = ?", (state_key,)
                )
                if row_id not in kept
            ]
            self._db.executemany("DELETE FROM dead_letters WHERE id = ?", [(r,) for r in ids])
        return len(ids)

    def load(self, state_key: str) -> list[tuple[int, Any, DateSpan]]:
        """All rows of ``state_key``, oldest first: (row id, payload, date span)."""
        with self._lock:
            rows = self._db.execute(
                "SELECT id, payload, earliest_us, latest_us FROM dead_letters"
                " WHERE state_key = ? ORDER BY id",
                (state_key,),
            ).fetchall()
        out: list[tuple[int, Any, DateSpan]] = []
        for row_id, text, earliest, latest in rows:
            lo, hi = _from_us(earliest), _from_us(latest)
            out.append((row_id, json.loads(text), None if lo is None or hi is None else (lo, hi)))
        return out

    def summary(self, state_key: str) -> tuple[int, dt.datetime | None]:
        """(rows for ``state_key``, earliest date among them)."""
        with self._lock:
            count, earliest = self._db.execute(
                "SELECT COUNT(*), MIN(earliest_us) FROM dead_letters WHERE state_key = ?",
                (state_key,),
            ).fetchone()
        return int(count), _from_us(earliest)

    def close(self) -> None:
        """Close the connection (the next use opens it again)."""
        with self._lock:
            if self._connection is not None:
                self._connection.close()
                self._connection = None
