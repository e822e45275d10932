"""Back-pressure: wait before a batch while the connector's push queue is over its threshold."""

from __future__ import annotations

import threading
from collections.abc import Callable

from connector_batching.opencti.metrics import MetricEvents
from connector_batching.opencti.options import MIN_CHECK_INTERVAL, ManagerOptions
from connector_batching.opencti.port import HelperPort

__all__ = ["MIN_CHECK_INTERVAL", "QueueBackpressure"]

_DEFAULT_THRESHOLD_MB = 500.0


class QueueBackpressure:
    """The push-queue gate a manager passes before each batch.

    The queue size is the platform's (``connector_queue_details.messages_size``),
    read through the helper port at most once per ``queue_check_interval``;
    ``clock`` and ``sleep`` are the time seams (``time.monotonic``, ``time.sleep``).
    """

    def __init__(
        self,
        port: HelperPort,
        events: MetricEvents,
        options: ManagerOptions,
        *,
        clock: Callable[[], float],
        sleep: Callable[[float], None],
    ) -> None:
        self._port = port
        self._events = events
        self._options = options
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()
        self._last_check = float("-inf")

    def threshold_mb(self) -> float:
        """The threshold in MB: the option, else the helper's ``CONNECTOR_QUEUE_THRESHOLD``."""
        if self._options.queue_threshold_mb is not None:
            return float(self._options.queue_threshold_mb)
        configured = self._port.queue_threshold_setting
        try:
            return float(configured) if configured not in (None, "") else _DEFAULT_THRESHOLD_MB
        except (TypeError, ValueError):
            self._port.log(
                "warning",
                "CONNECTOR_QUEUE_THRESHOLD is not a number; using 500 MB",
                {"queue_threshold": str(configured)[:32]},
            )
            return _DEFAULT_THRESHOLD_MB

    def queue_size_mb(self) -> float | None:
        """The push queue's size in MB as the platform reports it, or ``None`` if unknown."""
        try:
            with self._port.failing(
                "Cannot read the connector queue size; sending without back-pressure check",
                level="warning",
            ):
                details = self._port.read_connector()
                size_mb = float(details["connector_queue_details"]["messages_size"]) / 1_000_000
        except Exception:
            return None
        self._events.emit("queue_size_mb", size_mb)
        return size_mb

    def wait(self) -> float:
        """Block while the push queue is over the threshold; return the seconds waited.

        Queries the queue at most once per ``queue_check_interval``.  Does
        nothing when ``backpressure`` is off; never raises.
        """
        options = self._options
        if not options.backpressure:
            return 0.0
        with self._lock:
            now = self._clock()
            if now - self._last_check < options.queue_check_interval:
                return 0.0
            threshold = self.threshold_mb()
            started = now
            waited_logged = False
            while True:
                self._last_check = self._clock()
                size = self.queue_size_mb()
                if size is None:
                    return self._clock() - started
                if size < threshold:
                    self._port.show_buffering(size, threshold, False)
                    break
                self._port.show_buffering(size, threshold, True)
                elapsed = self._clock() - started
                limit = options.max_backpressure_wait
                if limit is not None and elapsed >= limit:
                    self._port.log(
                        "warning",
                        "Push queue still over its threshold after max_backpressure_wait; "
                        "sending anyway",
                        {"queue_size_mb": size, "threshold_mb": threshold, "waited_s": elapsed},
                    )
                    break
                if not waited_logged:
                    self._events.emit("backpressure_wait")
                    waited_logged = True
                self._port.log(
                    "info",
                    "Waiting: the connector's push queue is over its threshold "
                    "(the platform's workers are behind)",
                    {
                        "queue_size_mb": round(size, 3),
                        "threshold_mb": threshold,
                        "recheck_in_s": options.queue_check_interval,
                    },
                )
                self._sleep(options.queue_check_interval)
            waited = self._clock() - started
            if waited_logged:
                self._events.emit("backpressure_seconds", waited)
                self._port.log("info", "Push queue back under its threshold", {"waited_s": waited})
            return waited
