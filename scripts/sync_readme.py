"""Copy the docs/ sections into README.md between their markers.

README.md holds ``<!-- begin docs/NAME.md -->`` … ``<!-- end docs/NAME.md -->``
blocks; this script replaces each block's body with the file's current text
(a file that starts with ``# `` is demoted two levels, to sit under a ``##``).
``--check`` exits 1 when README.md is out of date (the test suite runs it).
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
BLOCK = re.compile(
    r"(<!-- begin (?P<path>docs/[\w.-]+\.md) -->\n)(?P<body>.*?)(<!-- end (?P=path) -->)",
    re.DOTALL,
)


def section(path: str) -> str:
    text = (ROOT / path).read_text(encoding="utf-8").strip() + "\n"
    if text.startswith("# "):  # a standalone document: fit it under a README section
        text = re.sub(r"^(#+) ", r"##\1 ", text, flags=re.MULTILINE)
    return text


def render(readme: str) -> str:
    return BLOCK.sub(lambda m: m.group(1) + section(m.group("path")) + m.group(4), readme)


def main(argv: list[str]) -> int:
    current = README.read_text(encoding="utf-8")
    wanted = render(current)
    if "--check" in argv:
        if wanted != current:
            print("README.md is out of date: run `make readme`", file=sys.stderr)
            return 1
        return 0
    README.write_text(wanted, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
