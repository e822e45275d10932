"""Fixtures for the example connector tests: synthetic feeds, a clean environment."""

from __future__ import annotations

import importlib.util
import json
import re
import signal
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from example_connector.config_docs import settings_info
from tests.integration.conftest import amqp_url, broker, stub  # noqa: F401 - shared fixtures

REPO = Path(__file__).resolve().parents[2]
FEED_SCRIPT = REPO / "example_connector" / "data" / "make_sample_feed.py"

#: URLs that must survive the trip into an indicator pattern byte for byte.
TRICKY_URLS = (
    "http://quote.test/it's",
    "http://quote.test/''double''",
    "http://slash.test/dir\\file.exe",
    "http://slash.test/end\\",
    "http://both.test/\\'",
    "http://both.test/a\\\\'b'\\c",
    "https://bücher.example/straße/ファイル.exe",
    "http://emoji.test/\U0001f600?q=é&r='x'",
    "http://203.0.113.5:8080/%zz/100%/x",
)


def _load_feed_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("make_sample_feed", FEED_SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


FEED = _load_feed_module()


def make_feed_rows(
    count: int, *, seed: int = 7, first_id: int = 3_000_000, **kw: Any
) -> list[list[str]]:
    """Good rows (oldest first); the first rows carry the tricky URLs."""
    rows: list[list[str]] = FEED.make_rows(count, seed=seed, first_id=first_id, **kw)
    for row, url in zip(rows, TRICKY_URLS, strict=False):
        row[2] = url
    return rows


def write_feed(path: Path, rows: list[list[str]], *, malformed: bool = True) -> Path:
    """Write ``rows`` as a URLhaus CSV feed (newest first, with malformed rows)."""
    path.write_bytes(FEED.feed_bytes(rows, malformed=malformed))
    return path


def unescape_pattern_literal(literal: str) -> str:
    """The string a STIX pattern literal (``'...'`` with escapes) stands for."""
    assert literal.startswith("'") and literal.endswith("'"), literal
    return re.sub(r"\\(.)", r"\1", literal[1:-1], flags=re.DOTALL)


def read_bundles(directory: Path) -> list[dict[str, Any]]:
    """Every bundle file in ``directory``, oldest first."""
    return [json.loads(p.read_text("utf-8")) for p in sorted(directory.glob("*.json"))]


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No connector variables in the environment; cwd is an empty temp dir."""
    for setting in settings_info():
        for name in (setting.env, *setting.aliases):
            monkeypatch.delenv(name, raising=False)
    workdir = tmp_path / "cwd"
    workdir.mkdir()
    monkeypatch.chdir(workdir)
    return workdir


@pytest.fixture(autouse=True)
def _restore_signal_handlers() -> Iterator[None]:
    saved = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
    yield
    for sig, handler in saved.items():
        signal.signal(sig, handler)
