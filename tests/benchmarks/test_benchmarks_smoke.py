"""Smoke test of the benchmarks: each runs at tiny sizes and reports well-formed rows.

No timing is asserted: only the structure of the rows, the table and the JSON.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from benchmarks import __main__ as cli
from benchmarks import end_to_end, engine, example_offline, memory, pipelined
from benchmarks.common import NoOpWorkManager, Row, judge
from benchmarks.platform import broker_problem
from benchmarks.seed_reference import SeedReferenceProcessor

TINY: dict[str, Any] = {
    engine.NAME: lambda quick: engine.run(items=2_000, repeat=1),
    memory.NAME: lambda quick: memory.run(items=3_000, batch_sizes=(10, 100, 1_000)),
    example_offline.NAME: lambda quick: example_offline.run(rows=150, profile_rows=100),
    end_to_end.NAME: lambda quick: end_to_end.run(
        groups=12, naive_objects=3, batch_size=5, repeat=1
    ),
    pipelined.NAME: lambda quick: pipelined.run(rows=60, split_rows=20, repeat=1),
}


def _require_broker_in_ci() -> None:
    problem = broker_problem()
    if problem is not None and os.environ.get("CONNECTOR_BATCHING_REQUIRE_BROKER") == "1":
        pytest.fail(f"{problem} — required by CONNECTOR_BATCHING_REQUIRE_BROKER=1")


def _check_rows(rows: list[Row], benchmark: str) -> None:
    assert rows, f"{benchmark} reported nothing"
    for row in rows:
        assert row.benchmark == benchmark
        assert row.figure
        if not row.available:
            assert row.value is None and row.note.startswith("not available")
            continue
        assert isinstance(row.value, float | int) and row.value >= 0, row
        assert row.unit
        if row.baseline:
            assert row.baseline_value is not None and row.baseline_value > 0, row
            assert row.ratio is not None and row.ratio > 0, row
        if row.target:
            assert row.met is judge(row.ratio, row.target), row
        json.dumps(row.as_dict())


def test_engine_rows() -> None:
    rows = TINY[engine.NAME](True)
    _check_rows(rows, engine.NAME)
    figures = {row.figure for row in rows}
    for label in engine.HOOKS:
        assert f"add_items, {label}" in figures
        assert f"add_item, {label}" in figures
        assert f"seed reference design add_item, {label}" in figures
    targeted = {row.figure: row.target for row in rows if row.target}
    assert targeted == {"add_items, no hooks": "<= 6", "add_item, no hooks": "<= 13"}


def test_bare_loop_and_seed_reference_deliver_everything() -> None:
    items = [{"id": f"x--{n}", "type": "x", "modified": "2026-01-01T00:00:00Z"} for n in range(25)]
    assert engine.bare_loop(items, batch_size=10) == 2
    manager = NoOpWorkManager()
    seed = SeedReferenceProcessor(
        manager, batch_size=10, date_extraction_function=lambda item: item["modified"]
    )
    for item in items:
        assert seed.add_item(item)
    seed.flush()
    assert manager.objects == 25 and manager.works == 3 and seed.total_batches_processed == 3


def test_memory_rows() -> None:
    rows = TINY[memory.NAME](True)
    _check_rows(rows, memory.NAME)
    assert len(rows) == 4
    assert rows[-1].target == "<= 1.2"


def test_example_offline_rows() -> None:
    rows = TINY[example_offline.NAME](True)
    _check_rows(rows, example_offline.NAME)
    shares = rows[0].details["profile_shares"]
    assert set(shares) == {*example_offline.PARTS, "engine and rest"}
    assert sum(shares.values()) == pytest.approx(1.0, abs=0.01)


@pytest.mark.broker
def test_end_to_end_rows() -> None:
    _require_broker_in_ci()
    rows = TINY[end_to_end.NAME](True)
    _check_rows(rows, end_to_end.NAME)
    figures = [row.figure for row in rows]
    assert "batched vs naive per-object sending" in figures
    assert "batched vs direct send_stix2_bundle (time ratio)" in figures
    assert "bundle mode vs split mode" in figures
    if broker_problem() is None:
        batched = next(row for row in rows if row.figure.startswith("batched vs naive"))
        # every object sent reached the push queue (counted before the purge)
        assert batched.details["batched"]["messages"] >= batched.details["batched"]["objects"]


@pytest.mark.broker
def test_pipelined_rows() -> None:
    _require_broker_in_ci()
    rows = TINY[pipelined.NAME](True)
    _check_rows(rows, pipelined.NAME)
    assert any(row.target == ">= 1.5" for row in rows)
    assert any("LocalWorkManager" in row.figure and row.available for row in rows)


def test_cli_prints_table_and_writes_json(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(
        cli, "BENCHMARKS", {name: TINY[name] for name in (engine.NAME, memory.NAME)}
    )
    out = tmp_path / "latest.json"
    assert cli.main(["--only", engine.NAME, "--only", memory.NAME, "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    header = next(line for line in printed.splitlines() if line.startswith("figure"))
    for column in cli.COLUMNS:
        assert column in header
    report = json.loads(out.read_text())
    assert set(report) >= {"when", "machine", "rows", "table", "seconds", "notes"}
    assert report["machine"]["python"]
    assert {row["benchmark"] for row in report["rows"]} == {engine.NAME, memory.NAME}
    assert len(report["table"]) == len(report["rows"]) + 2  # header and rule
