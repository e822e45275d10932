"""Benchmark 3: the example connector offline on a generated URLhaus-format feed.

Rows/s of ``python -m example_connector --offline DIR --feed FILE`` (called
in-process through its ``main``) on a generated feed, and where the time goes:
a cProfile run split into parse (CSV reading and row checks), spool (the
on-disk sort by date), convert (row → STIX dicts), serialise (bundle JSON),
write (bundle files, fsync, SQLite works and state) and the rest (engine,
cursor, logging).
"""

from __future__ import annotations

import contextlib
import cProfile
import io
import pstats
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.common import Row

NAME = "example_offline"

#: (file name ending, function name) → part of the split; cumulative times.
PARTS: dict[str, list[tuple[str, str]]] = {
    "parse": [("example_connector/client.py", "rows")],
    "spool": [
        ("example_connector/spool.py", "add"),
        ("example_connector/spool.py", "rows"),
    ],
    "convert": [("example_connector/converter.py", "group")],
    "serialise": [("connector_batching/stix.py", "bundle_json")],
    "write": [
        ("connector_batching/local.py", "send_bundle"),
        ("connector_batching/local.py", "initiate_work"),
        ("connector_batching/local.py", "work_to_process"),
        ("connector_batching/local.py", "update_state"),
    ],
}
TOTAL = ("example_connector/connector.py", "run_once")


def write_feed(path: Path, rows: int) -> None:
    """A URLhaus-format feed of ``rows`` good rows (plus the few malformed ones)."""
    from example_connector.data.make_sample_feed import feed_bytes, make_rows

    path.write_bytes(feed_bytes(make_rows(rows)))


def run_offline(feed: Path, out: Path) -> str:
    """One offline run; returns what it printed.  Raises if it did not succeed."""
    from example_connector.__main__ import main

    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        code = main(["--offline", str(out), "--feed", str(feed), "--log-level", "error"])
    if code != 0:
        raise RuntimeError(f"example connector exited {code}:\n{printed.getvalue()}")
    return printed.getvalue()


def _cumulative(stats: pstats.Stats, where: str, function: str) -> float:
    table: dict[Any, Any] = stats.stats  # type: ignore[attr-defined]
    total = 0.0
    for (filename, _line, name), (_cc, _nc, _tt, cumulative, _callers) in table.items():
        if name == function and filename.endswith(where):
            total += cumulative
    return total


def profile_split(feed: Path, out: Path) -> dict[str, float]:
    """Seconds per part (profiled run, so slower than the timed one) and their total."""
    profiler = cProfile.Profile()
    profiler.enable()
    try:
        run_offline(feed, out)
    finally:
        profiler.disable()
    stats = pstats.Stats(profiler)
    parts = {
        part: sum(_cumulative(stats, where, fn) for where, fn in functions)
        for part, functions in PARTS.items()
    }
    # send_bundle's own time includes bundle_json: count it once, as serialise
    parts["write"] = max(parts["write"] - parts["serialise"], 0.0)
    total = _cumulative(stats, *TOTAL)
    parts["engine and rest"] = max(total - sum(parts.values()), 0.0)
    parts["total"] = total
    return parts


def run(
    quick: bool = False,
    *,
    rows: int | None = None,
    profile_rows: int | None = None,
    repeat: int | None = None,
) -> list[Row]:
    """Rows/s on the timed feed, then the profile split on a (smaller) feed."""
    count = rows or (10_000 if quick else 100_000)
    sample = min(profile_rows or (5_000 if quick else 20_000), count)
    reps = repeat or 1
    with tempfile.TemporaryDirectory(prefix="bench-example-") as tmp:
        root = Path(tmp)
        feed = root / "feed.csv"
        write_feed(feed, count)
        best = float("inf")
        for n in range(reps):
            start = time.perf_counter()
            run_offline(feed, root / f"out-{n}")
            best = min(best, time.perf_counter() - start)
        small = root / "profile.csv"
        write_feed(small, sample)
        split = profile_split(small, root / "out-profile")
    rate = count / best
    total = split.pop("total") or 1.0
    shares = {part: seconds / total for part, seconds in split.items()}
    top = ", ".join(
        f"{part} {share:.0%}" for part, share in sorted(shares.items(), key=lambda kv: -kv[1])
    )
    rows_out = [
        Row(
            benchmark=NAME,
            figure=f"offline run, {count:,} rows",
            value=rate,
            unit="rows/s",
            note=f"profile ({sample:,} rows): {top}",
            details={
                "rows": count,
                "seconds": best,
                "repeat": reps,
                "profile_rows": sample,
                "profile_seconds": split,
                "profile_shares": shares,
            },
        )
    ]
    for part, share in sorted(shares.items(), key=lambda kv: -kv[1]):
        rows_out.append(
            Row(
                benchmark=NAME,
                figure=f"  time share: {part}",
                value=share * 100,
                unit="%",
                details={"profiled_seconds": split[part], "profile_rows": sample},
            )
        )
    return rows_out
