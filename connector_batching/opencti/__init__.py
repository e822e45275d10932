"""`OpenCTIWorkManager`: works, bundles and cursors through a pycti helper.

* a batch's work is an OpenCTI work (``helper.api.work.initiate_work``);
* a batch is sent through ``helper.send_stix2_bundle``: in ``split`` mode as one
  bundle that pycti splits into one message per object (the platform's default),
  in ``bundle`` mode as ONE message (``no_split=True``) — or as a few
  reference-complete parts when it is larger than ``max_batch_bytes``;
* a cursor is a key of the connector state, pinged to the platform at once;
* before a batch, the manager waits while the connector's push queue is over
  its threshold (back-pressure) instead of flooding the broker;
* works a killed process left in progress are closed at the next start
  (``close_interrupted_works``);
* secrets (the OpenCTI token, the broker password, credentials in URLs) are
  removed from everything it logs or raises.

One concept per module; :class:`OpenCTIWorkManager` (:mod:`.manager`) wires them:

* :mod:`.options` — the manager's options, checked into a frozen value;
* :mod:`.port` — the helper port, the only code that touches the pycti helper,
  and the one place its errors are logged, counted and re-raised secret-free;
* :mod:`.works` / :mod:`.interrupted` — opening and closing works; works left
  in progress on the platform;
* :mod:`.sender` and :mod:`.bundles` — sending a batch, split or as bundle parts;
* :mod:`.state` — the connector state and its ping;
* :mod:`.backpressure` — the push-queue gate;
* :mod:`.metrics` and :mod:`.prometheus` — one event stream feeding the
  ``counters`` dict, Prometheus and ``helper.metric``.

pycti itself is imported only when a part needs it, never by importing this package.
"""

from __future__ import annotations

from connector_batching.opencti.backpressure import QueueBackpressure
from connector_batching.opencti.bundles import (
    DEFAULT_MAX_BATCH_BYTES,
    ENVELOPE_HEADROOM_BYTES,
    MAX_BATCH_BYTES,
    MIN_BATCH_BYTES,
    RABBITMQ_DEFAULT_MAX_MESSAGE_BYTES,
    RABBITMQ_MAX_MESSAGE_BYTES,
    BundleTooLargeError,
    max_bundle_bytes_for,
    split_bundle,
)
from connector_batching.opencti.manager import OpenCTIWorkManager
from connector_batching.opencti.metrics import COUNTER_KEYS, ROUTES, MetricEvents
from connector_batching.opencti.options import (
    MIN_CHECK_INTERVAL,
    SEND_MODES,
    SEND_OPTIONS,
    ManagerOptions,
)
from connector_batching.opencti.port import HelperPort
from connector_batching.redaction import RedactedError, RedactingFilter, redact

__all__ = [
    "COUNTER_KEYS",
    "DEFAULT_MAX_BATCH_BYTES",
    "ENVELOPE_HEADROOM_BYTES",
    "MAX_BATCH_BYTES",
    "MIN_BATCH_BYTES",
    "MIN_CHECK_INTERVAL",
    "RABBITMQ_DEFAULT_MAX_MESSAGE_BYTES",
    "RABBITMQ_MAX_MESSAGE_BYTES",
    "ROUTES",
    "SEND_MODES",
    "SEND_OPTIONS",
    "BundleTooLargeError",
    "HelperPort",
    "ManagerOptions",
    "MetricEvents",
    "OpenCTIWorkManager",
    "QueueBackpressure",
    "RedactedError",
    "RedactingFilter",
    "max_bundle_bytes_for",
    "redact",
    "split_bundle",
]
