"""``python -m benchmarks [--quick] [--only NAME ...] [--json PATH]``: run, print, save."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from benchmarks import end_to_end, engine, example_offline, memory, pipelined
from benchmarks.common import Row

BENCHMARKS: dict[str, Callable[..., list[Row]]] = {
    engine.NAME: engine.run,
    end_to_end.NAME: end_to_end.run,
    example_offline.NAME: example_offline.run,
    memory.NAME: memory.run,
    pipelined.NAME: pipelined.run,
}
RESULTS = Path(__file__).with_name("results") / "latest.json"
COLUMNS = ("figure", "value", "baseline", "ratio", "target", "met?")


def _number(value: float | None, unit: str = "") -> str:
    if value is None:
        return "-"
    if unit == "%":
        text = f"{value:.0f}"
    elif abs(value) >= 100:
        text = f"{value:,.0f}"
    elif abs(value) >= 10:
        text = f"{value:.1f}"
    else:
        text = f"{value:.2f}"
    return f"{text} {unit}".rstrip()


def _met(row: Row) -> str:
    if not row.available:
        return "n/a"
    if row.met is None:
        return ""
    return "yes" if row.met else "NO"


def table_lines(rows: Sequence[Row]) -> list[str]:
    """The rows as an aligned text table (one header, one line per figure)."""
    cells: list[tuple[str, ...]] = [COLUMNS]
    for row in rows:
        baseline = ""
        if row.baseline:
            baseline = f"{_number(row.baseline_value, row.unit)} ({row.baseline})"
        value = _number(row.value, row.unit) if row.available else row.note
        ratio = "" if row.ratio is None else f"{row.ratio:.2f}x"
        cells.append(
            (f"[{row.benchmark}] {row.figure}", value, baseline, ratio, row.target, _met(row))
        )
    widths = [max(len(line[i]) for line in cells) for i in range(len(COLUMNS))]
    lines = []
    for n, line in enumerate(cells):
        lines.append("  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)))
        if n == 0:
            lines.append("  ".join("-" * width for width in widths))
    return [line.rstrip() for line in lines]


def notes_lines(rows: Sequence[Row]) -> list[str]:
    """The notes of rows that have one, numbered by figure."""
    return [f"* [{row.benchmark}] {row.figure}: {row.note}" for row in rows if row.note]


def machine() -> dict[str, Any]:
    """What the figures were measured on."""
    return {
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "load_average": os.getloadavg() if hasattr(os, "getloadavg") else None,
    }


def run(names: Sequence[str], quick: bool, echo: Callable[[str], None]) -> dict[str, Any]:
    """Run the named benchmarks; returns the report (machine, timings, rows)."""
    started = time.perf_counter()
    rows: list[Row] = []
    seconds: dict[str, float] = {}
    for name in names:
        echo(f"running {name} ...")
        begin = time.perf_counter()
        rows.extend(BENCHMARKS[name](quick=quick))
        seconds[name] = time.perf_counter() - begin
    return {
        "when": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "quick": quick,
        "machine": machine(),
        "seconds": seconds,
        "total_seconds": time.perf_counter() - started,
        "rows": [row.as_dict() for row in rows],
        "table": table_lines(rows),
        "notes": notes_lines(rows),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small sizes (a quick look)")
    parser.add_argument(
        "--only",
        action="append",
        choices=sorted(BENCHMARKS),
        metavar="NAME",
        help=f"run only this benchmark (repeatable): {', '.join(BENCHMARKS)}",
    )
    parser.add_argument(
        "--json", type=Path, default=RESULTS, help=f"where to write the results ({RESULTS})"
    )
    args = parser.parse_args(argv)
    names = args.only or list(BENCHMARKS)

    def echo(text: str) -> None:
        print(text, file=sys.stderr, flush=True)

    report = run(names, args.quick, echo)
    info = report["machine"]
    print(
        f"Python {info['python']} on {info['platform']}, {info['cpus']} CPUs; "
        f"{'quick' if args.quick else 'full'} run in {report['total_seconds']:.0f} s"
    )
    print("\n".join(report["table"]))
    if report["notes"]:
        print("\nNotes:")
        print("\n".join(report["notes"]))
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nresults written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
