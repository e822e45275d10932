"""`OpenCTIWorkManager`: works, bundles and cursors through a pycti helper.

* a batch's work is a multipart OpenCTI work whose expected count is exactly
  what the platform's workers will report for the messages the broker
  confirmed, held by a placeholder until the manager closed it: it completes,
  never before its close, under the current and the older platform rules;
* a batch's bundle is cut by pycti's splitter into one message per object
  (``split``, the platform's default), or sent as ONE message (``bundle``,
  ``no_split``) — or as a few reference-complete parts when it is larger than
  ``max_batch_bytes``;
* the messages go out through the direct publisher (pycti's envelope, one kept
  AMQP connection, publisher confirms per batch) or ``helper.send_stix2_bundle``;
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
* :mod:`.expectations` — a work's expected count, changed by calls that raise
  and checked by reading the work back; the placeholder;
* :mod:`.sender`, :mod:`.bundles` and :mod:`.messages` — a batch as messages:
  split, or as bundle parts, in pycti's envelope;
* :mod:`.direct_send` and :mod:`.amqp` — the direct publisher; :mod:`.pycti_send`
  — pycti's ``send_stix2_bundle``, the count corrected around it;
* :mod:`.state` — the connector state and its ping;
* :mod:`.backpressure` — the push-queue gate;
* :mod:`.metrics` and :mod:`.prometheus` — one event stream feeding the
  ``counters`` dict, Prometheus and ``helper.metric``.

pycti itself is imported only when a part needs it, never by importing this package
(pika is: the direct publisher is built on it).
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
