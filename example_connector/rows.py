"""One URLhaus feed row: its columns, the checks it must pass, :class:`FeedRow`.

A row that cannot be used raises :class:`RowError` with a short stable
``reason`` (``column_count``, ``bad_date``, ``empty_url``, ``invalid_url``, …)
that the reader counts.
"""

from __future__ import annotations

import contextlib
import datetime as dt
from dataclasses import dataclass
from urllib.parse import urlsplit

__all__ = ["COLUMNS", "EARLIEST_DATE", "FeedRow", "RowError", "parse_row"]

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
#: Rows dated before this are rejected (``past_date``): no URL was listed before 1970,
#: and such dates are where naive epoch arithmetic breaks.
EARLIEST_DATE = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


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
