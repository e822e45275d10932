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

The parts live in their own modules: :mod:`~connector_batching.backpressure`,
:mod:`~connector_batching.bundle_parts`, :mod:`~connector_batching.redaction` and
:mod:`~connector_batching.opencti_metrics`; their public names are re-exported here.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import threading
import time
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

from stix2.base import _STIXBase

from connector_batching.backpressure import MIN_CHECK_INTERVAL, QueueBackpressure
from connector_batching.bundle_parts import (
    DEFAULT_MAX_BATCH_BYTES,
    ENVELOPE_HEADROOM_BYTES,
    MAX_BATCH_BYTES,
    MIN_BATCH_BYTES,
    RABBITMQ_DEFAULT_MAX_MESSAGE_BYTES,
    RABBITMQ_MAX_MESSAGE_BYTES,
    BundleTooLargeError,
    dumps,
    max_bundle_bytes_for,
    split_bundle,
    utf8_size,
)
from connector_batching.cursor import InvalidDate, format_instant, parse_instant, utc_now
from connector_batching.opencti_metrics import Metrics as _Metrics
from connector_batching.redaction import (
    RedactedError,
    RedactingFilter,
    helper_secrets,
    install_log_redaction,
    redact,
)
from connector_batching.stix import bundle_dict, iter_members, normalize_item, object_id

__all__ = [
    "DEFAULT_MAX_BATCH_BYTES",
    "ENVELOPE_HEADROOM_BYTES",
    "MAX_BATCH_BYTES",
    "MIN_BATCH_BYTES",
    "RABBITMQ_DEFAULT_MAX_MESSAGE_BYTES",
    "RABBITMQ_MAX_MESSAGE_BYTES",
    "SEND_MODES",
    "SEND_OPTIONS",
    "BundleTooLargeError",
    "OpenCTIWorkManager",
    "RedactedError",
    "RedactingFilter",
    "max_bundle_bytes_for",
    "redact",
    "split_bundle",
]

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

SEND_MODES = ("split", "bundle")

_OPEN_WORKS_QUERY = """
query ConnectorBatchingOpenWorks($count: Int, $after: ID, $filters: FilterGroup) {
  works(first: $count, after: $after, filters: $filters) {
    edges {
      node {
        id name status timestamp processed_time
        tracking { import_expected_number import_processed_number }
      }
    }
    pageInfo { endCursor hasNextPage }
  }
}
"""
_OPEN_WORKS_PAGE = 500
_OPEN_WORKS_MAX_PAGES = 40


def _checked_send_options(options: Mapping[str, Any]) -> dict[str, Any]:
    unknown = sorted(set(options) - SEND_OPTIONS)
    if unknown:
        raise ValueError(
            f"OpenCTIWorkManager: unknown option(s) {', '.join(unknown)}; manager options are "
            "send_mode, max_batch_bytes, backpressure, queue_threshold_mb, "
            "queue_check_interval, max_backpressure_wait, refresh_state, api_timeout; "
            f"send_stix2_bundle keywords are {', '.join(sorted(SEND_OPTIONS))}"
        )
    send = dict(options)
    send.setdefault("cleanup_inconsistent_bundle", False)
    return send


def _checked_send_mode(send_mode: object, max_batch_bytes: object, no_split: object) -> int:
    """Validate ``send_mode`` / ``max_batch_bytes``; return the byte bound to use."""
    if send_mode not in SEND_MODES:
        raise ValueError(
            f"OpenCTIWorkManager: send_mode must be 'split' or 'bundle', not {send_mode!r}"
        )
    if send_mode == "bundle" and no_split is False:
        raise ValueError(
            "OpenCTIWorkManager: send_mode='bundle' sends with no_split=True; "
            "use send_mode='split' for pycti's per-object messages"
        )
    if max_batch_bytes is None:
        return DEFAULT_MAX_BATCH_BYTES
    if send_mode != "bundle":
        raise ValueError(
            "OpenCTIWorkManager: max_batch_bytes applies to send_mode='bundle' only "
            "(in split mode pycti sends one message per object)"
        )
    if isinstance(max_batch_bytes, bool) or not isinstance(max_batch_bytes, int):
        raise ValueError(
            f"OpenCTIWorkManager: max_batch_bytes must be an int (bytes of bundle JSON), "
            f"not {type(max_batch_bytes).__name__}"
        )
    if not MIN_BATCH_BYTES <= max_batch_bytes <= MAX_BATCH_BYTES:
        raise ValueError(
            f"OpenCTIWorkManager: max_batch_bytes must be between {MIN_BATCH_BYTES} and "
            f"{MAX_BATCH_BYTES} bytes, not {max_batch_bytes}; the default, "
            f"{DEFAULT_MAX_BATCH_BYTES}, fits RabbitMQ's default 16 MiB message limit once "
            "base64-encoded (raise it only with the broker's max_message_size)"
        )
    return max_batch_bytes


def _state_from(raw: object) -> dict[str, Any] | None:
    """The connector state in a platform answer (a JSON string); ``None`` when empty.

    Raises ``ValueError`` when it is not JSON.
    """
    value = json.loads(raw) if isinstance(raw, str) and raw.strip() else None
    return value if isinstance(value, dict) and value else None


def _is_broker_error(exc: BaseException) -> bool:
    """Whether ``exc`` came from pika (so pycti had already added the expectations)."""
    return type(exc).__module__.startswith("pika")


def _flatten(objects: Sequence[Any]) -> list[Any]:
    """Members of ``objects``: mapper objects become the STIX objects they convert to."""
    out: list[Any] = []
    for obj in objects:
        if type(obj) is dict or isinstance(obj, _STIXBase):
            out.append(obj)
        else:
            out.extend(iter_members(normalize_item(obj)))
    return out


class OpenCTIWorkManager(QueueBackpressure):
    """A work manager backed by a pycti ``OpenCTIConnectorHelper``.

    Manager options (keyword-only):

    * ``send_mode`` (``"split"``): ``"split"`` hands each batch's bundle to
      pycti, which splits it into one message per object (the platform's
      default); ``"bundle"`` sends each batch as ONE message
      (``send_stix2_bundle(..., no_split=True)``), imported whole by the worker;
    * ``max_batch_bytes`` (bundle mode; default :data:`DEFAULT_MAX_BATCH_BYTES`,
      about 12 MB of JSON, i.e. 16 MiB once base64-encoded): a batch whose
      bundle is larger goes as several reference-complete parts, each under it,
      in the same work;
    * ``backpressure`` (``True``): wait before a batch while the push queue is
      over the threshold;
    * ``queue_threshold_mb`` (``None`` = ``helper.connect_queue_threshold``);
    * ``queue_check_interval`` (``10.0`` s): the least time between two queue
      size queries, both before batches and while waiting;
    * ``max_backpressure_wait`` (``None`` = no limit): after this many seconds
      of waiting, log a warning and send anyway;
    * ``refresh_state`` (``True``): ``get_state`` first adopts the state stored
      on the platform when it differs from the helper's copy (an operator reset
      it between runs);
    * ``api_timeout`` (``None``: pycti's 300 s): seconds before a platform API
      request of the helper gives up (set on ``helper.api``, so it also applies
      to the helper's own calls such as its pings).

    Every other keyword is passed to ``helper.send_stix2_bundle`` (``update``,
    ``cleanup_inconsistent_bundle`` — off unless set —, ``entities_types``, …).
    """

    def __init__(
        self,
        helper: Any,
        *,
        send_mode: str = "split",
        max_batch_bytes: int | None = None,
        backpressure: bool = True,
        queue_threshold_mb: float | None = None,
        queue_check_interval: float = 10.0,
        max_backpressure_wait: float | None = None,
        refresh_state: bool = True,
        api_timeout: float | None = None,
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
        if api_timeout is not None and (
            isinstance(api_timeout, bool)
            or not isinstance(api_timeout, int | float)
            or not api_timeout > 0
        ):
            raise ValueError(
                f"OpenCTIWorkManager: api_timeout must be None or a number of seconds > 0, "
                f"not {api_timeout!r}"
            )
        self.helper = helper
        self.send_options = _checked_send_options(options)
        self.max_batch_bytes = _checked_send_mode(
            send_mode, max_batch_bytes, self.send_options.get("no_split")
        )
        self.send_mode = send_mode
        if send_mode == "bundle":
            self.send_options["no_split"] = True
        self.backpressure = backpressure
        self.queue_threshold_mb = queue_threshold_mb
        self.queue_check_interval = max(queue_check_interval, MIN_CHECK_INTERVAL)
        self.max_backpressure_wait = max_backpressure_wait
        self.refresh_state = refresh_state
        self.api_timeout = api_timeout
        if api_timeout is not None:
            for api in (getattr(helper, "api", None), getattr(helper, "api_impersonate", None)):
                if api is not None:
                    api.session_requests_timeout = api_timeout
        self._lock = threading.Lock()
        self._state_lock = threading.Lock()
        self._queue_lock = threading.Lock()
        self._last_queue_check = float("-inf")
        self._open_works: dict[str, int] = {}  # work id -> objects in its last send
        self._attempts: dict[str, int] = {}
        self._parts_done: dict[str, tuple[int, int]] = {}  # work id -> (batch hash, parts)
        self._uncertain_work_names: set[str] = set()
        self.counters: dict[str, int] = dict.fromkeys(
            (
                "bundles_sent",
                "messages_sent",
                "send_failures",
                "oversize_batches",
                "parts_skipped_on_retry",
                "orphan_works_closed",
                "interrupted_works_closed",
                "expectations_withdrawn",
                "state_refreshes",
                "state_resets_seen",
            ),
            0,
        )
        self._metrics = _Metrics.get()
        self._sleep = time.sleep
        self._clock = time.monotonic
        self._labels = {"connector_id": str(getattr(helper, "connect_id", "") or "")}
        install_log_redaction(helper)

    # -- secrets -------------------------------------------------------------

    def _redact(self, text: str) -> str:
        return redact(text, helper_secrets(self.helper))

    def _reason(self, exc: BaseException) -> str:
        return self._redact(str(exc))

    def _clean(self, exc: Exception) -> Exception:
        """``exc``, or a :class:`RedactedError` in its place when its message holds a secret."""
        text = str(exc)
        cleaned = self._redact(text)
        if cleaned == text:
            return exc
        return RedactedError(f"{type(exc).__name__}: {cleaned}")

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

    # -- WorkManager -----------------------------------------------------------

    def _fail(self, exc: Exception, message: str, meta: dict[str, Any]) -> Exception:
        """Count and log a failed platform or broker call; the exception to raise."""
        self._pycti_metric("error_count")
        self._log("error", message, {**meta, "reason": self._reason(exc)})
        return self._clean(exc)

    def initiate_work(self, work_name: str, entity_type: str) -> str:
        """Wait for the push queue if needed, then open an OpenCTI work."""
        self.wait_for_queue()
        try:
            work_id = self.helper.api.work.initiate_work(self.helper.connect_id, work_name)
        except Exception as exc:
            # The platform may have created the work before the answer was lost (a
            # timeout, a cut connection): look for it once a retry got a work.
            with self._lock:
                self._uncertain_work_names.add(work_name)
            cleaned = self._fail(
                exc, "Cannot create the work", {"work_name": work_name, "entity_type": entity_type}
            )
            if cleaned is exc:
                raise
            raise cleaned from None
        if not work_id:  # the helper does not send to the queue: no platform work
            work_id = f"{_NO_WORK_PREFIX}{uuid.uuid4()}"
        with self._lock:
            self._open_works[work_id] = 0
            uncertain = work_name in self._uncertain_work_names
            self._uncertain_work_names.discard(work_name)
        self._log(
            "info",
            "Work created",
            {"work_id": work_id, "work_name": work_name, "entity_type": entity_type},
        )
        if uncertain and self._platform_id(str(work_id)) is not None:
            self._close_orphans(work_name)
        return str(work_id)

    @staticmethod
    def _platform_id(work_id: str) -> str | None:
        return None if work_id.startswith(_NO_WORK_PREFIX) else work_id

    def send_bundle(self, work_id: str, objects: Sequence[Any]) -> None:
        """Send ``objects`` (deduplicated by id) within ``work_id``.

        Split mode: one bundle, which pycti splits into one message per object.
        Bundle mode: one message, or several reference-complete parts when the
        bundle is over ``max_batch_bytes``; a retry of the same batch skips the
        parts already sent.
        """
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
        bundle = bundle_dict(members)
        bundles = [dumps(bundle)]
        if self.send_mode == "bundle" and utf8_size(bundles[0]) > self.max_batch_bytes:
            try:
                bundles = split_bundle(bundle["objects"], self.max_batch_bytes)
            except BundleTooLargeError as exc:
                raise self._fail(exc, "Cannot send the bundle", {"work_id": work_id}) from None
            with self._lock:
                self.counters["oversize_batches"] += 1
            self._log(
                "info",
                "Batch over max_batch_bytes: sent as reference-complete parts",
                {
                    "work_id": work_id,
                    "parts": len(bundles),
                    "max_batch_bytes": self.max_batch_bytes,
                },
            )
        fingerprint = hash(tuple(obj["id"] for obj in bundle["objects"]))
        with self._lock:
            done_hash, done = self._parts_done.get(work_id, (fingerprint, 0))
        if done_hash != fingerprint:
            done = 0
        if done:
            with self._lock:
                self.counters["parts_skipped_on_retry"] += done
        platform_id = self._platform_id(work_id)
        messages = 0
        for index in range(done, len(bundles)):
            try:
                sent = self.helper.send_stix2_bundle(
                    bundles[index], work_id=platform_id, **self.send_options
                )
            except Exception as exc:
                with self._lock:
                    self.counters["send_failures"] += 1
                if platform_id is not None and _is_broker_error(exc):
                    self._withdraw_expectations(platform_id, bundles[index])
                meta = {"work_id": work_id, "objects": count, "attempt": attempt}
                if len(bundles) > 1:
                    meta["part"] = f"{index + 1}/{len(bundles)}"
                cleaned = self._fail(exc, "Cannot send the bundle", meta)
                if cleaned is exc:
                    raise
                raise cleaned from None
            # pycti returns the bundles it published: one per message
            published = len(sent) if isinstance(sent, list) else 1
            messages += published
            with self._lock:
                self._parts_done[work_id] = (fingerprint, index + 1)
                self.counters["bundles_sent"] += 1
                self.counters["messages_sent"] += published
        self._pycti_metric("record_send", count)
        self._metrics.objects_sent.labels(**self._labels).inc(count)
        self._log(
            "info",
            "Bundle sent",
            {
                "work_id": work_id,
                "objects": count,
                "attempt": attempt,
                "send_mode": self.send_mode,
                "messages": messages,
            },
        )

    def _withdraw_expectations(self, platform_id: str, bundle: str) -> None:
        """Take back the expectations pycti added for a send the broker broke.

        pycti adds a send's expectations to the work before it talks to the
        broker.  The platform completes a work only when the messages its
        workers imported equal its expectations, so a failed send (retried in
        the same work) would leave the work "in progress" for ever.  Messages
        published before a cut are imported in addition: the count then passes
        through the expected number on the way, which completes the work.
        """
        if self.send_mode == "bundle":
            expected = 1
        else:
            try:
                from pycti.utils.opencti_stix2_splitter import OpenCTIStix2Splitter

                expected = int(
                    OpenCTIStix2Splitter().split_bundle_with_expectations(
                        bundle=bundle,
                        use_json=True,
                        event_version=self.send_options.get("event_version"),
                        cleanup_inconsistent_bundle=bool(
                            self.send_options.get("cleanup_inconsistent_bundle")
                        ),
                    )[0]
                )
            except Exception:
                return
        try:
            self.helper.api.work.add_expectations(platform_id, -expected)
        except Exception as exc:  # pycti logs and swallows; never fail the batch for it
            self._log(
                "warning",
                "Cannot withdraw the expectations of a failed send",
                {"work_id": platform_id, "reason": self._reason(exc)},
            )
            return
        with self._lock:
            self.counters["expectations_withdrawn"] += expected

    def work_to_process(
        self, work_id: str, in_error: bool = False, message: str | None = None
    ) -> None:
        """Close the work; ``in_error=True`` marks it failed with ``message``."""
        with self._lock:
            count = self._open_works.get(work_id, 0)
        if message is None:
            message = "Batch failed" if in_error else f"Batch delivered: {count} objects"
        message = self._redact(message)
        platform_id = self._platform_id(work_id)
        if platform_id is not None:
            try:
                self.helper.api.work.to_processed(platform_id, message, in_error)
            except Exception as exc:
                cleaned = self._fail(
                    exc, "Cannot close the work", {"work_id": work_id, "in_error": in_error}
                )
                if cleaned is exc:
                    raise
                raise cleaned from None
        with self._lock:
            self._open_works.pop(work_id, None)
            self._attempts.pop(work_id, None)
            self._parts_done.pop(work_id, None)
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

    # -- works left open on the platform -----------------------------------------

    def platform_open_works(self) -> list[dict[str, Any]]:
        """This connector's works the platform lists as in progress (``wait``/``progress``).

        Raises what the API raises (secrets removed).
        """
        connector_id = str(self.helper.connect_id)
        filters = {
            "mode": "and",
            "filters": [
                {"key": "connector_id", "values": [connector_id]},
                {"key": "status", "values": ["wait", "progress"]},
            ],
            "filterGroups": [],
        }
        works: list[dict[str, Any]] = []
        after: str | None = None
        try:
            for _page in range(_OPEN_WORKS_MAX_PAGES):
                result = self.helper.api.query(
                    _OPEN_WORKS_QUERY,
                    {"count": _OPEN_WORKS_PAGE, "after": after, "filters": filters},
                )
                connection = result["data"]["works"]
                works.extend(edge["node"] for edge in connection["edges"])
                info = connection.get("pageInfo") or {}
                after = info.get("endCursor")
                if not info.get("hasNextPage") or not after:
                    break
        except Exception as exc:
            cleaned = self._clean(exc)
            if cleaned is exc:
                raise
            raise cleaned from None
        return works

    def _close_platform_works(self, works: list[dict[str, Any]], message: str) -> int:
        """Close ``works`` in error; first take back expectations no message will meet
        (the platform completes a work only when imports equal expectations)."""
        closed = 0
        for work in works:
            tracking = work.get("tracking") or {}
            try:
                missing = int(tracking.get("import_expected_number") or 0) - int(
                    tracking.get("import_processed_number") or 0
                )
            except (TypeError, ValueError):
                missing = 0
            try:
                if missing > 0:
                    self.helper.api.work.add_expectations(str(work["id"]), -missing)
                self.helper.api.work.to_processed(str(work["id"]), message, True)
                closed += 1
            except Exception as exc:
                self._pycti_metric("error_count")
                self._log(
                    "warning",
                    "Cannot close a work left in progress",
                    {"work_id": work.get("id"), "reason": self._reason(exc)},
                )
        return closed

    def _closable(self, works: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Works no connector closed (``processed_time`` unset), none of them this run's."""
        with self._lock:
            mine = set(self._open_works)
        return [w for w in works if not w.get("processed_time") and w.get("id") not in mine]

    def close_interrupted_works(self, message: str = "interrupted") -> int:
        """Close, in error with ``message``, the works a previous process left in progress.

        Call it at start, before the first batch (the mixin does): works of this
        connector that the platform lists as in progress and that no connector
        marked processed — a process killed between opening a work and closing
        it.  Works already marked processed whose bundles the workers are still
        importing are left alone.  Never raises; returns how many were closed.
        Only one process may run per connector id.
        """
        try:
            works = self._closable(self.platform_open_works())
        except Exception as exc:
            self._log(
                "warning",
                "Cannot list the works left in progress; none closed",
                {"reason": self._reason(exc)},
            )
            return 0
        closed = self._close_platform_works(works, message)
        with self._lock:
            self.counters["interrupted_works_closed"] += closed
        if works:
            self._log(
                "info",
                "Closed the works an interrupted run left in progress",
                {"closed": closed, "found": len(works)},
            )
        return closed

    def _close_orphans(self, work_name: str) -> None:
        """Close works named ``work_name`` that a lost ``workAdd`` answer left open."""
        try:
            works = [
                w for w in self._closable(self.platform_open_works()) if w.get("name") == work_name
            ]
        except Exception as exc:
            self._log(
                "warning",
                "Cannot look for a work whose creation answer was lost",
                {"work_name": work_name, "reason": self._reason(exc)},
            )
            return
        closed = self._close_platform_works(
            works, "orphaned: the answer to its creation was lost; the batch went in another work"
        )
        with self._lock:
            self.counters["orphan_works_closed"] += closed
        if works:
            self._log(
                "warning",
                "Closed works whose creation answer was lost",
                {"work_name": work_name, "closed": closed},
            )

    # -- state -------------------------------------------------------------------

    def update_state(self, state_key: str, date_str: str) -> None:
        """Store ``date_str`` under ``state_key`` (other keys kept), then ping it to OpenCTI.

        The ping is the helper's (``helper.api.connector.ping``), done here so that
        its outcome is known: a failure raises (the local state keeps the cursor
        and pycti's ping thread sends it later), and when the platform answers
        another state — an operator reset it since the last ping — that state is
        adopted with this cursor added, instead of being overwritten by the stale
        local copy (what pycti's ``force_ping`` does).
        """
        with self._state_lock:
            current = self.helper.get_state()
            state = dict(current) if isinstance(current, Mapping) else {}
            state[state_key] = date_str
            self.helper.set_state(state)
            reset = self._ping_state(state, state_key, date_str)
        self._log("info", "Cursor saved", {"state_key": state_key, "cursor": date_str})
        if reset:
            self._log(
                "warning",
                "The connector state was reset on the platform during the run: the reset "
                "state is kept, with this cursor",
                {"state_key": state_key, "cursor": date_str},
            )
        try:
            instant = parse_instant(date_str)
        except InvalidDate:
            return
        if instant is not None:
            lag = (utc_now() - instant).total_seconds()
            self._metrics.cursor_lag.labels(**self._labels, state_key=state_key).set(lag)

    def _ping_state(self, state: dict[str, Any], state_key: str, date_str: str) -> bool:
        """Ping ``state`` to the platform; True when it answered a reset state instead."""
        ping = getattr(getattr(getattr(self.helper, "api", None), "connector", None), "ping", None)
        if not callable(ping):  # a helper without pycti's API client
            self.helper.force_ping()
            return False
        connector_id = getattr(self.helper, "connector_id", None) or self.helper.connect_id
        info = getattr(getattr(self.helper, "connector_info", None), "all_details", None)
        try:
            answer = ping(connector_id, state, info or {})
            remote = _state_from(answer.get("connector_state") if answer else None)
            if remote == state:
                return False
            adopted = dict(remote or {})
            adopted[state_key] = date_str
            self.helper.set_state(adopted)
            ping(connector_id, adopted, info or {})
        except Exception as exc:
            cleaned = self._fail(
                exc,
                "Cannot ping the cursor to the platform (kept locally; the helper's ping "
                "thread sends it later)",
                {"state_key": state_key, "cursor": date_str},
            )
            if cleaned is exc:
                raise
            raise cleaned from None
        with self._lock:
            self.counters["state_resets_seen"] += 1
        return True

    def sync_state(self) -> bool:
        """Adopt the state stored on the platform when it differs from the helper's copy.

        An operator may reset the connector state in the UI between two runs of
        a long-lived process; pycti's ping thread applies that only at its next
        ping (every 40 s).  Returns whether the local state changed.  Never
        raises: when the platform cannot be read, the local state stays.
        """
        connector_id = getattr(self.helper, "connector_id", None) or self.helper.connect_id
        try:
            details = self.helper.api.connector.read(connector_id=connector_id)
        except Exception as exc:
            self._log(
                "warning",
                "Cannot read the connector state on the platform; using the local copy",
                {"reason": self._reason(exc)},
            )
            return False
        if not isinstance(details, Mapping) or "connector_state" not in details:
            return False
        try:
            remote = _state_from(details["connector_state"])
        except ValueError:
            return False
        with self._state_lock:
            local = self.helper.get_state()
            if (local or None) == remote:
                return False
            self.helper.set_state(remote)
        with self._lock:
            self.counters["state_refreshes"] += 1
        self._log(
            "info",
            "Connector state changed on the platform (reset); using the platform's",
            {"keys": sorted(remote) if remote else []},
        )
        return True

    def get_state(self, state_key: str) -> str | None:
        """The cursor stored under ``state_key`` in the connector state, or ``None``.

        With ``refresh_state`` (the default) the platform's copy is read first.
        """
        if self.refresh_state:
            self.sync_state()
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
            f"send_mode={self.send_mode!r}, backpressure={self.backpressure}, "
            f"send_options={sorted(self.send_options)})"
        )
