"""A hostile-input corpus through the real CLI: no crash, every bad row counted, good rows out.

Each case is a feed file built here (seeded, reproducible) and run with
``python -m example_connector --offline`` (in-process ``main``).  For each: exit
0; the rejected rows counted by reason exactly as expected; the good rows
delivered; every bundle valid for stix2-validator; every pattern parsed by
stix2-patterns and holding the feed's URL exactly; the cursor at the latest
good row and never at a date a hostile row made up.
"""

from __future__ import annotations

import datetime as dt
import json
import random
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from stix2patterns.v21.pattern import Pattern
from stix2validator import validate_file

from example_connector.__main__ import main
from example_connector.connector import STATE_KEY
from tests.example.conftest import FEED, unescape_pattern_literal

from .conftest import iso_z, read_state, record, summary_table

HEADER: bytes = FEED.HEADER.format(updated="2025-03-01 00:00:00").encode()
BASE = dt.datetime(2025, 3, 1, tzinfo=dt.UTC)


def fields(n: int, *, url: str | None = None, date: str | None = None) -> list[str]:
    """A good row's fields: id 5000000+n, one second apart from BASE."""
    added = date or (BASE + dt.timedelta(seconds=n)).strftime("%Y-%m-%d %H:%M:%S")
    return [
        str(5_000_000 + n),
        added,
        url or f"http://good.test/{n}",
        "online",
        "",
        "malware_download",
        "elf",
        f"https://urlhaus.abuse.ch/url/{5_000_000 + n}/",
        "analyst",
    ]


def line(row: list[str]) -> bytes:
    text: str = FEED.csv_line(row)
    return text.encode("utf-8")


@dataclass
class Case:
    name: str
    injected: str
    body: bytes
    rejected: dict[str, int]
    good: list[list[str]] = field(default_factory=list)
    any_reasons: bool = False  # binary: reasons vary, each counted


def _feed(lines: list[bytes], good: list[list[str]]) -> bytes:
    """Good rows and hostile lines, interleaved, newest first like URLhaus."""
    body = [line(r) for r in reversed(good)]
    for k, raw in enumerate(lines):
        body.insert(min(len(body), 2 * k + 1), raw)
    return HEADER + b"\r\n".join(body) + b"\r\n"


def _cases() -> Iterator[Case]:
    good = [fields(n) for n in range(3)]
    yield Case(
        "malformed_csv",
        "unbalanced quotes, text after a closing quote, CR-only line endings",
        _feed(
            [
                b'"9000001","2025-03-01 00:00:00","http://q.test/',
                b'"9000002","2025-03-01 00:00:01","http://q.test/a"b","online","","x","",'
                b'"https://urlhaus.abuse.ch/url/9000002/","r"',
                line(fields(91)) + b"\r" + line(fields(92)) + b"\r" + line(fields(93)),
            ],
            good,
        ),
        {"csv": 3},
        good,
    )
    yield Case(
        "column_count",
        "rows with 1, 3 and 12 columns",
        _feed([b'"lonely"', b'"1","2","3"', line([*fields(94), "x", "y", "z"])], good),
        {"column_count": 3},
        good,
    )
    yield Case(
        "nul_bytes",
        "NUL bytes in the URL, in the tags, a line of NULs",
        _feed(
            [
                line(fields(95, url="http://nul.test/a\x00b")),
                line(fields(96)).replace(b'"elf"', b'"el\x00f"'),
                b"\x00" * 64,
            ],
            good,
        ),
        {"nul_byte": 3},
        good,
    )
    yield Case(
        "huge_fields",
        "a 5,000-character URL, a 10,000-character reporter, 60,000 characters of tags",
        _feed(
            [
                line(fields(97, url="http://long.test/" + "a" * 5000)),
                line([*fields(98)[:8], "r" * 10_000]),
                line([*fields(99)[:6], ",".join(["t"] * 30_000), *fields(99)[7:]]),
            ],
            good,
        ),
        {"url_too_long": 1, "field_too_long": 2},
        good,
    )
    yield Case(
        "huge_lines",
        "lines of 100 KB and 5 MB (over the 64 KiB line limit), a 70 KB last line "
        "without a newline",
        _feed([b"x" * 100_000, b'"1","' + b"y" * 5_000_000 + b'"'], good) + b"z" * 70_000,
        {"line_too_long": 3},
        good,
    )
    yield Case(
        "invalid_utf8",
        "invalid UTF-8: a stray 0xFF, an overlong encoding, an encoded surrogate",
        _feed(
            [
                line(fields(100)).replace(b"good.test", b"bad\xff.test"),
                line(fields(101)).replace(b"good.test", b"bad\xc0\xaf.test"),
                line(fields(102)).replace(b"good.test", b"bad\xed\xa0\x80.test"),
            ],
            good,
        ),
        {"encoding": 3},
        good,
    )
    tricky = [
        "http://inj.test/'] OR [url:value = 'x",
        "http://inj.test/' OR '1'='1",
        "http://inj.test/a\\'b",
        "http://inj.test/\\\\server\\share\\",
        "http://inj.test/]]]",
        "http://inj.test/%0Aencoded-newline",
        'http://inj.test/"double"',
        "http://inj.test/\u2028line-separator",
    ]
    injected = [fields(10 + k, url=url) for k, url in enumerate(tricky)]
    yield Case(
        "pattern_breaking_urls",
        "URLs with quotes, backslashes, `]`, `' OR`, a quoted newline inside the URL",
        _feed(
            # a real newline inside a quoted field: URLhaus feeds are one row per line,
            # so it splits into two lines, each rejected
            [line(fields(103, url="http://inj.test/a\nb"))],
            injected,
        ),
        {"csv": 1, "column_count": 1},
        injected,
    )
    soon = (dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)).strftime("%Y-%m-%d %H:%M:%S")
    dated = [fields(1), fields(2, date=soon)]
    yield Case(
        "future_dates",
        "dates in year 9999 and 2099 (and 9999 with an offset, which overflows UTC); one "
        "row an hour ahead (clock skew, within the 1-day margin)",
        _feed(
            [
                line(fields(104, date="9999-12-31 23:59:59")),
                line(fields(105, date="2099-01-01 00:00:00")),
                line(fields(106, date="9999-12-31 23:59:59-05:00")),
            ],
            dated,
        ),
        {"future_date": 2, "bad_date": 1},
        dated,
    )
    epoch = [fields(3), fields(4, date="1970-01-01 00:00:00")]
    yield Case(
        "past_dates",
        "dates before 1970 (1969, 1900, year 1, and year 1 with an offset)",
        _feed(
            [
                line(fields(107, date="1969-12-31 23:59:59")),
                line(fields(108, date="1900-01-01 00:00:00")),
                line(fields(109, date="0001-01-01 00:00:00")),
                line(fields(110, date="0001-01-01 00:00:00+01:00")),
            ],
            epoch,
        ),
        {"past_date": 3, "bad_date": 1},
        epoch,
    )
    yield Case("empty_file", "an empty file", b"", {})
    yield Case("header_only", "the URLhaus header and no row", HEADER, {})
    yield Case(
        "binary",
        "not CSV at all: 64 KB of seeded random bytes",
        random.Random(5).randbytes(64 * 1024),
        {},
        any_reasons=True,
    )


CASES = list(_cases())


def _check_bundles(out: Path, good: list[list[str]]) -> None:
    url_of = {r[0]: r[2] for r in good}
    seen: list[str] = []
    for path in sorted(out.glob("*.json")):
        result = validate_file(str(path))
        assert result.is_valid, (path.name, [str(e) for e in result.object_results[0].errors])
        for obj in json.loads(path.read_text("utf-8"))["objects"]:
            if obj["type"] != "indicator":
                continue
            row_id = obj["external_references"][0]["external_id"]
            seen.append(row_id)
            comparisons = Pattern(obj["pattern"]).inspect().comparisons
            assert list(comparisons) == ["url"], obj["pattern"]
            [(path_, op, literal)] = comparisons["url"]
            assert (path_, op) == (["value"], "=")
            assert unescape_pattern_literal(literal) == url_of[row_id]  # exact round trip
    assert sorted(seen) == sorted(url_of)


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_hostile_feed(case: Case, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    feed = tmp_path / "feed.csv"
    feed.write_bytes(case.body)
    out = tmp_path / "out"
    code = main(["--offline", str(out), "--feed", str(feed), "--batch-size", "2"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    table = summary_table(captured.out)
    rejected = Counter(
        {
            reason: int(count)
            for reason, count in (
                part.split(" ")
                for part in table["rows rejected"].partition("(")[2].rstrip(")").split(", ")
                if part
            )
        }
    )
    total_rejected = int(table["rows rejected"].split()[0])
    assert sum(rejected.values()) == total_rejected
    if case.any_reasons:
        assert total_rejected == int(table["rows read"]) > 0  # every line counted
        assert set(rejected) <= {
            "csv", "column_count", "encoding", "nul_byte", "line_too_long", "empty_id",
            "bad_date", "field_too_long",
        }  # fmt: skip
    else:
        assert rejected == Counter(case.rejected)
        assert int(table["rows read"]) == total_rejected + len(case.good)
    assert table["rows delivered"] == f"{len(case.good)} of {len(case.good)}"
    _check_bundles(out, case.good)
    expected = max((iso_z(r[1]) for r in case.good), default=None)
    assert read_state(out, STATE_KEY) == expected
    reasons = ", ".join(f"{k} {v}" for k, v in sorted(case.rejected.items())) or "none"
    if case.any_reasons:
        outcome = (
            "exit 0; every line rejected and counted (csv, encoding, NUL byte, column "
            "count, ...), nothing delivered, no cursor"
        )
    elif not case.good:
        outcome = "exit 0; nothing read, nothing delivered, no bundle file, no cursor"
    else:
        outcome = (
            f"exit 0; rejected: {reasons}; the {len(case.good)} good rows delivered, every "
            "bundle valid (stix2-validator), every pattern parses and holds the exact URL; "
            "cursor at the latest good row"
        )
    record(f"10-{CASES.index(case):02d}", f"hostile feed: {case.injected}", outcome)


def _rows_with_a_tie(count: int, tie: range) -> list[list[str]]:
    rows = [fields(n) for n in range(count)]
    for n in tie:  # these rows share one second
        rows[n][1] = rows[tie.start][1]
    return rows


def test_row_limit_delivers_the_oldest_rows_and_the_next_runs_continue(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    rows = _rows_with_a_tie(100, range(28, 32))  # the 30-row cut falls inside the tie
    feed = tmp_path / "feed.csv"
    feed.write_bytes(_feed([], rows))
    out = tmp_path / "out"
    monkeypatch.setenv("URLHAUS_MAX_ROWS_PER_RUN", "30")
    per_run: list[int] = []
    for _ in range(6):
        assert main(["--offline", str(out), "--feed", str(feed), "--batch-size", "7"]) == 0
        captured = capsys.readouterr()
        table = summary_table(captured.out)
        delivered = int(table["rows delivered"].split()[0])
        per_run.append(delivered)
        if "rows deferred (limit)" in table:
            assert "URLHAUS_MAX_ROWS_PER_RUN (30) reached" in caplog.text
        caplog.clear()
        if delivered == 0:
            break
    # the first run stops before the tied second instead of splitting it
    assert per_run == [28, 30, 30, 12, 0]
    ids = [
        o["external_references"][0]["external_id"]
        for p in sorted(out.glob("*.json"))
        for o in json.loads(p.read_text("utf-8"))["objects"]
        if o["type"] == "indicator"
    ]
    assert sorted(ids) == sorted(r[0] for r in rows)  # each row once, none skipped
    assert read_state(out, STATE_KEY) == max(iso_z(r[1]) for r in rows)
    record(
        "20",
        "more new rows than `URLHAUS_MAX_ROWS_PER_RUN` (100 rows, limit 30, 4 rows "
        "sharing the second where the cut falls)",
        "each run spools at most the 31 oldest rows (disk bounded), delivers the oldest "
        "up to the last whole second (28, then 30, 30, 12), logs the limit and the "
        "rows deferred; the cursor never passes a deferred row, so the next runs "
        "continue; each row delivered once",
    )


def test_row_limit_smaller_than_one_second_of_rows_delivers_nothing_and_says_why(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    rows = _rows_with_a_tie(40, range(0, 40))
    feed = tmp_path / "feed.csv"
    feed.write_bytes(_feed([], rows))
    out = tmp_path / "out"
    monkeypatch.setenv("URLHAUS_MAX_ROWS_PER_RUN", "30")
    assert main(["--offline", str(out), "--feed", str(feed)]) == 0
    captured = capsys.readouterr()
    assert "more rows than that share the second" in caplog.text
    assert "raise URLHAUS_MAX_ROWS_PER_RUN" in caplog.text
    assert summary_table(captured.out)["rows delivered"] == "0 of 0"
    assert read_state(out, STATE_KEY) is None  # the cursor did not move past them
    monkeypatch.setenv("URLHAUS_MAX_ROWS_PER_RUN", "40")
    assert main(["--offline", str(out), "--feed", str(feed)]) == 0
    assert summary_table(capsys.readouterr().out)["rows delivered"] == "40 of 40"
    record(
        "21",
        "more rows in one second than `URLHAUS_MAX_ROWS_PER_RUN` (40 rows, limit 30)",
        "nothing delivered rather than half a second; an error names the setting to "
        "raise; the cursor stays; with the limit raised the next run delivers all 40",
    )
