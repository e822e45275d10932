"""Run ``python -m example_connector`` with hooks that stop it at a chosen event.

The real CLI, unchanged, with test hooks on the real ``LocalWorkManager`` so a
test can SIGKILL the process at a point it chose — by event, never by time:

* ``PAUSE_AT=EVENT:N`` and ``PAUSE_READY=PATH``: when the N-th ``EVENT`` of the
  process happens, create the file ``PATH`` and block (until the process is
  killed).  Events (see :data:`EVENTS`):

  - ``open``: the directory was opened (temporary files and files without a
    record removed, interrupted works closed), nothing else done yet;
  - ``recover``: opening, before the works left in progress are closed;
  - ``initiate_work``: a work was created (in progress, nothing sent);
  - ``send_bundle``: a send begins (its work open, its file not written);
  - ``write``: a bundle file is in place, its record not committed yet;
  - ``work_to_process``: a bundle was recorded, its work not closed yet;
  - ``update_state``: a work was closed, the cursor not written yet.

* ``FAIL_EVERY=N``: every N-th ``send_bundle`` of the process raises ``OSError``
  (a failing disk), so batches fail for good and become dead letters.
"""

from __future__ import annotations

import functools
import os
import runpy
import sys
import threading
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from connector_batching import local
from connector_batching.local import LocalWorkManager

EVENTS = (
    "open",
    "recover",
    "initiate_work",
    "send_bundle",
    "write",
    "work_to_process",
    "update_state",
)

_event, _sep, _count = os.environ.get("PAUSE_AT", "").partition(":")
if _event and (_event not in EVENTS or not _count.isdigit()):
    raise SystemExit(f"slow_run: PAUSE_AT must be EVENT:N with EVENT in {EVENTS}, not {_event!r}")
PAUSE_EVENT = _event
PAUSE_AT = int(_count or 0)
READY = Path(os.environ["PAUSE_READY"]) if "PAUSE_READY" in os.environ else None
FAIL_EVERY = int(os.environ.get("FAIL_EVERY", "0"))

_seen: Counter[str] = Counter()
_seen_lock = threading.Lock()


def _happened(event: str) -> None:
    """Count ``event``; block forever when it is the chosen one."""
    with _seen_lock:
        _seen[event] += 1
        chosen = event == PAUSE_EVENT and _seen[event] == PAUSE_AT
    if chosen and READY is not None:
        READY.touch()
        threading.Event().wait()  # until SIGKILL


def _before(event: str, method: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(method)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        _happened(event)
        return method(*args, **kwargs)

    return wrapper


def _after(event: str, method: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(method)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        result = method(*args, **kwargs)
        _happened(event)
        return result

    return wrapper


_sends = 0
_send = LocalWorkManager.send_bundle


def _failing_send(self: LocalWorkManager, work_id: str, objects: Sequence[Any]) -> None:
    global _sends
    _happened("send_bundle")
    _sends += 1
    if FAIL_EVERY and _sends % FAIL_EVERY == 0:
        raise OSError(5, "Input/output error (injected)")
    _send(self, work_id, objects)


LocalWorkManager.__init__ = _after("open", LocalWorkManager.__init__)  # type: ignore[method-assign]
LocalWorkManager.close_interrupted_works = _before(  # type: ignore[method-assign]
    "recover", LocalWorkManager.close_interrupted_works
)
LocalWorkManager.initiate_work = _after("initiate_work", LocalWorkManager.initiate_work)  # type: ignore[method-assign]
LocalWorkManager.send_bundle = _failing_send  # type: ignore[method-assign]
local.write_atomically = _after("write", local.write_atomically)
LocalWorkManager.work_to_process = _before("work_to_process", LocalWorkManager.work_to_process)  # type: ignore[method-assign]
LocalWorkManager.update_state = _before("update_state", LocalWorkManager.update_state)  # type: ignore[method-assign]

if __name__ == "__main__":
    sys.argv = ["example_connector", *sys.argv[1:]]
    runpy.run_module("example_connector", run_name="__main__", alter_sys=True)
