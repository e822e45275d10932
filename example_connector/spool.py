"""A temporary on-disk table of feed rows, read back oldest ``dateadded`` first.

URLhaus publishes newest first; the cursor the engine saves after each batch
must never pass a row still to come, so a run spools the new rows to SQLite
and delivers them oldest first.  Memory stays bounded: rows stream from the
feed to disk and from disk to the engine.
"""

from __future__ import annotations

import datetime as dt
import json
import sqlite3
import tempfile
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType
from typing import Any

from example_connector.rows import FeedRow

__all__ = ["RowSpool"]


class RowSpool:
    """A temporary on-disk table of feed rows, read back ordered by ``dateadded``.

    With ``max_rows``, at most the ``max_rows`` oldest rows are kept (disk use
    stays bounded whatever the feed's size): :meth:`finish` cuts at a
    ``dateadded`` second, so the rows kept are exactly those before some
    instant and a cursor at the last of them never passes a row left out.
    """

    _COLUMNS = "added, id_num, line, id, url, url_status, last_online, threat, tags, link, reporter"
    _ORDER = "added, id_num, line"
    _ORDER_DESC = "added DESC, id_num DESC, line DESC"

    def __init__(self, max_rows: int | None = None) -> None:
        self._tmp = tempfile.TemporaryDirectory(prefix="urlhaus-spool-")
        self._db = sqlite3.connect(Path(self._tmp.name) / "spool.db")
        self._db.execute("PRAGMA journal_mode=OFF")
        self._db.execute("PRAGMA synchronous=OFF")
        self._db.execute(f"CREATE TABLE rows ({self._COLUMNS})")
        self._pending: list[tuple[Any, ...]] = []
        self._max_rows = max_rows
        self._slack = 0 if max_rows is None else max(1000, max_rows // 4)
        self._added = 0  # rows given to add()
        self._stored = 0  # rows in the table
        self._count = 0  # rows kept (after finish())
        #: Rows left out by the ``max_rows`` limit (known after :meth:`finish`).
        self.deferred = 0
        #: The ``dateadded`` from which rows were left out, or ``None``.
        self.deferred_from: dt.datetime | None = None

    def add(self, row: FeedRow) -> None:
        """Spool one row."""
        self._pending.append(
            (
                row.dateadded.strftime("%Y-%m-%dT%H:%M:%S.%f"),
                int(row.id) if row.id.isdigit() else None,
                row.line_number,
                row.id,
                row.url,
                row.url_status,
                None if row.last_online is None else row.last_online.isoformat(),
                row.threat,
                json.dumps(row.tags),
                row.urlhaus_link,
                row.reporter,
            )
        )
        self._added += 1
        self._count = self._added
        if len(self._pending) >= 1000:
            self._write()

    def _write(self) -> None:
        if self._pending:
            self._db.executemany(f"INSERT INTO rows VALUES ({', '.join('?' * 11)})", self._pending)
            self._stored += len(self._pending)
            self._pending.clear()
        if self._max_rows is not None and self._stored > self._max_rows + 1 + self._slack:
            self._keep_oldest(self._max_rows + 1)

    def _keep_oldest(self, keep: int) -> None:
        excess = self._stored - keep
        if excess > 0:
            self._db.execute(
                "DELETE FROM rows WHERE rowid IN (SELECT rowid FROM rows"
                f" ORDER BY {self._ORDER_DESC} LIMIT ?)",
                (excess,),
            )
            self._stored = keep

    def finish(self) -> int:
        """Apply the row limit once every row was added; returns the rows kept."""
        self._write()
        if self._max_rows is not None and self._stored > self._max_rows:
            self._keep_oldest(self._max_rows + 1)
            (cut,) = self._db.execute(
                f"SELECT added FROM rows ORDER BY {self._ORDER} LIMIT 1 OFFSET ?",
                (self._max_rows,),
            ).fetchone()
            self._db.execute("DELETE FROM rows WHERE added >= ?", (cut,))
            (self._stored,) = self._db.execute("SELECT COUNT(*) FROM rows").fetchone()
            self.deferred = self._added - self._stored
            self.deferred_from = dt.datetime.fromisoformat(cut).replace(tzinfo=dt.UTC)
        self._count = self._stored
        return self._count

    def __len__(self) -> int:
        return self._count

    def rows(self) -> Iterator[FeedRow]:
        """The spooled rows, oldest ``dateadded`` first (then by URLhaus id, line)."""
        self._write()
        query = f"SELECT {self._COLUMNS} FROM rows ORDER BY {self._ORDER}"
        for (
            added,
            _num,
            line,
            row_id,
            url,
            status,
            last,
            threat,
            tags,
            link,
            rep,
        ) in self._db.execute(query):
            yield FeedRow(
                line_number=line,
                id=row_id,
                dateadded=dt.datetime.fromisoformat(added).replace(tzinfo=dt.UTC),
                url=url,
                url_status=status,
                last_online=None if last is None else dt.datetime.fromisoformat(last),
                threat=threat,
                tags=tuple(json.loads(tags)),
                urlhaus_link=link,
                reporter=rep,
            )

    def close(self) -> None:
        """Delete the spool."""
        self._db.close()
        self._tmp.cleanup()

    def __enter__(self) -> RowSpool:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
