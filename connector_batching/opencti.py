"""`OpenCTIWorkManager`: works, bundles and cursors through a pycti helper.

* a batch's work is an OpenCTI work (``helper.api.work.initiate_work``);
* a batch is sent as ONE bundle through ``helper.send_stix2_bundle`` (the
  platform's path: split, expectations, RabbitMQ push queue);
* a cursor is a key of the connector state, pinged to the platform at once;
* before a batch, the manager waits while the connector's push queue is over
  its threshold (back-pressure) instead of flooding the broker.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import threading
import time
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

from prometheus_client import REGISTRY, Counter, Gauge
from stix2.base import _STIXBase

from connector_batching.cursor import InvalidDate, format_instant, parse_instant, utc_now
from connector_batching.stix import bundle_json, iter_members, normalize_item, object_id

#: ``send_stix2_bundle`` keywords a user may set (``work_id`` is the manager's).
SEND_OPTIONS = frozenset(
    {
        "update",
        "cleanup_inconsistent_bundle",
        "validation_mode",
        "draft_id",
        "entities_types",
        "event_version",
        "bypass_validation",
        "force_validation",
        "entity_id",
        "file_markings",
        "file_name",
        "send_to_queue",
        "send_to_directory",
        "send_to_directory_path",
        "send_to_directory_retention",
        "send_to_s3",
        "no_split",
    }
)

_NO_WORK_PREFIX = "no-work--"
_MIN_CHECK_INTERVAL = 0.01


class _Metrics:
    """The Prometheus collectors of this module, registered once per process."""

    _lock = threading.Lock()
    _instance: _Metrics | None = None

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
    def get(cls) -> _Metrics:
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


def _checked_send_options(options: Mapping[str, Any]) -> dict[str, Any]:
    unknown = sorted(set(options) - SEND_OPTIONS)
    if unknown:
        raise ValueError(
            f"OpenCTIWorkManager: unknown option(s) {', '.join(unknown)}; manager options are "
            "backpressure, queue_threshold_mb, queue_check_interval, max_backpressure_wait; "
            f"send_stix2_bundle keywords are {', '.join(sorted(SEND_OPTIONS))}"
        )
    send = dict(options)
    send.setdefault("cleanup_inconsistent_bundle", False)
    return send


def _flatten(objects: Sequence[Any]) -> list[Any]:
    """Members of ``objects``: mapper objects become the STIX objects they convert to."""
    out: list[Any] = []
    for obj in objects:
        if type(obj) is dict or isinstance(obj, _STIXBase):
            out.append(obj)
        else:
            out.extend(iter_members(normalize_item(obj)))
    return out


class OpenCTIWorkManager:
    """A work manager backed by a pycti ``OpenCTIConnectorHelper``.

    Manager options (keyword-only):

    * ``backpressure`` (``True``): wait before a batch while the push queue is
      over the threshold;
    * ``queue_threshold_mb`` (``None`` = ``helper.connect_queue_threshold``);
    * ``queue_check_interval`` (``10.0`` s): the least time between two queue
      size queries, both before batches and while waiting;
    * ``max_backpressure_wait`` (``None`` = no limit): after this many seconds
      of waiting, log a warning and send anyway.

    Every other keyword is passed to ``helper.send_stix2_bundle`` (``update``,
    ``cleanup_inconsistent_bundle`` — off unless set —, ``entities_types``, …).
    """

    def __init__(
        self,
        helper: Any,
        *,
        backpressure: bool = True,
        queue_threshold_mb: float | None = None,
        queue_check_interval: float = 10.0,
        max_backpressure_wait: float | None = None,
        **options: Any,
    ) -> None:
        if queue_check_interval < 0:
            raise ValueError("queue_check_interval must be >= 0 seconds")
        if max_backpressure_wait is not None and max_backpressure_wait < 0:
            raise ValueError("max_backpressure_wait must be None or >= 0 seconds")
        if queue_threshold_mb is not None and queue_threshold_mb <= 0:
            raise ValueError("queue_threshold_mb must be None or > 0 (MB)")
        if "work_id" in options:
            raise ValueError("OpenCTIWorkManager: work_id is set per batch, not as an option")
        self.helper = helper
        self.send_options = _checked_send_options(options)
        self.backpressure = backpressure
        self.queue_threshold_mb = queue_threshold_mb
        self.queue_check_interval = max(queue_check_interval, _MIN_CHECK_INTERVAL)
        self.max_backpressure_wait = max_backpressure_wait
        self._lock = threading.Lock()
        self._state_lock = threading.Lock()
        self._queue_lock = threading.Lock()
        self._last_queue_check = float("-inf")
        self._open_works: dict[str, int] = {}  # work id -> objects in its last send
        self._attempts: dict[str, int] = {}
        self._metrics = _Metrics.get()
        self._sleep = time.sleep
        self._clock = time.monotonic
        self._labels = {"connector_id": str(getattr(helper, "connect_id", "") or "")}

    # -- logging and metrics -------------------------------------------------

    def _log(self, level: str, message: str, meta: dict[str, Any]) -> None:
        logger = getattr(self.helper, "connector_logger", None)
        method = getattr(logger, level, None)
        if callable(method):
            method(message, meta)

    def _pycti_metric(self, name: str, n: int = 1) -> None:
        metric = getattr(self.helper, "metric", None)
        if metric is not None:
            with contextlib.suppress(Exception):  # metrics never break delivery
                metric.inc(name, n)

    # -- back-pressure --------------------------------------------------------

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
                {"reason": str(exc)},
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

    # -- WorkManager -----------------------------------------------------------

    def initiate_work(self, work_name: str, entity_type: str) -> str:
        """Wait for the push queue if needed, then open an OpenCTI work."""
        self.wait_for_queue()
        try:
            work_id = self.helper.api.work.initiate_work(self.helper.connect_id, work_name)
        except Exception as exc:
            self._pycti_metric("error_count")
            self._log(
                "error",
                "Cannot create the work",
                {"work_name": work_name, "entity_type": entity_type, "reason": str(exc)},
            )
            raise
        if not work_id:  # the helper does not send to the queue: no platform work
            work_id = f"{_NO_WORK_PREFIX}{uuid.uuid4()}"
        with self._lock:
            self._open_works[work_id] = 0
        self._log(
            "info",
            "Work created",
            {"work_id": work_id, "work_name": work_name, "entity_type": entity_type},
        )
        return str(work_id)

    @staticmethod
    def _platform_id(work_id: str) -> str | None:
        return None if work_id.startswith(_NO_WORK_PREFIX) else work_id

    def send_bundle(self, work_id: str, objects: Sequence[Any]) -> None:
        """Send ``objects`` as one bundle (deduplicated by id) within ``work_id``."""
        members = _flatten(objects)
        count = len({object_id(member) for member in members})  # as sent, deduplicated
        with self._lock:
            attempt = self._attempts.get(work_id, 0) + 1
            self._attempts[work_id] = attempt
            self._open_works[work_id] = count
        if attempt > 1:
            self._metrics.retries.labels(**self._labels).inc()
        if not members:
            self._log("debug", "Empty batch: nothing to send", {"work_id": work_id})
            return
        bundle = bundle_json(members)
        try:
            self.helper.send_stix2_bundle(
                bundle, work_id=self._platform_id(work_id), **self.send_options
            )
        except Exception as exc:
            self._pycti_metric("error_count")
            self._log(
                "error",
                "Cannot send the bundle",
                {
                    "work_id": work_id,
                    "objects": count,
                    "attempt": attempt,
                    "reason": str(exc),
                },
            )
            raise
        self._pycti_metric("record_send", count)
        self._metrics.objects_sent.labels(**self._labels).inc(count)
        self._log(
            "info",
            "Bundle sent",
            {"work_id": work_id, "objects": count, "attempt": attempt},
        )

    def work_to_process(
        self, work_id: str, in_error: bool = False, message: str | None = None
    ) -> None:
        """Close the work; ``in_error=True`` marks it failed with ``message``."""
        with self._lock:
            count = self._open_works.get(work_id, 0)
        if message is None:
            message = "Batch failed" if in_error else f"Batch delivered: {count} objects"
        platform_id = self._platform_id(work_id)
        if platform_id is not None:
            try:
                self.helper.api.work.to_processed(platform_id, message, in_error)
            except Exception as exc:
                self._pycti_metric("error_count")
                self._log(
                    "error",
                    "Cannot close the work",
                    {"work_id": work_id, "in_error": in_error, "reason": str(exc)},
                )
                raise
        with self._lock:
            self._open_works.pop(work_id, None)
            self._attempts.pop(work_id, None)
        outcome = "error" if in_error else "success"
        self._metrics.batches.labels(**self._labels, outcome=outcome).inc()
        if in_error:
            self._pycti_metric("error_count")
            self._metrics.failed_items.labels(**self._labels).inc(count)
            self._log(
                "warning",
                "Work closed in error",
                {"work_id": work_id, "objects": count, "reason": message},
            )
        else:
            self._log("info", "Work closed", {"work_id": work_id, "objects": count})

    @property
    def open_works(self) -> list[str]:
        """Ids of works opened by this manager and not closed yet."""
        with self._lock:
            return list(self._open_works)

    def close_open_works(self, reason: str) -> int:
        """Close every still-open work in error with ``reason``; return how many.

        A safety net for a connector run that stops abnormally.  Errors are
        logged, not raised.
        """
        closed = 0
        for work_id in self.open_works:
            try:
                self.work_to_process(work_id, in_error=True, message=reason)
                closed += 1
            except Exception:
                pass
        return closed

    # -- state -------------------------------------------------------------------

    def update_state(self, state_key: str, date_str: str) -> None:
        """Store ``date_str`` under ``state_key`` (other keys kept), then ping it to OpenCTI."""
        with self._state_lock:
            current = self.helper.get_state()
            state = dict(current) if isinstance(current, Mapping) else {}
            state[state_key] = date_str
            self.helper.set_state(state)
            self.helper.force_ping()
        self._log("info", "Cursor saved", {"state_key": state_key, "cursor": date_str})
        try:
            instant = parse_instant(date_str)
        except InvalidDate:
            return
        if instant is not None:
            lag = (utc_now() - instant).total_seconds()
            self._metrics.cursor_lag.labels(**self._labels, state_key=state_key).set(lag)

    def get_state(self, state_key: str) -> str | None:
        """The cursor stored under ``state_key`` in the connector state, or ``None``."""
        state = self.helper.get_state()
        if not isinstance(state, Mapping):
            return None
        value = state.get(state_key)
        if value is None or value == "":
            return None
        if isinstance(value, str):
            return value
        if isinstance(value, int | float | dt.datetime) and not isinstance(value, bool):
            try:
                instant = parse_instant(value)
            except InvalidDate:
                return str(value)
            return format_instant(instant) if instant is not None else None
        return str(value)

    def __repr__(self) -> str:
        return (
            f"OpenCTIWorkManager(connector_id={self._labels['connector_id']!r}, "
            f"backpressure={self.backpressure}, send_options={sorted(self.send_options)})"
        )
