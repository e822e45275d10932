"""Read a URLhaus-format CSV feed row by row, from ``http(s)://`` or a local path.

The feed is streamed: memory stays bounded whatever its size (lines longer
than ``max_line_bytes`` are skipped, not buffered).  Rows that cannot be used
(wrong column count, bad date, empty or absurd URL, encoding errors) are
counted by reason and logged with their line number; they never stop the read.
"""

from __future__ import annotations

import contextlib
import csv
import datetime as dt
import io
import logging
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO
from urllib.parse import urlsplit

import requests  # type: ignore[import-untyped,unused-ignore]
from requests.adapters import HTTPAdapter  # type: ignore[import-untyped,unused-ignore]
from urllib3.util.retry import Retry

__all__ = [
    "COLUMNS",
    "EARLIEST_DATE",
    "FeedError",
    "FeedReader",
    "FeedRow",
    "FeedStats",
    "parse_row",
    "redact_url",
    "scrub",
    "secret_fragments",
]

COLUMNS = (
    "id",
    "dateadded",
    "url",
    "url_status",
    "last_online",
    "threat",
    "tags",
    "urlhaus_link",
    "reporter",
)
URL_SCHEMES = frozenset({"http", "https", "ftp", "ftps", "tftp", "ws", "wss"})
#: How many bad rows are logged one by one before only the counters grow.
LOGGED_BAD_ROWS = 20
#: Rows dated before this are rejected (``past_date``): no URL was listed before 1970,
#: and such dates are where naive epoch arithmetic breaks.
EARLIEST_DATE = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)

log = logging.getLogger(__name__)


class FeedError(RuntimeError):
    """The feed could not be opened or read (network, file, HTTP status)."""


class RowError(ValueError):
    """A row that cannot be used; ``reason`` is a short stable key."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class FeedRow:
    """One usable feed row."""

    line_number: int
    id: str
    dateadded: dt.datetime
    url: str
    url_status: str
    last_online: dt.datetime | None
    threat: str
    tags: tuple[str, ...]
    urlhaus_link: str
    reporter: str


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


def _parse_time(value: str) -> dt.datetime:
    moment = dt.datetime.fromisoformat(value.strip())
    if moment.tzinfo is None:
        return moment.replace(tzinfo=dt.UTC)
    return moment.astimezone(dt.UTC)


def _check_url(url: str, max_url_length: int) -> str:
    if not url:
        raise RowError("empty_url", "the url column is empty")
    if len(url) > max_url_length:
        raise RowError("url_too_long", f"url has {len(url)} characters (max {max_url_length})")
    if any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in url):
        raise RowError("invalid_url", "url contains control characters")
    try:
        parts = urlsplit(url)
    except ValueError as exc:
        raise RowError("invalid_url", f"url does not parse: {exc}") from exc
    if parts.scheme.lower() not in URL_SCHEMES or not parts.netloc:
        raise RowError("invalid_url", f"not an absolute URL with a known scheme: {url[:80]!r}")
    return url


def parse_row(
    line_number: int,
    fields: list[str],
    *,
    max_url_length: int = 4096,
    max_field_length: int = 4096,
) -> FeedRow:
    """Turn the CSV fields of one line into a :class:`FeedRow` (``RowError`` if unusable)."""
    if len(fields) != len(COLUMNS):
        raise RowError("column_count", f"expected {len(COLUMNS)} columns, got {len(fields)}")
    row_id, added, url, status, last_online, threat, tags, link, reporter = fields
    for name, value in zip(COLUMNS, fields, strict=True):
        if name != "url" and len(value) > max_field_length:
            raise RowError(
                "field_too_long",
                f"{name} has {len(value)} characters (max {max_field_length})",
            )
    row_id = row_id.strip()
    if not row_id:
        raise RowError("empty_id", "the id column is empty")
    try:
        dateadded = _parse_time(added)
    except (ValueError, OverflowError) as exc:  # overflow: year 1 or 9999 with an offset
        raise RowError("bad_date", f"dateadded {added[:40]!r} is not a date") from exc
    last_seen: dt.datetime | None = None
    if last_online.strip():
        with contextlib.suppress(ValueError, OverflowError):
            last_seen = _parse_time(last_online)
    tag_list: list[str] = []
    for tag in tags.split(","):
        tag = tag.strip()
        if tag and tag != "None" and tag not in tag_list:
            tag_list.append(tag)
    return FeedRow(
        line_number=line_number,
        id=row_id,
        dateadded=dateadded,
        url=_check_url(url.strip(), max_url_length),
        url_status=status.strip(),
        last_online=last_seen,
        threat=threat.strip(),
        tags=tuple(tag_list),
        urlhaus_link=link.strip() or f"https://urlhaus.abuse.ch/url/{row_id}/",
        reporter=reporter.strip(),
    )


def secret_fragments(source: str) -> list[str]:
    """The parts of ``source`` that may be secret, longest first (for :func:`scrub`).

    For a URL: the whole URL, its user info, password and user name, its path
    and query (an access key often travels in either) and each query value.
    Fragments shorter than 4 characters are left out (they would mangle
    unrelated text and are not worth hiding).  Nothing for a local path.
    """
    parts = urlsplit(source)
    if not parts.scheme or len(parts.scheme) == 1:
        return []
    found = {source, parts.path, parts.query, parts.fragment}
    userinfo, at, _host = parts.netloc.rpartition("@")
    if at:
        found.add(userinfo)
        user, _colon, password = userinfo.partition(":")
        found.update((user, password))
    for pair in parts.query.split("&"):
        found.add(pair.partition("=")[2])
    if parts.path:
        found.add(parts.path + (f"?{parts.query}" if parts.query else ""))
    return sorted((f for f in found if len(f) >= 4), key=len, reverse=True)


def scrub(text: str, fragments: list[str]) -> str:
    """``text`` with each of ``fragments`` replaced by ``***``."""
    for fragment in fragments:
        if fragment in text:
            text = text.replace(fragment, "***")
    return text


def redact_url(source: str) -> str:
    """``source`` reduced to scheme, host and port, safe to log.

    Credentials, path (which may embed an access key) and query are dropped.
    """
    parts = urlsplit(source)
    if not parts.scheme or len(parts.scheme) == 1:  # a path (or a Windows drive)
        return source
    host = parts.hostname or ""
    try:
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        port = ""
    rest = "/…" if parts.path.strip("/") or parts.query else "/"
    return f"{parts.scheme}://{host}{port}{rest}"


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
        logger: logging.Logger | None = None,
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
        self.log = logger or log
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
                    f" ({scrub(_short_reason(exc), secret_fragments(self.source))})"
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
                reason = scrub(repr(exc), secret_fragments(self.source))
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
            self.log.warning("feed line %d rejected (%s): %s", line_number, reason, detail)

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
                "%d feed rows rejected in all: %s",
                self.stats.rows_rejected,
                dict(self.stats.rejected),
            )


def _short_reason(exc: BaseException) -> str:
    response = getattr(exc, "response", None)
    if response is not None and getattr(response, "status_code", None):
        return f"HTTP {response.status_code}"
    text = str(exc)
    # requests puts the full URL (query string included) in its messages
    return text.split(" with url:")[0][:200] if text else type(exc).__name__
