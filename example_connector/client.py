"""Read a URLhaus-format CSV feed row by row, from ``http(s)://`` or a local path.

The feed is streamed: memory stays bounded whatever its size (lines longer
than ``max_line_bytes`` are skipped, not buffered).  Rows that cannot be used
(wrong column count, bad date, empty or absurd URL, encoding errors) are
counted by reason and the first ones logged with their line number; they
never stop the read.  Errors name the feed by :func:`redact_url` only.
"""

from __future__ import annotations

import contextlib
import csv
import datetime as dt
import io
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO
from urllib.parse import urlsplit

import requests  # type: ignore[import-untyped,unused-ignore]
from requests.adapters import HTTPAdapter  # type: ignore[import-untyped,unused-ignore]
from urllib3.util.retry import Retry

from connector_batching import redact
from example_connector.logs import ConnectorLog
from example_connector.rows import COLUMNS, EARLIEST_DATE, FeedRow, RowError, parse_row
from example_connector.urls import redact_url, secret_fragments

__all__ = [
    "COLUMNS",
    "EARLIEST_DATE",
    "FeedError",
    "FeedReader",
    "FeedRow",
    "FeedStats",
    "parse_row",
]

#: How many bad rows are logged one by one before only the counters grow.
LOGGED_BAD_ROWS = 20


class FeedError(RuntimeError):
    """The feed could not be opened or read (network, file, HTTP status)."""


@dataclass
class FeedStats:
    """Counters of one read: rows seen, usable, rejected (by reason)."""

    rows_read: int = 0
    rows_ok: int = 0
    rejected: Counter[str] = field(default_factory=Counter)
    first_rejections: list[tuple[int, str, str]] = field(default_factory=list)

    @property
    def rows_rejected(self) -> int:
        """Rows that could not be used."""
        return sum(self.rejected.values())


class FeedReader:
    """Streams the rows of a URLhaus-format CSV feed (``http(s)://`` URL or local path).

    Iterate :meth:`rows`; counters are in :attr:`stats`.
    """

    def __init__(
        self,
        source: str | Path,
        *,
        timeout: float = 60.0,
        retries: int = 3,
        max_line_bytes: int = 64 * 1024,
        max_url_length: int = 4096,
        not_after: dt.datetime | None = None,
        not_before: dt.datetime | None = EARLIEST_DATE,
        log: ConnectorLog | None = None,
    ) -> None:
        self.source = str(source)
        #: Rows dated later are rejected as ``future_date`` (they would move the
        #: cursor past every row still to come).
        self.not_after = not_after
        #: Rows dated earlier are rejected as ``past_date``.
        self.not_before = not_before
        self.timeout = timeout
        self.retries = retries
        self.max_line_bytes = max_line_bytes
        self.max_url_length = max_url_length
        self.log = log or ConnectorLog()
        self.stats = FeedStats()

    @property
    def is_remote(self) -> bool:
        """True when the source is an ``http(s)://`` URL."""
        return urlsplit(self.source).scheme.lower() in ("http", "https")

    @contextlib.contextmanager
    def _open(self) -> Iterator[IO[bytes]]:
        if not self.is_remote:
            path = self.source.removeprefix("file://")
            try:
                handle = open(path, "rb")  # noqa: SIM115 - closed below
            except OSError as exc:
                raise FeedError(
                    f"cannot open feed file {redact_url(path)!r}: {exc.strerror}"
                ) from exc
            with handle:
                yield handle
            return
        retry = Retry(
            total=self.retries,
            backoff_factor=1.0,
            status_forcelist=(429, 500, 502, 503, 504),
            allowed_methods=frozenset({"GET"}),
        )
        with requests.Session() as session:
            session.mount("http://", HTTPAdapter(max_retries=retry))
            session.mount("https://", HTTPAdapter(max_retries=retry))
            failure = None
            try:
                response = session.get(self.source, stream=True, timeout=self.timeout)
                response.raise_for_status()
            except requests.RequestException as exc:
                failure = (
                    f"cannot download feed {redact_url(self.source)}: {type(exc).__name__}"
                    f" ({redact(_short_reason(exc), secret_fragments(self.source))})"
                )
            if failure is not None:  # raised here: requests' error (full URL) is not chained
                raise FeedError(failure)
            with response:
                response.raw.decode_content = True
                response.raw.auto_close = False  # EOF reads b"", not "closed file"
                yield io.BufferedReader(response.raw, buffer_size=256 * 1024)

    def _lines(self, handle: IO[bytes]) -> Iterator[tuple[int, bytes | None]]:
        """Yield (line number, raw line); ``None`` for a line over the size limit."""
        limit = self.max_line_bytes
        number = 0
        while True:
            failure = None
            try:
                line = handle.readline(limit + 1)
            except (OSError, requests.RequestException) as exc:
                reason = redact(repr(exc), secret_fragments(self.source))
                failure = f"feed {redact_url(self.source)} broke off after line {number}: {reason}"
            if failure is not None:  # raised here: the error (full URL) is not chained
                raise FeedError(failure)
            if not line:
                return
            number += 1
            if len(line) > limit:
                while line and not line.endswith(b"\n"):  # skip the rest of the line
                    line = handle.readline(limit + 1)
                yield number, None
                continue
            yield number, line

    def _reject(self, line_number: int, reason: str, detail: str) -> None:
        self.stats.rejected[reason] += 1
        if len(self.stats.first_rejections) < LOGGED_BAD_ROWS:
            self.stats.first_rejections.append((line_number, reason, detail))
            self.log.warning(
                f"feed line rejected: {detail}",
                {"line": line_number, "reason": reason},
            )

    def rows(self) -> Iterator[FeedRow]:
        """Yield the usable rows, in feed order; bad rows are counted and skipped."""
        with self._open() as handle:
            for number, raw in self._lines(handle):
                if raw is None:
                    self.stats.rows_read += 1
                    self._reject(number, "line_too_long", f"over {self.max_line_bytes} bytes")
                    continue
                stripped = raw.strip()
                if not stripped or stripped.startswith(b"#"):
                    continue
                self.stats.rows_read += 1
                nul = stripped.find(b"\x00")
                if nul >= 0:
                    self._reject(number, "nul_byte", f"NUL byte at byte {nul}")
                    continue
                try:
                    text = stripped.decode("utf-8")
                except UnicodeDecodeError as exc:
                    self._reject(number, "encoding", f"not UTF-8 at byte {exc.start}")
                    continue
                try:
                    fields = next(csv.reader((text,), strict=True))
                    row = parse_row(number, fields, max_url_length=self.max_url_length)
                except csv.Error as exc:
                    self._reject(number, "csv", f"malformed CSV: {exc}")
                    continue
                except RowError as exc:
                    self._reject(number, exc.reason, str(exc))
                    continue
                if self.not_after is not None and row.dateadded > self.not_after:
                    self._reject(
                        number,
                        "future_date",
                        f"dateadded {row.dateadded:%Y-%m-%d %H:%M:%S} is later than "
                        f"{self.not_after:%Y-%m-%d %H:%M:%S} (now + URLHAUS_FUTURE_DATE_MARGIN)",
                    )
                    continue
                if self.not_before is not None and row.dateadded < self.not_before:
                    self._reject(
                        number,
                        "past_date",
                        f"dateadded {row.dateadded:%Y-%m-%d %H:%M:%S} is before "
                        f"{self.not_before:%Y-%m-%d}",
                    )
                    continue
                self.stats.rows_ok += 1
                yield row
        if self.stats.rows_rejected > len(self.stats.first_rejections):
            self.log.warning(
                f"{self.stats.rows_rejected} feed rows rejected in all",
                {"rejected_by_reason": dict(self.stats.rejected)},
            )


def _short_reason(exc: BaseException) -> str:
    response = getattr(exc, "response", None)
    if response is not None and getattr(response, "status_code", None):
        return f"HTTP {response.status_code}"
    text = str(exc)
    # requests puts the full URL (query string included) in its messages
    return text.split(" with url:")[0][:200] if text else type(exc).__name__
