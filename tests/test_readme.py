"""README.md carries the current text of every docs/ section it includes."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_readme_sections_match_docs() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "sync_readme.py"), "--check"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr


def test_readme_includes_every_docs_file() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    included = set(re.findall(r"<!-- begin (docs/[\w.-]+\.md) -->", readme))
    present = {f"docs/{p.name}" for p in (ROOT / "docs").glob("*.md")}
    assert present <= included, f"not in README.md: {sorted(present - included)}"


def test_readme_shows_the_two_quick_start_commands() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert "make demo" in readme and "make test" in readme
