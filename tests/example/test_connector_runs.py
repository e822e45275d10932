"""One run of the connector in process: status filter, work names, upstream state, logging."""

from __future__ import annotations

import datetime as dt
import logging
from pathlib import Path
from typing import Any

import pytest
from pycti import StixCoreRelationship

from connector_batching.local import LocalWorkManager
from example_connector.connector import STATE_KEY, URLhausConnector
from example_connector.settings import Settings, load_settings
from example_connector.state import UPSTREAM_STATE_KEY, upstream_cursor

from .conftest import make_feed_rows, read_bundles, write_feed

NOW = dt.datetime(2026, 12, 2, 10, 0, 0, tzinfo=dt.UTC)


def _settings(feed: Path, tmp_path: Path, **env: str) -> Settings:
    environ = {"URLHAUS_CSV_URL": str(feed), "URLHAUS_BATCH_SIZE": "10", **env}
    environ["URLHAUS_DEAD_LETTER_PATH"] = str(tmp_path / "dead_letters.db")
    return load_settings(environ=environ)


def _indicator_ids(out: Path) -> list[str]:
    return [
        o["external_references"][0]["external_id"]
        for bundle in read_bundles(out)
        for o in bundle["objects"]
        if o["type"] == "indicator"
    ]


@pytest.mark.parametrize("import_offline", ["true", "false"])
def test_import_offline_decides_whether_offline_rows_are_imported(
    clean_env: Path, tmp_path: Path, import_offline: str
) -> None:
    rows = make_feed_rows(50)
    offline = {r[0] for r in rows if r[3] == "offline"}
    assert offline and len(offline) < len(rows)
    feed = write_feed(tmp_path / "feed.csv", rows, malformed=False)
    settings = _settings(feed, tmp_path, URLHAUS_IMPORT_OFFLINE=import_offline)
    out = tmp_path / "out"
    with LocalWorkManager(out) as manager:
        summary = URLhausConnector(settings, work_manager=manager).run_once(now=NOW)
    wanted = {r[0] for r in rows} - (offline if import_offline == "false" else set())
    assert sorted(_indicator_ids(out)) == sorted(wanted)
    assert summary.rows_delivered == len(wanted)
    assert summary.rows_offline_skipped == (len(offline) if import_offline == "false" else 0)
    if import_offline == "false":
        (line,) = [x for x in summary.table().splitlines() if x.startswith("rows skipped (off")]
        assert line.split()[-1] == str(len(offline))


def test_works_are_named_by_the_run_start_and_batch_number(clean_env: Path, tmp_path: Path) -> None:
    rows = make_feed_rows(25)
    feed = write_feed(tmp_path / "feed.csv", rows[:12], malformed=False)
    settings = _settings(feed, tmp_path)
    out = tmp_path / "out"
    later = NOW + dt.timedelta(hours=1)
    with LocalWorkManager(out) as manager:
        connector = URLhausConnector(settings, work_manager=manager)
        first = connector.run_once(now=NOW)
        write_feed(feed, rows, malformed=False)
        connector.run_once(now=later)
        names = [w.name for w in manager.list_works()]
    assert first.started_at == "2026-12-02T10:00:00Z"
    assert names == [
        "URLhaus run @ 2026-12-02T10:00:00Z — batch #1",
        "URLhaus run @ 2026-12-02T10:00:00Z — batch #2",
        "URLhaus run @ 2026-12-02T11:00:00Z — batch #1",
        "URLhaus run @ 2026-12-02T11:00:00Z — batch #2",
    ]


def test_an_upstream_state_is_continued(clean_env: Path, tmp_path: Path) -> None:
    rows = make_feed_rows(40)
    feed = write_feed(tmp_path / "feed.csv", rows, malformed=False)
    oldest_first = sorted(rows, key=lambda r: (r[1], int(r[0])))
    cut = dt.datetime.fromisoformat(oldest_first[14][1]).replace(tzinfo=dt.UTC)
    out = tmp_path / "out"
    with LocalWorkManager(out) as manager:
        manager.update_state(UPSTREAM_STATE_KEY, str(cut.timestamp()))  # upstream: epoch
        summary = URLhausConnector(_settings(feed, tmp_path), work_manager=manager).run_once(
            now=NOW
        )
        assert manager.get_state(STATE_KEY) == max(r[1] for r in rows).replace(" ", "T") + "Z"
        assert manager.get_state(UPSTREAM_STATE_KEY) == str(cut.timestamp())  # left as it was
    assert summary.cursor_source == UPSTREAM_STATE_KEY
    assert summary.cursor_before == cut.strftime("%Y-%m-%dT%H:%M:%SZ")
    assert summary.rows_skipped == 15  # the rows up to and including upstream's last one
    assert sorted(_indicator_ids(out)) == sorted(r[0] for r in oldest_first[15:])
    assert "(from last_processed_entry)" in summary.table()


def test_upstream_cursor_values() -> None:
    moment = dt.datetime(2025, 1, 2, 6, 49, 23, tzinfo=dt.UTC)
    assert upstream_cursor(moment.timestamp()) == moment
    assert upstream_cursor(int(moment.timestamp())) == moment
    assert upstream_cursor(str(moment.timestamp())) == moment
    assert upstream_cursor("2025-01-02T06:49:23Z") == moment  # as a platform read gives it back
    for never in (None, "", 0, 0.0, "0", True, "not a date"):
        assert upstream_cursor(never) is None, never


class _PyctiLogger:
    """pycti's connector logger: ``level(message, meta=None)``; records every call."""

    def __init__(self) -> None:
        self.lines: list[tuple[str, str, dict[str, Any] | None]] = []

    def _record(self, level: str, message: str, meta: dict[str, Any] | None = None) -> None:
        assert meta is None or isinstance(meta, dict)
        self.lines.append((level, message, meta))

    def debug(self, message: str, meta: dict[str, Any] | None = None) -> None:
        self._record("debug", message, meta)

    def info(self, message: str, meta: dict[str, Any] | None = None) -> None:
        self._record("info", message, meta)

    def warning(self, message: str, meta: dict[str, Any] | None = None) -> None:
        self._record("warning", message, meta)

    def error(self, message: str, meta: dict[str, Any] | None = None) -> None:
        self._record("error", message, meta)


class _Domain:
    def __init__(self, known: dict[str, str], fail: bool) -> None:
        self.known, self.fail, self.asked = known, fail, []

    def list(self, **kwargs: Any) -> list[dict[str, Any]]:
        name = kwargs["filters"]["filters"][0]["values"][0]
        self.asked.append(name)
        if self.fail:
            raise ValueError("Stub does not implement StixDomainObjects")
        return [{"standard_id": self.known[name]}] if name in self.known else []


class _Helper:
    """What the connector uses of a pycti helper besides the work manager: its logger and
    ``api.stix_domain_object`` (threat lookups)."""

    def __init__(self, known: dict[str, str], *, fail: bool = False) -> None:
        self.connector_logger = _PyctiLogger()
        self.api = type("Api", (), {})()
        self.api.stix_domain_object = _Domain(known, fail)


MIRAI = "malware--0a8e1d4c-2b7f-5e55-9d3a-6c1b2a3d4e5f"


@pytest.mark.parametrize("fail", [False, True])
def test_online_lines_go_through_the_connector_logger_with_metadata(
    clean_env: Path, tmp_path: Path, fail: bool
) -> None:
    rows = make_feed_rows(30)
    feed = write_feed(tmp_path / "feed.csv", rows)  # with the 7 malformed rows
    helper = _Helper({"Mirai": MIRAI}, fail=fail)
    with LocalWorkManager(tmp_path / "out") as manager:
        connector = URLhausConnector(_settings(feed, tmp_path), helper=helper, work_manager=manager)
        connector.process()
    lines = helper.connector_logger.lines
    rejected = [meta for _lvl, msg, meta in lines if msg.startswith("feed line rejected")]
    assert len(rejected) == 7 and all(meta and "line" in meta for meta in rejected)
    summaries = [(lvl, meta) for lvl, msg, meta in lines if msg.startswith("URLhaus run done")]
    assert len(summaries) == 1  # the summary, once
    level, meta = summaries[0]
    assert level == "info" and meta is not None and meta["rows_delivered"] == 30
    # the engine's lines go the same way (one per delivered batch)
    delivered = [msg for _l, msg, _m in lines if msg.startswith("Batch #") and "delivered" in msg]
    assert len(delivered) == 3

    asked = helper.api.stix_domain_object.asked
    tagged = [r for r in rows if "Mirai" in r[6].split(",")]
    objects = [o for b in read_bundles(tmp_path / "out") for o in b["objects"]]
    links = [o for o in objects if o.get("target_ref") == MIRAI]
    warnings = [msg for lvl, msg, _m in lines if lvl == "warning" and "threat" in msg]
    if fail:
        assert asked and len(asked) == 1  # the first failure stops the lookups
        assert links == [] and len(warnings) == 1
        assert meta["threat_links"] == 0
        return
    assert len(asked) == len(set(asked))  # once per tag and run
    assert tagged and len(links) == 2 * len(tagged) and meta["threat_links"] == len(links)
    indicators = {o["id"]: o for o in objects if o["type"] == "indicator"}
    for link in links:
        if link["relationship_type"] == "indicates":
            moment = dt.datetime.fromisoformat(link["start_time"].replace("Z", "+00:00"))
            naive = moment.replace(tzinfo=None)
            assert link["source_ref"] in indicators
            assert link["id"] == StixCoreRelationship.generate_id(
                "indicates", link["source_ref"], MIRAI, naive, naive
            )  # the upstream connector's id: both imports merge


def test_offline_lines_go_to_the_stdlib_logger(
    clean_env: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    feed = write_feed(tmp_path / "feed.csv", make_feed_rows(12))
    with (
        caplog.at_level(logging.INFO, logger="example_connector"),
        LocalWorkManager(tmp_path / "out") as manager,
    ):
        URLhausConnector(_settings(feed, tmp_path), work_manager=manager).run_once(now=NOW)
    mine = [r for r in caplog.records if r.name == "example_connector"]
    rejected = [r.getMessage() for r in mine if r.getMessage().startswith("feed line rejected")]
    assert len(rejected) == 7 and all("line=" in m and "reason=" in m for m in rejected)
    # offline, with URLHAUS_THREATS_FROM_LABELS on by default: said, not silent
    assert any("no platform to look threats up" in r.getMessage() for r in mine)
