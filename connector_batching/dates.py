"""Dates as instants: parsing anything a feed gives, writing ISO 8601 UTC ``Z``."""

from __future__ import annotations

import datetime as dt
import math
import re
from typing import Any

from dateutil import parser as date_parser

_UTC = dt.UTC
_EPOCH_MS_THRESHOLD = 1e11  # larger epoch numbers are milliseconds (year > 5138 in seconds)


class InvalidDate(ValueError):
    """A value that cannot be read as a date."""


def parse_instant(value: Any) -> dt.datetime | None:
    """Return ``value`` as an aware UTC datetime, or ``None`` for ``None``/``""``.

    Accepts ``datetime`` (naive = UTC), ``date``, ISO 8601 and other strings
    python-dateutil reads (any numeric offset, ``Z``, ``UTC``, ``GMT``; naive =
    UTC), and epoch numbers (seconds; values above 1e11 are read as
    milliseconds).  Raises :class:`InvalidDate` for anything else, and never
    guesses: a zone name other than UTC/GMT/Z ("CET", "EST": dateutil would
    drop it and read the time as UTC) and a zone name with a signed offset
    ("GMT+3": POSIX reads it as UTC-03:00, people as UTC+03:00) are invalid, and
    so is an instant outside years 1 to 9999 once converted to UTC.
    """
    if value is None:
        return None
    if isinstance(value, dt.datetime):
        return _as_utc(value, value)
    if isinstance(value, dt.date):
        return dt.datetime(value.year, value.month, value.day, tzinfo=_UTC)
    if isinstance(value, bool):
        raise InvalidDate(f"not a date: {value!r}")
    if isinstance(value, int | float):
        return _from_epoch(value)
    if isinstance(value, str):
        try:  # the common case, ~10x faster than python-dateutil
            parsed = dt.datetime.fromisoformat(value)
        except ValueError:
            pass
        else:
            return _as_utc(parsed, value)
        text = value.strip()
        if not text:
            return None
        return _as_utc(_parse_text(text, value), value)
    raise InvalidDate(f"not a date: {type(value).__name__}")


def _as_utc(moment: dt.datetime, value: Any) -> dt.datetime:
    if moment.tzinfo is None:
        return moment.replace(tzinfo=_UTC)
    try:
        return moment.astimezone(_UTC)
    except (OverflowError, ValueError, TypeError) as exc:  # past year 1 or 9999 in UTC
        raise InvalidDate(f"date out of range in UTC: {_shown(value)}") from exc


def _shown(value: Any) -> str:
    return repr(value[:64] if isinstance(value, str) else value)


#: Zone names python-dateutil reads as UTC (it turns ``Z`` into ``UTC``).
_UTC_NAMES = frozenset({"UTC", "GMT", "Z", "z"})
#: Longer strings are not dates (and dateutil's time grows with the length).
_MAX_DATE_TEXT = 256
#: A word, then a signed number: "GMT+3", "UTC+01:00", "EST-0500".
_NAME_THEN_SIGN = re.compile(r"(?<![A-Za-z])([A-Za-z]+)\s*[+-]\s*\d")
_INFO = date_parser.parserinfo()


def _parse_text(text: str, value: str) -> dt.datetime:
    """A stripped, non-empty string through python-dateutil, with no guessing."""
    if len(text) > _MAX_DATE_TEXT:
        raise InvalidDate(f"not a date (longer than {_MAX_DATE_TEXT} characters): {_shown(value)}")
    try:
        return date_parser.isoparse(text)
    except (ValueError, OverflowError):
        pass
    if text[0] in "+-":  # dateutil would drop the sign of a negative or expanded year
        raise InvalidDate(f"not a date (signed year): {_shown(value)}")
    for match in _NAME_THEN_SIGN.finditer(text):
        if _is_zone_name(match.group(1)):
            raise InvalidDate(
                f"ambiguous time zone {match.group(0)!r} in {_shown(value)}: a zone name with "
                "a signed offset reads either way (POSIX: GMT+3 is UTC-03:00); give the offset "
                "alone (+03:00)"
            )

    def known_zone(name: str | None, offset: int | None) -> dt.tzinfo | None:
        if offset is not None:
            return dt.timezone(dt.timedelta(seconds=offset))
        if name is None:
            return None  # no zone: UTC
        if name in _UTC_NAMES:
            return _UTC
        raise InvalidDate(
            f"unknown time zone {name!r} in {_shown(value)}: give a numeric offset (+01:00) or UTC"
        )

    try:
        return date_parser.parse(text, tzinfos=known_zone)
    except InvalidDate:
        raise
    except Exception as exc:  # a third-party parser fed arbitrary text: any error = no date
        raise InvalidDate(f"not a date: {_shown(value)}") from exc


def _is_zone_name(word: str) -> bool:
    """Whether dateutil would take ``word`` for a zone name (as ``_could_be_tzname``)."""
    if word in _UTC_NAMES:
        return True
    return (
        len(word) <= 5
        and word.isupper()
        and _INFO.month(word) is None
        and _INFO.weekday(word) is None
        and _INFO.ampm(word) is None
        and _INFO.hms(word) is None
        and not _INFO.jump(word)
        and not _INFO.pertain(word)
    )


def _from_epoch(value: float) -> dt.datetime:
    try:
        number = float(value)
    except OverflowError as exc:  # an int too large for a float
        raise InvalidDate(f"epoch out of range: {value!r}") from exc
    if not math.isfinite(number):
        raise InvalidDate(f"not a date: {number!r}")
    if abs(number) > _EPOCH_MS_THRESHOLD:
        number /= 1000.0
    try:
        return dt.datetime.fromtimestamp(number, tz=_UTC)
    except (OverflowError, OSError, ValueError) as exc:
        raise InvalidDate(f"epoch out of range: {number!r}") from exc


def format_instant(instant: dt.datetime) -> str:
    """ISO 8601 UTC with ``Z``; microseconds only when non-zero."""
    utc = instant.astimezone(_UTC) if instant.tzinfo else instant.replace(tzinfo=_UTC)
    spec = "microseconds" if utc.microsecond else "seconds"
    return utc.replace(tzinfo=None).isoformat(timespec=spec) + "Z"


def utc_now() -> dt.datetime:
    """The current instant, aware UTC."""
    return dt.datetime.now(_UTC)


#: The smallest step between two cursors: a cursor one step before an instant
#: is strictly earlier than it.
CURSOR_STEP = dt.timedelta(microseconds=1)
