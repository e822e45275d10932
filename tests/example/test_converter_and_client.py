"""Feed reader and converter: bad rows counted by line, exact patterns, pycti ids, markings."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import stix2
from hypothesis import given, settings
from hypothesis import strategies as st
from pycti import Identity, Indicator, MarkingDefinition, StixCoreRelationship
from rfc3986_validator import validate_rfc3986
from stix2patterns.v21.pattern import Pattern
from stix2validator import validate_string

from connector_batching.stix import bundle_json
from example_connector.client import FeedError, FeedReader, parse_row
from example_connector.converter import (
    URLhausConverter,
    escape_pattern_value,
    tlp_marking,
    url_as_uri,
    url_observable_id,
)
from example_connector.urls import redact_url, secret_fragments

from .conftest import TRICKY_URLS, make_feed_rows, unescape_pattern_literal, write_feed


def test_reader_counts_every_bad_row_with_its_line_number(tmp_path: Path) -> None:
    rows = make_feed_rows(60)
    feed = write_feed(tmp_path / "feed.csv", rows)
    reader = FeedReader(feed, max_line_bytes=4096)
    good = list(reader.rows())
    assert len(good) == 60
    assert reader.stats.rows_read == 67 and reader.stats.rows_rejected == 7
    assert dict(reader.stats.rejected) == {
        "column_count": 1,
        "bad_date": 1,
        "empty_url": 1,
        "line_too_long": 1,  # the 5000-character URL exceeds 4096 bytes: never buffered
        "invalid_url": 1,
        "csv": 1,
        "encoding": 1,
    }
    lines = feed.read_bytes().split(b"\n")
    for line_number, reason, _detail in reader.stats.first_rejections:
        raw = lines[line_number - 1]
        assert b'"900000' in raw, (reason, raw[:60])  # the malformed rows' ids
    assert {r.id for r in good} == {row[0] for row in rows}


def test_rows_parse_dates_tags_and_links() -> None:
    row = parse_row(
        12,
        [
            "77",
            "2025-03-04 05:06:07",
            " http://a.test/x ",
            "online",
            "2025-03-05 00:00:00",
            "malware_download",
            "elf,Mozi,,elf",
            "",
            "someone",
        ],
    )
    assert row.line_number == 12 and row.url == "http://a.test/x"
    assert row.dateadded.isoformat() == "2025-03-04T05:06:07+00:00"
    assert row.tags == ("elf", "Mozi")
    assert row.urlhaus_link == "https://urlhaus.abuse.ch/url/77/"
    none_tags = parse_row(
        1, ["1", "2025-01-01 00:00:00", "http://a.test/", "", "", "", "None", "l", ""]
    )
    assert none_tags.tags == () and none_tags.last_online is None


class _FlakyFeedHandler(http.server.BaseHTTPRequestHandler):
    body = b""
    failures_left = 0
    requests_seen = 0

    def do_GET(self) -> None:
        type(self).requests_seen += 1
        if type(self).failures_left > 0:
            type(self).failures_left -= 1
            self.send_response(503)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        self.send_response(200)
        self.send_header("Content-Type", "text/csv")
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, format: str, *args: object) -> None:
        return


@pytest.fixture
def feed_server(tmp_path: Path) -> Iterator[tuple[str, type[_FlakyFeedHandler]]]:
    handler = type("Handler", (_FlakyFeedHandler,), {})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/feed/secret-key/recent.csv", handler
    finally:
        server.shutdown()
        server.server_close()


def test_http_feed_is_retried_then_streamed(
    tmp_path: Path, feed_server: tuple[str, type[_FlakyFeedHandler]]
) -> None:
    url, handler = feed_server
    handler.body = write_feed(tmp_path / "f.csv", make_feed_rows(25)).read_bytes()
    handler.failures_left = 2
    reader = FeedReader(url, timeout=10, retries=3)
    rows = list(reader.rows())
    assert len(rows) == 25 and reader.stats.rows_rejected == 7
    assert handler.requests_seen == 3


def test_http_errors_raise_feed_error_without_the_secret_path(
    feed_server: tuple[str, type[_FlakyFeedHandler]],
) -> None:
    url, handler = feed_server
    handler.failures_left = 10
    with pytest.raises(FeedError) as caught:
        list(FeedReader(url, timeout=10, retries=1).rows())
    assert "secret-key" not in str(caught.value)
    assert "127.0.0.1" in str(caught.value)
    assert redact_url("https://u:p@h.test:8443/k/recent.csv?key=1") == "https://h.test:8443/…"


def test_log_records_are_scrubbed_by_the_librarys_filter(tmp_path: Path) -> None:
    import importlib.util
    import io
    import logging

    from connector_batching.redaction import RedactingFilter
    from example_connector.logs import install_redaction

    assert importlib.util.find_spec("example_connector.redaction") is None  # one implementation
    url = "https://feeduser:feedpass-9f8e@feed.test/k/abcdef123456/recent.csv?key=zz-key-77"
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        install_redaction(["tok-7a6b5c4d", *secret_fragments(url)])
        install_redaction()  # idempotent: one filter per handler
        assert sum(isinstance(f, RedactingFilter) for f in handler.filters) == 1
        emitter = logging.getLogger("urllib3.test")
        emitter.setLevel(logging.WARNING)  # whatever levels earlier tests left on its parents
        emitter.warning("GET %s failed; token %s", url, "tok-7a6b5c4d")
    finally:
        root.removeHandler(handler)
        logging.getLogger("urllib3.test").setLevel(logging.NOTSET)
    text = stream.getvalue()
    for secret in ("feeduser", "feedpass-9f8e", "abcdef123456", "zz-key-77", "tok-7a6b5c4d"):
        assert secret not in text, text
    assert "GET " in text and "failed" in text


def test_missing_file_raises_feed_error(tmp_path: Path) -> None:
    with pytest.raises(FeedError, match="cannot open feed file"):
        list(FeedReader(tmp_path / "nope.csv").rows())


@pytest.mark.parametrize("url", TRICKY_URLS)
def test_pattern_holds_the_exact_url(url: str) -> None:
    pattern = f"[url:value = '{escape_pattern_value(url)}']"
    comparisons = Pattern(pattern).inspect().comparisons
    ((path, operator, literal),) = comparisons["url"]
    assert (path, operator) == (["value"], "=")
    assert unescape_pattern_literal(literal) == url
    assert validate_rfc3986(url_as_uri(url))


def test_valid_uris_are_kept_as_they_are() -> None:
    for url in ("http://a.test/x?y=1&z='2'#f", "https://[2001:db8::1]:8443/p%20q"):
        assert url_as_uri(url) == url
    assert url_as_uri("http://bücher.example/é") == "http://xn--bcher-kva.example/%C3%A9"


def test_objects_use_pycti_ids_and_reference_author_and_marking() -> None:
    converter = URLhausConverter(tlp_level="amber+strict", score=42)
    (row,) = [
        parse_row(
            5,
            [
                "9",
                "2025-02-03 04:05:06",
                TRICKY_URLS[4],
                "online",
                "",
                "malware_download",
                "elf",
                "https://urlhaus.abuse.ch/url/9/",
                "r",
            ],
        )
    ]
    observable, indicator, relationship = converter.convert(row)
    assert indicator["id"] == Indicator.generate_id(indicator["pattern"])
    assert relationship["id"] == StixCoreRelationship.generate_id(
        "based-on", indicator["id"], observable["id"]
    )
    assert (relationship["source_ref"], relationship["target_ref"]) == (
        indicator["id"],
        observable["id"],
    )
    assert converter.author["id"] == Identity.generate_id("URLhaus", "organization")
    marking_id = MarkingDefinition.generate_id("TLP", "TLP:AMBER+STRICT")
    assert converter.marking["id"] == marking_id
    for obj in (observable, indicator, relationship):
        assert obj["object_marking_refs"] == [marking_id]
    assert indicator["created_by_ref"] == converter.author["id"]
    assert indicator["valid_from"] == "2025-02-03T04:05:06.000Z"
    assert indicator["labels"] == ["elf"] and indicator["x_opencti_score"] == 42
    assert indicator["external_references"] == [
        {"source_name": "urlhaus", "url": "https://urlhaus.abuse.ch/url/9/", "external_id": "9"}
    ]
    assert converter.convert(row) == [observable, indicator, relationship]  # deterministic
    group = converter.group([row], with_shared=True)
    assert group.to_stix()[:2] == converter.shared_objects
    result = validate_string(bundle_json(group.to_stix()))
    assert result.is_valid, result.errors


def test_default_marking_is_opencti_tlp_clear() -> None:
    marking = URLhausConverter().marking
    assert marking["id"] == MarkingDefinition.generate_id("TLP", "TLP:CLEAR")
    assert marking["definition"] == {"tlp": "white"}


@pytest.mark.parametrize("level", ["clear", "TLP:GREEN", "amber", "amber+strict", "Red"])
def test_every_tlp_level_validates(level: str) -> None:
    result = validate_string(bundle_json([tlp_marking(level)]))
    assert result.is_valid


def test_unknown_tlp_level_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown TLP level 'purple'"):
        tlp_marking("purple")


@settings(max_examples=300, deadline=None)
@given(st.text())
def test_observable_ids_match_stix2(value: str) -> None:
    try:
        expected = stix2.URL(value=value).id
    except Exception:  # stix2 refuses some values (e.g. empty); nothing to compare
        return
    assert url_observable_id(value) == expected
