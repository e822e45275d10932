"""Offline end to end: feed → `python -m example_connector --offline` → bundle files.

Every bundle validates with stix2-validator and carries what its objects
reference; one indicator per good row, whose pattern gives back the exact URL;
a rerun adds nothing; appended newer rows add exactly those.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
from stix2patterns.v21.pattern import Pattern
from stix2validator import validate_file

from connector_batching.local import LocalWorkManager
from example_connector.__main__ import main
from example_connector.connector import STATE_KEY

from .conftest import TRICKY_URLS, make_feed_rows, unescape_pattern_literal, write_feed

ROWS = 240
MORE = 31
BATCH = 23


def _run(out: Path, feed: Path, capsys: pytest.CaptureFixture[str]) -> dict[str, str]:
    code = main(["--offline", str(out), "--feed", str(feed), "--batch-size", str(BATCH)])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "\r[" not in captured.err  # no progress bar when stderr is not a terminal
    table = {}
    for line in captured.out.splitlines():
        name, sep, value = line.partition("  ")
        if sep and not line.startswith("-"):
            table[name.strip()] = value.strip()
    return table


def _refs(obj: dict[str, Any]) -> set[str]:
    refs = set(obj.get("object_marking_refs", []))
    for key in ("created_by_ref", "source_ref", "target_ref", "x_opencti_created_by_ref"):
        if key in obj:
            refs.add(obj[key])
    return refs


def _check_bundles(paths: list[Path]) -> list[dict[str, Any]]:
    """Validate each file; return all indicators (asserting each appears once)."""
    indicators: dict[str, dict[str, Any]] = {}
    for path in paths:
        result = validate_file(str(path))
        assert result.is_valid, (path.name, [str(e) for e in result.object_results[0].errors])
        bundle = json.loads(path.read_text("utf-8"))
        ids = {obj["id"] for obj in bundle["objects"]}
        for obj in bundle["objects"]:
            missing = _refs(obj) - ids
            assert not missing, (path.name, obj["id"], missing)
            if obj["type"] == "indicator":
                assert obj["id"] not in indicators, "indicator delivered twice"
                indicators[obj["id"]] = obj
        assert any(o["type"] == "identity" for o in bundle["objects"])
        assert any(o["type"] == "marking-definition" for o in bundle["objects"])
    return list(indicators.values())


def _url_of(indicator: dict[str, Any]) -> str:
    ((path, op, literal),) = Pattern(indicator["pattern"]).inspect().comparisons["url"]
    assert (path, op) == (["value"], "=")
    return unescape_pattern_literal(literal)


def test_offline_run_rerun_and_append(
    clean_env: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rows = make_feed_rows(ROWS)
    feed = write_feed(tmp_path / "feed.csv", rows)
    out = tmp_path / "out"

    # first run: everything
    table = _run(out, feed, capsys)
    assert table["rows read"] == str(ROWS + 7)
    assert table["rows rejected"].startswith("7 ")
    assert table["rows delivered"] == f"{ROWS} of {ROWS}"
    assert table["bundles written"] == str(math.ceil(ROWS / BATCH))
    first_paths = sorted(out.glob("*.json"))
    assert len(first_paths) == math.ceil(ROWS / BATCH)
    indicators = _check_bundles(first_paths)
    assert len(indicators) == ROWS
    by_row_id = {i["external_references"][0]["external_id"]: i for i in indicators}
    assert set(by_row_id) == {row[0] for row in rows}
    for row in rows:
        assert _url_of(by_row_id[row[0]]) == row[2]  # exact: quotes, backslashes, non-ASCII
    tricky = {_url_of(i) for i in indicators} & set(TRICKY_URLS)
    assert tricky == set(TRICKY_URLS)
    latest = max(row[1] for row in rows)
    expected_cursor = latest.replace(" ", "T") + "Z"
    with LocalWorkManager(out) as manager:
        assert manager.get_state(STATE_KEY) == expected_cursor
        works = manager.list_works()
        assert len(works) == len(first_paths)
        assert all(w.status == "complete" for w in works)

    # rerun: nothing new
    table = _run(out, feed, capsys)
    assert table["rows skipped (<= cursor)"] == str(ROWS)
    assert table["bundles written"] == "0"
    assert sorted(out.glob("*.json")) == first_paths
    with LocalWorkManager(out) as manager:
        assert manager.get_state(STATE_KEY) == expected_cursor

    # newer rows appended (the feed is published newest first): exactly those are added
    grown = make_feed_rows(ROWS + MORE)
    assert grown[:ROWS] == rows
    write_feed(feed, grown)
    table = _run(out, feed, capsys)
    assert table["rows delivered"] == f"{MORE} of {MORE}"
    new_paths = sorted(set(out.glob("*.json")) - set(first_paths))
    assert len(new_paths) == math.ceil(MORE / BATCH)
    assert sorted(out.glob("*.json"))[: len(first_paths)] == first_paths  # names sort by time
    added = _check_bundles(new_paths)
    assert {i["external_references"][0]["external_id"] for i in added} == {
        row[0] for row in grown[ROWS:]
    }
    with LocalWorkManager(out) as manager:
        assert manager.get_state(STATE_KEY) == grown[-1][1].replace(" ", "T") + "Z"
    assert not list(out.glob("*.part")) and not list(out.glob(".*"))


def test_bundled_sample_feed_is_in_the_urlhaus_format() -> None:
    sample = Path(__file__).resolve().parents[2] / "example_connector" / "data" / "sample_feed.csv"
    from example_connector.client import FeedReader

    reader = FeedReader(sample)
    rows = list(reader.rows())
    assert len(rows) >= 2000
    assert reader.stats.rows_rejected >= 5
    assert len({r.url for r in rows}) == len(rows)
    hosts = {r.url.split("/")[2].rsplit(":", 1)[0] for r in rows}
    reserved = (".test", ".example", "example.com", "example.net", "example.org")
    documentation_ips = ("192.0.2.", "198.51.100.", "203.0.113.")
    assert all(h.endswith(reserved) or h.startswith(documentation_ips) for h in hosts), hosts
