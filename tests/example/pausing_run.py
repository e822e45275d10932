"""Run ``python -m example_connector`` with the converter pausing at one row.

Used by the graceful-stop test to deliver a signal at a known point of a run:
when the ``PAUSE_AT_ROW``-th row is converted it creates ``PAUSE_READY`` and
waits until ``PAUSE_GO`` exists (at most two minutes), then carries on.
"""

from __future__ import annotations

import os
import runpy
import sys
import time
from pathlib import Path
from typing import Any

from example_connector.converter import URLhausConverter

PAUSE_AT = int(os.environ["PAUSE_AT_ROW"])
READY = Path(os.environ["PAUSE_READY"])
GO = Path(os.environ["PAUSE_GO"])

_original = URLhausConverter.convert
_calls = 0


def _pausing_convert(self: URLhausConverter, row: Any) -> Any:
    global _calls
    _calls += 1
    if _calls == PAUSE_AT:
        READY.touch()
        deadline = time.monotonic() + 120
        while not GO.exists() and time.monotonic() < deadline:
            time.sleep(0.02)
    return _original(self, row)


URLhausConverter.convert = _pausing_convert  # type: ignore[method-assign]

if __name__ == "__main__":
    sys.argv = ["example_connector", *sys.argv[1:]]
    runpy.run_module("example_connector", run_name="__main__", alter_sys=True)
