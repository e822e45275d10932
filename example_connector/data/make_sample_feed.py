"""Generate a synthetic feed in the abuse.ch URLhaus CSV format.

Every host is reserved for documentation or testing (``example.com``/``.net``/
``.org``, ``*.test``, ``*.example``, RFC 5737 addresses), so nothing here points
at a real machine.  Rows are written newest first, like the real dump, and a few
deliberately malformed rows are mixed in.

    python example_connector/data/make_sample_feed.py [OUT] [--rows N] [--seed S]

Rerunning with the same arguments produces the same file.
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import io
import random
from pathlib import Path

from example_connector.client import COLUMNS

HEADER = (
    "################################################################\n"
    "# abuse.ch URLhaus Database Dump (CSV - recent URLs only)      #\n"
    "# Last updated: {updated} (UTC)                      #\n"
    "#                                                              #\n"
    "# Terms Of Use: https://urlhaus.abuse.ch/api/                  #\n"
    "# For questions please contact urlhaus [at] abuse.ch           #\n"
    "################################################################\n"
    "#\n"
    "# " + ",".join(COLUMNS) + "\n"
)
HOSTS = (
    "example.com",
    "www.example.com",
    "cdn.example.net",
    "files.example.org",
    "malware.test",
    "dropper.test",
    "update-service.test",
    "bad.example",
    "bücher.example",
    "παράδειγμα.test",
    "192.0.2.10",
    "198.51.100.23",
    "203.0.113.77",
)
PATHS = (
    "/bins/x86",
    "/bins/arm7",
    "/i",
    "/mozi.m",
    "/invoice.doc",
    "/download/setup.exe",
    "/wp-content/uploads/payload.zip",
    "/a'b/quoted.exe",
    "/dir\\with\\backslashes.bin",
    "/caf\u00e9/na\u00efve.ps1",
    "/\u65e5\u672c/\u30d5\u30a1\u30a4\u30eb.exe",
    "/q?file=it's&x=\\'mixed\\'",
)
TAGS = ("32-bit", "elf", "mips", "arm", "Mozi", "Mirai", "exe", "doc", "emotet", "AgentTesla")
THREATS = ("malware_download",)
REPORTERS = ("reporter_one", "reporter_two", "sandbox-bot", "analyst")
#: Rows that must be rejected by a reader: (description, raw line).
MALFORMED = (
    ("wrong column count", '"9000001","2025-01-01 00:00:00","http://short.test/"'),
    (
        "bad date",
        '"9000002","yesterday","http://bad-date.test/x","online","","malware_download",'
        '"elf","https://urlhaus.abuse.ch/url/9000002/","analyst"',
    ),
    (
        "empty url",
        '"9000003","2025-01-01 00:00:01","","online","","malware_download","elf",'
        '"https://urlhaus.abuse.ch/url/9000003/","analyst"',
    ),
    (
        "absurd url",
        '"9000004","2025-01-01 00:00:02","http://long.test/' + "a" * 5000 + '","online","",'
        '"malware_download","elf","https://urlhaus.abuse.ch/url/9000004/","analyst"',
    ),
    (
        "not a url",
        '"9000005","2025-01-01 00:00:03","not a url at all","online","","malware_download",'
        '"elf","https://urlhaus.abuse.ch/url/9000005/","analyst"',
    ),
    ("unbalanced quote", '"9000006","2025-01-01 00:00:04","http://quote.test/'),
)
#: A row whose bytes are not UTF-8 (an encoding error).
BAD_ENCODING = (
    b'"9000007","2025-01-01 00:00:05","http://latin1.test/caf\xe9","online","",'
    b'"malware_download","elf","https://urlhaus.abuse.ch/url/9000007/","analyst"'
)


def csv_line(fields: list[str]) -> str:
    """One row quoted the way URLhaus quotes it (every field in double quotes)."""
    out = io.StringIO()
    csv.writer(out, quoting=csv.QUOTE_ALL, lineterminator="").writerow(fields)
    return out.getvalue()


def make_rows(
    count: int,
    *,
    seed: int = 1,
    start: dt.datetime = dt.datetime(2025, 1, 1, tzinfo=dt.UTC),
    first_id: int = 3_000_000,
    step_seconds: int = 37,
) -> list[list[str]]:
    """``count`` good rows, oldest first, ``step_seconds`` apart from ``start``."""
    rng = random.Random(seed)
    rows: list[list[str]] = []
    seen: set[str] = set()
    for n in range(count):
        row_id = first_id + n
        added = start + dt.timedelta(seconds=step_seconds * n)
        scheme = rng.choice(("http", "http", "https"))
        host = rng.choice(HOSTS)
        port = rng.choice(("", "", "", ":8080", ":35123"))
        url = f"{scheme}://{host}{port}{rng.choice(PATHS)}"
        if n % 7 == 0 or url in seen:  # URLhaus lists each URL once
            url += f"{'&' if '?' in url else '?'}id={row_id}"
        seen.add(url)
        status = rng.choice(("online", "offline", "offline"))
        last_online = "" if status == "offline" and n % 3 else added.strftime("%Y-%m-%d %H:%M:%S")
        tags = ",".join(sorted(set(rng.sample(TAGS, rng.randint(0, 3)))))
        rows.append(
            [
                str(row_id),
                added.strftime("%Y-%m-%d %H:%M:%S"),
                url,
                status,
                last_online,
                rng.choice(THREATS),
                tags or "None",
                f"https://urlhaus.abuse.ch/url/{row_id}/",
                rng.choice(REPORTERS),
            ]
        )
    return rows


def feed_bytes(
    rows: list[list[str]], *, malformed: bool = True, newest_first: bool = True
) -> bytes:
    """The feed file for ``rows`` (given oldest first), with the URLhaus header."""
    ordered = list(reversed(rows)) if newest_first else list(rows)
    lines: list[bytes] = [csv_line(row).encode("utf-8") for row in ordered]
    if malformed and lines:
        bad = [m[1].encode("utf-8") for m in MALFORMED] + [BAD_ENCODING]
        gap = max(1, len(lines) // (len(bad) + 1))
        for k, raw in enumerate(bad, start=1):
            lines.insert(min(len(lines), k * gap + k - 1), raw)
    updated = rows[-1][1] if rows else "1970-01-01 00:00:00"
    body = HEADER.format(updated=updated).encode("utf-8")
    return body + b"\r\n".join(lines) + b"\r\n"


def main(argv: list[str] | None = None) -> int:
    """Write the sample feed (default: ``sample_feed.csv`` next to this script)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("out", nargs="?", default=str(Path(__file__).with_name("sample_feed.csv")))
    parser.add_argument("--rows", type=int, default=3000)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    Path(args.out).write_bytes(feed_bytes(make_rows(args.rows, seed=args.seed)))
    print(f"wrote {args.rows} rows + {len(MALFORMED) + 1} malformed rows to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
