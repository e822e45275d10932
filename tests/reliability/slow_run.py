"""Run ``python -m example_connector`` with a slow (or stuck) ``LocalWorkManager.send_bundle``.

The real CLI, unchanged, with one test hook on the real work manager so a test
can SIGKILL the process while batches are in flight:

* ``SLOW_SEND_SECONDS``: each ``send_bundle`` sleeps this long first (its work
  is already open, so a kill then leaves it "in progress");
* ``SEND_STARTED``: a file created when the first ``send_bundle`` begins;
* ``PAUSE_AT_SEND`` and ``PAUSE_READY``: the N-th ``send_bundle`` creates the
  file ``PAUSE_READY`` and then blocks (until the process is killed);
* ``FAIL_EVERY``: every N-th ``send_bundle`` of the process raises ``OSError``
  (a failing disk), so batches fail for good and become dead letters;
* ``PAUSE_AFTER_WRITE=1`` with those: it blocks later, once the bundle file is
  in place but before its record is committed in ``state.db``.
"""

from __future__ import annotations

import os
import runpy
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from connector_batching import local
from connector_batching.local import LocalWorkManager

SLOW = float(os.environ.get("SLOW_SEND_SECONDS", "0"))
PAUSE_AT = int(os.environ.get("PAUSE_AT_SEND", "0"))
READY = Path(os.environ["PAUSE_READY"]) if "PAUSE_READY" in os.environ else None
STARTED = Path(os.environ["SEND_STARTED"]) if "SEND_STARTED" in os.environ else None
AFTER_WRITE = os.environ.get("PAUSE_AFTER_WRITE") == "1"
FAIL_EVERY = int(os.environ.get("FAIL_EVERY", "0"))

_original = LocalWorkManager.send_bundle
_write = local.write_atomically
_sends = 0


def _block(ready: Path) -> None:
    ready.touch()
    while True:
        time.sleep(1)


def _write_then_block(path: Path, data: bytes) -> None:
    _write(path, data)
    if _sends == PAUSE_AT and READY is not None:
        _block(READY)


def _send_bundle(self: LocalWorkManager, work_id: str, objects: Sequence[Any]) -> None:
    global _sends
    _sends += 1
    if _sends == 1 and STARTED is not None:
        STARTED.touch()
    if _sends == PAUSE_AT and READY is not None and not AFTER_WRITE:
        _block(READY)
    if SLOW:
        time.sleep(SLOW)
    if FAIL_EVERY and _sends % FAIL_EVERY == 0:
        raise OSError(5, "Input/output error (injected)")
    _original(self, work_id, objects)


LocalWorkManager.send_bundle = _send_bundle  # type: ignore[method-assign]
if AFTER_WRITE:
    local.write_atomically = _write_then_block

if __name__ == "__main__":
    sys.argv = ["example_connector", *sys.argv[1:]]
    runpy.run_module("example_connector", run_name="__main__", alter_sys=True)
