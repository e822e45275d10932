"""The README stays short and its links resolve; every docs page is in the site's navigation.

The site itself is built by ``make docs`` (``mkdocs build --strict``, part of ``make test``),
which also fails on a broken link inside ``docs/``.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
MAX_README_LINES = 350
#: Inline Markdown links and images: ``[text](target)``.
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")


class _TolerantLoader(yaml.SafeLoader):
    """Reads mkdocs.yml, whose tags (``!relative``, ``!!python/name:``) are not plain YAML."""


_TolerantLoader.add_multi_constructor("!", lambda _loader, _suffix, _node: None)
_TolerantLoader.add_multi_constructor("tag:yaml.org,2002:python/", lambda _l, _s, _n: None)


def _nav_pages(entry: Any) -> set[str]:
    if isinstance(entry, str):
        return {entry}
    if isinstance(entry, list):
        return set().union(*(_nav_pages(e) for e in entry)) if entry else set()
    if isinstance(entry, dict):
        return set().union(*(_nav_pages(v) for v in entry.values())) if entry else set()
    return set()


def _readme() -> str:
    return README.read_text(encoding="utf-8")


def test_readme_is_short() -> None:
    lines = len(_readme().splitlines())
    assert lines <= MAX_README_LINES, f"README.md has {lines} lines: move text into docs/"


def test_readme_shows_the_two_commands() -> None:
    readme = _readme()
    assert "make demo" in readme
    assert "make test" in readme


def test_readme_relative_links_point_to_files_that_exist() -> None:
    targets = [t for t in LINK.findall(_readme()) if not re.match(r"^[a-z][a-z0-9+.-]*:", t)]
    assert targets, "the README links to no docs page"
    missing = [
        t for t in targets if not t.startswith("#") and not (ROOT / t.split("#")[0]).exists()
    ]
    assert not missing, f"README.md links to missing files: {missing}"


def test_every_docs_page_is_in_the_nav() -> None:
    config = yaml.load((ROOT / "mkdocs.yml").read_text(encoding="utf-8"), _TolerantLoader)
    docs_dir = ROOT / config.get("docs_dir", "docs")
    pages = {p.relative_to(docs_dir).as_posix() for p in docs_dir.rglob("*.md")}
    nav = _nav_pages(config["nav"])
    assert pages - nav == set(), f"pages missing from mkdocs.yml's nav: {sorted(pages - nav)}"
    assert nav - pages == set(), f"nav entries without a page: {sorted(nav - pages)}"
