"""Reading dates as instants: every input is an aware UTC instant, ``None``, or ``InvalidDate``.

A time zone the parser does not know is never guessed (python-dateutil reads
"12:00 CET" as 12:00 UTC with only a warning): such dates are invalid.  Nothing
but ``InvalidDate`` comes out for bad input, whatever its range.
"""

from __future__ import annotations

import datetime as dt
import time
import warnings
from typing import Any

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from connector_batching.dates import InvalidDate, format_instant, parse_instant

UTC = dt.UTC

pytestmark = pytest.mark.filterwarnings("error")  # a parser warning fails the test


def _at(*args: int) -> dt.datetime:
    return dt.datetime(*args, tzinfo=UTC)  # type: ignore[misc]


# -- time zones ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "2024-01-01 12:00 CET",
        "2024-01-01 12:00:00 EST",
        "2024-07-01 12:00 CEST",
        "2024-01-01 12:00 PST",
        "2024-01-01 12:00 XYZ",
        "Mon, 01 Jan 2024 12:00:00 EST",
        "01/02/2024 23:30 IST",
    ],
)
def test_a_zone_abbreviation_other_than_utc_is_an_invalid_date(text: str) -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(InvalidDate, match="time zone") as info:
            parse_instant(text)
    assert caught == []  # no UnknownTimezoneWarning either
    zone = text.rsplit(" ", 1)[1]
    assert zone in str(info.value)


def test_zone_names_of_the_local_machine_are_not_guessed_either(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """dateutil maps a name equal to ``time.tzname`` to the machine's zone: the same
    feed would read differently on another host."""
    monkeypatch.setattr(time, "tzname", ("CET", "CEST"))
    with pytest.raises(InvalidDate, match="CET"):
        parse_instant("2024-01-01 12:00 CET")


@pytest.mark.parametrize(
    "text",
    [
        "2024-01-01 12:00 GMT+3",  # dateutil reads it the POSIX way: UTC-03:00
        "2024-01-01 12:00 UTC+01:00",
        "2024-01-01 12:00 EST-0500",
        "2024-01-01 12:00 BRST+3",
        "2024-01-01 12:00 GMT +3",  # dateutil drops the +3
        "2024-01-01 12:00 EST -0500",  # which one wins?
    ],
)
def test_a_zone_name_with_a_signed_offset_is_ambiguous_and_invalid(text: str) -> None:
    with pytest.raises(InvalidDate, match="ambiguous"):
        parse_instant(text)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2024-01-01T12:00:00Z", _at(2024, 1, 1, 12)),
        ("2024-01-01 12:00 UTC", _at(2024, 1, 1, 12)),
        ("2024-01-01 12:00 GMT", _at(2024, 1, 1, 12)),
        ("2024-01-01 12:00 Z", _at(2024, 1, 1, 12)),
        ("Mon, 01 Jan 2024 12:00:00 GMT", _at(2024, 1, 1, 12)),
        ("Mon, 01 Jan 2024 12:00:00 +0100", _at(2024, 1, 1, 11)),
        ("2024-01-01 12:00:00 -0300 (BRST)", _at(2024, 1, 1, 15)),
        ("2024-01-01T12:00:00+05:30", _at(2024, 1, 1, 6, 30)),
        ("2024-01-01 12:00:00", _at(2024, 1, 1, 12)),  # naive = UTC
        ("20240101T120000Z", _at(2024, 1, 1, 12)),
        ("  2024-01-01T12:00:00Z  ", _at(2024, 1, 1, 12)),
    ],
)
def test_utc_names_and_numeric_offsets_are_read_exactly(text: str, expected: dt.datetime) -> None:
    assert parse_instant(text) == expected


# -- ranges ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("0001-01-01T00:00:00Z", _at(1, 1, 1)),  # Go's zero time, .NET MinValue: a date
        ("0001-01-01T00:00:00-01:00", _at(1, 1, 1, 1)),
        ("9999-12-31T23:59:59.999999Z", dt.datetime.max.replace(tzinfo=UTC)),
        ("9999-12-31T23:59:59+01:00", _at(9999, 12, 31, 22, 59, 59)),
        (dt.datetime.min, dt.datetime.min.replace(tzinfo=UTC)),
        (dt.date(1, 1, 1), _at(1, 1, 1)),
        (0, _at(1970, 1, 1)),
        (-62135596800, _at(1, 1, 1)),  # epoch seconds of 0001-01-01
        (1e11, _at(5138, 11, 16, 9, 46, 40)),
        (1e11 + 1, _at(1973, 3, 3, 9, 46, 40, 1000)),  # above 1e11: milliseconds
    ],
)
def test_the_edges_of_the_range_are_valid(value: Any, expected: dt.datetime) -> None:
    assert parse_instant(value) == expected


@pytest.mark.parametrize(
    "value",
    [
        "0001-01-01T00:00:00+01:00",  # before year 1 in UTC
        "9999-12-31T23:59:59-01:00",  # after year 9999 in UTC
        "0001-01-01 00:00:00 +0100",
        "10000-01-01T00:00:00Z",
        "99999999999999999999",
        "-0001-01-01",
        dt.datetime(1, 1, 1, tzinfo=dt.timezone(dt.timedelta(hours=1))),
        dt.datetime.max.replace(tzinfo=dt.timezone(dt.timedelta(hours=-1))),
        10**400,  # too large for a float
        -(10**400),
        2**63,
        -(2**63),
        1e300,
        -1e300,
        float("inf"),
        float("-inf"),
        float("nan"),
        True,
        b"2024-01-01",
        object(),
        [2024, 1, 1],
        "not a date",
        "2024-13-45",
        "x" * 100_000,
        "2024-01-01" + "5" * 10_000,
        "\x00",
    ],
    ids=repr,
)
def test_bad_input_raises_invalid_date_and_nothing_else(value: Any) -> None:
    with pytest.raises(InvalidDate):
        parse_instant(value)


def test_invalid_date_is_a_value_error() -> None:
    assert issubclass(InvalidDate, ValueError)


@pytest.mark.parametrize("value", [None, "", "   ", "\t\n"])
def test_nothing_is_none(value: Any) -> None:
    assert parse_instant(value) is None


# -- properties ------------------------------------------------------------------------


def _check(value: Any) -> None:
    try:
        instant = parse_instant(value)
    except InvalidDate:
        return
    if instant is not None:
        assert isinstance(instant, dt.datetime)
        assert instant.utcoffset() == dt.timedelta(0)
        assert format_instant(instant)  # writable as a cursor


_offsets = st.builds(
    lambda minutes: dt.timezone(dt.timedelta(minutes=minutes)),
    st.integers(min_value=-23 * 60 - 59, max_value=23 * 60 + 59),
)
_zone_words = st.sampled_from(
    ["UTC", "GMT", "Z", "z", "CET", "EST", "PST", "BRST", "+0100", "-03:00", "GMT+3", "(CET)"]
)
_date_like = st.builds(
    lambda d, sep, zone: f"{d.isoformat(sep=sep)} {zone}".strip(),
    st.datetimes(),
    st.sampled_from(["T", " "]),
    _zone_words | st.just(""),
)


@given(
    st.text()
    | st.integers()
    | st.floats()
    | _date_like
    | st.datetimes(timezones=st.none() | _offsets)
    | st.dates()
    | st.none()
)
@example("0001-01-01T00:00:00Z")
@example("2024-01-01 12:00 CET")
@example("2024-01-01 12:00 GMT+3")
@example(10**400)
@example(float("nan"))
def test_any_input_is_an_aware_utc_instant_none_or_invalid_date(value: Any) -> None:
    _check(value)


@given(st.datetimes(timezones=st.none() | _offsets))
def test_an_aware_instant_is_read_back_as_the_same_instant(moment: dt.datetime) -> None:
    try:
        instant = parse_instant(moment)
    except InvalidDate:  # outside the range in UTC
        naive = moment.replace(tzinfo=None)
        offset = moment.utcoffset() or dt.timedelta(0)
        assert naive - dt.datetime.min < offset or dt.datetime.max - naive < -offset
        return
    assert instant is not None
    assert instant == (moment if moment.tzinfo else moment.replace(tzinfo=UTC))
    assert parse_instant(format_instant(instant)) == instant  # the cursor text round-trips
