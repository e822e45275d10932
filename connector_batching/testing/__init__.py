"""Test doubles for connector authors: test a connector without a platform.

* :class:`RecordingWorkManager` — an in-memory work manager that records every
  call, with scripted faults (no pycti, no broker).
* ``connector_batching.testing.stub_platform`` — a stub OpenCTI platform: a
  GraphQL API that a real pycti ``OpenCTIConnectorHelper`` talks to, with the
  push queue in RabbitMQ, and ``StubOpenCTI.add_operation`` for the operations
  a connector needs beyond the built-in ones.  Import it explicitly: it imports
  pika, which importing this package does not.
* ``connector_batching.testing.worker_model`` — :class:`WorkerModel`, the OpenCTI
  worker's part (split, import, report) over a stub's push queue (pika too).
* :func:`replay` — the platform's completion rules (:data:`RULE_SETS`) over a
  work's event log, giving a :class:`Verdict` (pure; ``work_rules``).

``docs/testing.md`` shows both in use.
"""

from __future__ import annotations

from connector_batching.testing.recording import (
    OPERATIONS,
    InjectedFault,
    RecordedWork,
    RecordingWorkManager,
    member_ids,
)
from connector_batching.testing.work_rules import RULE_SETS, Verdict, replay

__all__ = [
    "OPERATIONS",
    "RULE_SETS",
    "InjectedFault",
    "RecordedWork",
    "RecordingWorkManager",
    "Verdict",
    "member_ids",
    "replay",
]
