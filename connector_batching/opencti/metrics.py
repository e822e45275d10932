"""One stream of events, three channels: the ``counters`` dict, Prometheus, ``helper.metric``.

The parts of the manager say what happened (:meth:`MetricEvents.emit`); the
routing table :data:`ROUTES` says where each event is counted.  Nothing else
writes a counter or a collector.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass

from connector_batching.opencti.prometheus import Collectors, collectors

#: The keys of :attr:`OpenCTIWorkManager.counters`, in order.
COUNTER_KEYS = (
    "bundles_sent",
    "messages_sent",
    "send_failures",
    "oversize_batches",
    "parts_skipped_on_retry",
    "orphan_works_closed",
    "interrupted_works_closed",
    "expectations_withdrawn",
    "incompatible_objects",
    "messages_in_doubt",
    "state_refreshes",
    "state_resets_seen",
)


@dataclass(frozen=True)
class Route:
    """Where one event is counted (any of the three channels, or several)."""

    #: Key of the ``counters`` dict the value is added to.
    counter: str | None = None
    #: Attribute of :class:`~connector_batching.opencti.prometheus.Collectors`.
    prometheus: str | None = None
    #: Whether the Prometheus collector is a gauge (set) rather than a counter (add).
    gauge: bool = False
    #: Name given to ``helper.metric.inc`` (pycti's metric handler).
    pycti: str | None = None


ROUTES: dict[str, Route] = {
    "bundle_sent": Route(counter="bundles_sent"),
    "messages_sent": Route(counter="messages_sent"),
    "send_failed": Route(counter="send_failures"),
    "oversize_batch": Route(counter="oversize_batches"),
    "parts_skipped_on_retry": Route(counter="parts_skipped_on_retry"),
    "orphan_works_closed": Route(counter="orphan_works_closed"),
    "interrupted_works_closed": Route(counter="interrupted_works_closed"),
    "expectations_withdrawn": Route(counter="expectations_withdrawn"),
    "incompatible_objects": Route(counter="incompatible_objects"),
    "messages_in_doubt": Route(counter="messages_in_doubt"),
    "state_refreshed": Route(counter="state_refreshes"),
    "state_reset_seen": Route(counter="state_resets_seen"),
    "error": Route(pycti="error_count"),
    "objects_sent": Route(prometheus="objects_sent", pycti="record_send"),
    "retry": Route(prometheus="retries"),
    "batch_closed": Route(prometheus="batches"),
    "items_failed": Route(prometheus="failed_items"),
    "backpressure_wait": Route(prometheus="backpressure_waits"),
    "backpressure_seconds": Route(prometheus="backpressure_seconds"),
    "queue_size_mb": Route(prometheus="queue_size", gauge=True),
    "cursor_lag_seconds": Route(prometheus="cursor_lag", gauge=True),
}

#: ``helper.metric.inc(name, n)``, through the helper port (never raises).
PyctiMetric = Callable[[str, int], None]


class MetricEvents:
    """The manager's event stream; :attr:`counters` is the manager's ``counters`` dict."""

    def __init__(
        self,
        connector_id: str,
        pycti_metric: PyctiMetric,
        prometheus: Collectors | None = None,
    ) -> None:
        self.counters: dict[str, int] = dict.fromkeys(COUNTER_KEYS, 0)
        self._lock = threading.Lock()
        self._labels = {"connector_id": connector_id}
        self._pycti_metric = pycti_metric
        self._prometheus = prometheus if prometheus is not None else collectors()

    def emit(self, event: str, value: float = 1, **labels: str) -> None:
        """Count ``event`` (``value`` of it) on every channel its route names.

        ``labels`` are the Prometheus labels beyond ``connector_id``
        (``outcome``, ``state_key``).  Raises ``KeyError`` for an unknown event.
        """
        route = ROUTES[event]
        if route.pycti is not None:
            self._pycti_metric(route.pycti, int(value))
        if route.counter is not None:
            with self._lock:
                self.counters[route.counter] += int(value)
        if route.prometheus is not None:
            child = getattr(self._prometheus, route.prometheus).labels(**self._labels, **labels)
            if route.gauge:
                child.set(value)
            else:
                child.inc(value)

    def snapshot(self) -> dict[str, int]:
        """A copy of the counters, read under the lock."""
        with self._lock:
            return dict(self.counters)
