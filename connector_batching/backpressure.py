"""Back-pressure: wait before a batch while the connector's push queue is over its threshold."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from connector_batching.opencti_metrics import Metrics

#: The least ``queue_check_interval`` (seconds).
MIN_CHECK_INTERVAL = 0.01


class QueueBackpressure:
    """Mixin of :class:`~connector_batching.opencti.OpenCTIWorkManager`: push-queue checks.

    The manager sets the attributes below and provides the logging methods.
    """

    helper: Any
    backpressure: bool
    queue_threshold_mb: float | None
    queue_check_interval: float
    max_backpressure_wait: float | None
    _queue_lock: threading.Lock
    _last_queue_check: float
    _metrics: Metrics
    _labels: dict[str, str]
    _sleep: Callable[[float], None]
    _clock: Callable[[], float]

    def _log(self, level: str, message: str, meta: dict[str, Any]) -> None:
        raise NotImplementedError

    def _pycti_metric(self, name: str, n: int = 1) -> None:
        raise NotImplementedError

    def _reason(self, exc: BaseException) -> str:
        raise NotImplementedError

    def _threshold_mb(self) -> float:
        if self.queue_threshold_mb is not None:
            return float(self.queue_threshold_mb)
        configured = getattr(self.helper, "connect_queue_threshold", None)
        try:
            return float(configured) if configured not in (None, "") else 500.0
        except (TypeError, ValueError):
            self._log(
                "warning",
                "CONNECTOR_QUEUE_THRESHOLD is not a number; using 500 MB",
                {"queue_threshold": str(configured)[:32]},
            )
            return 500.0

    def queue_size_mb(self) -> float | None:
        """The push queue's size in MB as the platform reports it, or ``None`` if unknown."""
        connector_id = getattr(self.helper, "connector_id", None) or self.helper.connect_id
        try:
            details = self.helper.api.connector.read(connector_id=connector_id)
            queue = details["connector_queue_details"]
            size_mb = float(queue["messages_size"]) / 1_000_000
        except Exception as exc:
            self._pycti_metric("error_count")
            self._log(
                "warning",
                "Cannot read the connector queue size; sending without back-pressure check",
                {"reason": self._reason(exc)},
            )
            return None
        self._metrics.queue_size.labels(**self._labels).set(size_mb)
        return size_mb

    def _set_buffering(self, size_mb: float, threshold: float, buffering: bool) -> None:
        info = getattr(self.helper, "connector_info", None)
        if info is None:
            return
        try:
            info.queue_messages_size = size_mb
            info.queue_threshold = threshold
            info.buffering = buffering
        except Exception:
            pass

    def wait_for_queue(self) -> float:
        """Block while the push queue is over the threshold; return the seconds waited.

        Queries the queue at most once per ``queue_check_interval``.  Does
        nothing when ``backpressure`` is off; never raises.
        """
        if not self.backpressure:
            return 0.0
        with self._queue_lock:
            now = self._clock()
            if now - self._last_queue_check < self.queue_check_interval:
                return 0.0
            threshold = self._threshold_mb()
            started = now
            waited_logged = False
            while True:
                self._last_queue_check = self._clock()
                size = self.queue_size_mb()
                if size is None:
                    return self._clock() - started
                if size < threshold:
                    self._set_buffering(size, threshold, False)
                    break
                self._set_buffering(size, threshold, True)
                elapsed = self._clock() - started
                if self.max_backpressure_wait is not None and elapsed >= self.max_backpressure_wait:
                    self._log(
                        "warning",
                        "Push queue still over its threshold after max_backpressure_wait; "
                        "sending anyway",
                        {"queue_size_mb": size, "threshold_mb": threshold, "waited_s": elapsed},
                    )
                    break
                if not waited_logged:
                    self._metrics.backpressure_waits.labels(**self._labels).inc()
                    waited_logged = True
                self._log(
                    "info",
                    "Waiting: the connector's push queue is over its threshold "
                    "(the platform's workers are behind)",
                    {
                        "queue_size_mb": round(size, 3),
                        "threshold_mb": threshold,
                        "recheck_in_s": self.queue_check_interval,
                    },
                )
                self._sleep(self.queue_check_interval)
            waited = self._clock() - started
            if waited_logged:
                self._metrics.backpressure_seconds.labels(**self._labels).inc(waited)
                self._log("info", "Push queue back under its threshold", {"waited_s": waited})
            return waited
