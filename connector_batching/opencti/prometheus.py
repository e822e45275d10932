"""The Prometheus collectors of the OpenCTI work managers, created once per process.

They live in the default registry (``prometheus_client.REGISTRY``), labelled
``connector_id``.  :func:`collectors` creates them on first use, under a lock,
and hands the same ones to every manager afterwards: no second registration,
so no lookup in the registry's private tables.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

from prometheus_client import Counter, Gauge

_LABELS = ("connector_id",)


@dataclass(frozen=True)
class Collectors:
    """The work managers' Prometheus collectors."""

    batches: Counter
    retries: Counter
    failed_items: Counter
    objects_sent: Counter
    backpressure_waits: Counter
    backpressure_seconds: Counter
    queue_size: Gauge
    cursor_lag: Gauge

    @classmethod
    def register(cls) -> Collectors:
        """Create and register every collector (raises if they already are)."""
        return cls(
            batches=Counter(
                "connector_batching_batches",
                "Batches whose work was closed, by outcome (success or error).",
                [*_LABELS, "outcome"],
            ),
            retries=Counter(
                "connector_batching_batch_retries",
                "Bundle sends repeated for a work that was already attempted.",
                _LABELS,
            ),
            failed_items=Counter(
                "connector_batching_failed_items",
                "Objects of batches whose work was closed in error.",
                _LABELS,
            ),
            objects_sent=Counter(
                "connector_batching_objects_sent",
                "Objects handed to send_stix2_bundle successfully.",
                _LABELS,
            ),
            backpressure_waits=Counter(
                "connector_batching_backpressure_waits",
                "Times a batch waited for the push queue to drain.",
                _LABELS,
            ),
            backpressure_seconds=Counter(
                "connector_batching_backpressure_wait_seconds",
                "Seconds spent waiting for the push queue to drain.",
                _LABELS,
            ),
            queue_size=Gauge(
                "connector_batching_queue_size_megabytes",
                "Last known size of the connector's push queue (MB).",
                _LABELS,
            ),
            cursor_lag=Gauge(
                "connector_batching_cursor_lag_seconds",
                "Seconds between now and the cursor last saved, per state key.",
                [*_LABELS, "state_key"],
            ),
        )


_lock = threading.Lock()
_collectors: Collectors | None = None


def collectors() -> Collectors:
    """The process-wide collectors (registered on first use, once)."""
    global _collectors
    with _lock:
        if _collectors is None:
            _collectors = Collectors.register()
        return _collectors
