"""The Prometheus collectors of :class:`~connector_batching.opencti.OpenCTIWorkManager`."""

from __future__ import annotations

import threading
from typing import Any

from prometheus_client import REGISTRY, Counter, Gauge


class Metrics:
    """The work managers' Prometheus collectors, registered once per process."""

    _lock = threading.Lock()
    _instance: Metrics | None = None

    def __init__(self) -> None:
        labels = ["connector_id"]
        self.batches = _collector(
            Counter,
            "connector_batching_batches",
            "Batches whose work was closed, by outcome (success or error).",
            [*labels, "outcome"],
        )
        self.retries = _collector(
            Counter,
            "connector_batching_batch_retries",
            "Bundle sends repeated for a work that was already attempted.",
            labels,
        )
        self.failed_items = _collector(
            Counter,
            "connector_batching_failed_items",
            "Objects of batches whose work was closed in error.",
            labels,
        )
        self.objects_sent = _collector(
            Counter,
            "connector_batching_objects_sent",
            "Objects handed to send_stix2_bundle successfully.",
            labels,
        )
        self.backpressure_waits = _collector(
            Counter,
            "connector_batching_backpressure_waits",
            "Times a batch waited for the push queue to drain.",
            labels,
        )
        self.backpressure_seconds = _collector(
            Counter,
            "connector_batching_backpressure_wait_seconds",
            "Seconds spent waiting for the push queue to drain.",
            labels,
        )
        self.queue_size = _collector(
            Gauge,
            "connector_batching_queue_size_megabytes",
            "Last known size of the connector's push queue (MB).",
            labels,
        )
        self.cursor_lag = _collector(
            Gauge,
            "connector_batching_cursor_lag_seconds",
            "Seconds between now and the cursor last saved, per state key.",
            [*labels, "state_key"],
        )

    @classmethod
    def get(cls) -> Metrics:
        """The process-wide instance (created on first use)."""
        with cls._lock:
            if cls._instance is None:
                cls._instance = cls()
            return cls._instance


def _collector(kind: type[Any], name: str, documentation: str, labels: list[str]) -> Any:
    """Create a collector, or return the one already registered under ``name``."""
    try:
        return kind(name, documentation, labels)
    except ValueError:  # already registered (module reloaded, or another copy)
        names: dict[str, Any] = getattr(REGISTRY, "_names_to_collectors", {})
        for candidate in (name, f"{name}_total"):
            existing = names.get(candidate)
            if existing is not None:
                return existing
        raise
