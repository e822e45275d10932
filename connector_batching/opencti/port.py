"""The helper port: the only code that touches a pycti ``OpenCTIConnectorHelper``.

Every attribute of the helper the manager uses is read here, and nowhere else
(works, bundles, the connector state, the queue size, the logger, the metric
handler, ``connector_info``).  Errors raised by the helper, the platform API or
pika are handled in one place, :meth:`HelperPort.failing` (as httpx maps
httpcore's exceptions in ``map_httpcore_exceptions``): the secret-free reason is
logged, the error counted, and the exception re-raised — as it was, or as a
:class:`~connector_batching.redaction.RedactedError` when its message held a secret.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from connector_batching.opencti.metrics import MetricEvents
from connector_batching.redaction import (
    RedactedError,
    helper_secrets,
    install_log_redaction,
    redact,
)


@dataclass
class PublishCount:
    """Messages pycti published during :meth:`HelperPort.counting_publishes`.

    ``watching`` is false when the helper has no metric handler to watch: then
    nothing is known of what a broken send published.
    """

    published: int = 0
    watching: bool = False


class HelperPort:
    """What the manager asks of the helper, each request one method."""

    def __init__(self, helper: Any) -> None:
        self._helper = helper
        #: Set by the manager once its event stream exists (errors are counted there).
        self.events: MetricEvents | None = None

    # -- identity --------------------------------------------------------------

    @property
    def connect_id(self) -> str:
        """The connector id the helper registered (``helper.connect_id``)."""
        return str(self._helper.connect_id)

    @property
    def label(self) -> str:
        """The ``connector_id`` metric label ("" when the helper has none)."""
        return str(getattr(self._helper, "connect_id", "") or "")

    def _connector_id(self) -> Any:
        return getattr(self._helper, "connector_id", None) or self._helper.connect_id

    # -- secrets, logs, metrics --------------------------------------------------

    def install_redaction(self) -> None:
        """Register the helper's secrets and filter its pycti loggers."""
        install_log_redaction(self._helper)

    def redact(self, text: str) -> str:
        """``text`` without the helper's secrets or URL credentials."""
        return redact(text, helper_secrets(self._helper))

    def reason(self, exc: BaseException) -> str:
        """The message of ``exc``, secrets removed (for logs and work messages)."""
        return self.redact(str(exc))

    def clean(self, exc: Exception) -> Exception:
        """``exc``, or a :class:`RedactedError` in its place when its message holds a secret."""
        text = str(exc)
        cleaned = self.redact(text)
        if cleaned == text:
            return exc
        return RedactedError(f"{type(exc).__name__}: {cleaned}")

    def log(self, level: str, message: str, meta: Mapping[str, Any]) -> None:
        """Log through ``helper.connector_logger`` (nothing when it has none)."""
        logger = getattr(self._helper, "connector_logger", None)
        method = getattr(logger, level, None)
        if callable(method):
            method(message, dict(meta))

    def pycti_metric(self, name: str, n: int = 1) -> None:
        """``helper.metric.inc(name, n)``; metrics never break delivery."""
        metric = getattr(self._helper, "metric", None)
        if metric is not None:
            with contextlib.suppress(Exception):
                metric.inc(name, n)

    @contextlib.contextmanager
    def failing(
        self,
        message: str | None = None,
        meta: Mapping[str, Any] | None = None,
        *,
        level: str = "error",
        count: bool = True,
    ) -> Iterator[None]:
        """Around a helper call: on an error, count it, log ``message``, re-raise it clean.

        ``count`` adds one to pycti's ``error_count``; ``message`` (when given) is
        logged at ``level`` with ``meta`` and the secret-free reason.  The error is
        re-raised as it was, or as a :class:`RedactedError` when its message held a
        secret (then without the original as its cause, which would show it).
        Callers that go on after a failure catch what this re-raises.
        """
        try:
            yield
        except Exception as exc:
            if count and self.events is not None:
                self.events.emit("error")
            if message is not None:
                self.log(level, message, {**(meta or {}), "reason": self.reason(exc)})
            cleaned = self.clean(exc)
            if cleaned is exc:
                raise
            raise cleaned from None

    # -- works -------------------------------------------------------------------

    def set_api_timeout(self, seconds: float) -> None:
        """Seconds before one API request of the helper gives up (its pings included)."""
        for attr in ("api", "api_impersonate"):
            api = getattr(self._helper, attr, None)
            if api is not None:
                api.session_requests_timeout = seconds

    def initiate_work(self, work_name: str) -> Any:
        """Open a multipart work; pycti answers ``None`` when it sends to no queue.

        Multipart: the platform completes it only once it is marked processed.
        """
        return self._helper.api.work.initiate_work(
            self._helper.connect_id, work_name, is_multipart=True
        )

    def close_work(self, work_id: str, message: str, in_error: bool) -> None:
        self._helper.api.work.to_processed(work_id, message, in_error)

    def query(self, query: str, variables: Mapping[str, Any]) -> Any:
        """One GraphQL request through the helper's API client."""
        return self._helper.api.query(query, dict(variables))

    # -- bundles -------------------------------------------------------------------

    @contextlib.contextmanager
    def counting_publishes(self) -> Iterator[PublishCount]:
        """Count, during the block, the messages pycti's ``send_stix2_bundle`` publishes
        from this thread: pycti adds one to its ``bundle_send`` metric after each
        message the broker confirmed (``helper.metric.inc``, watched meanwhile)."""
        count = PublishCount()
        metric = getattr(self._helper, "metric", None)
        original = getattr(metric, "inc", None)
        if metric is None or not callable(original):
            yield count
            return
        thread = threading.get_ident()

        def inc(name: str, n: int = 1) -> Any:
            if name == "bundle_send" and threading.get_ident() == thread:
                count.published += n
            return original(name, n)

        own = "inc" in vars(metric)
        try:
            metric.inc = inc
        except (AttributeError, TypeError):
            yield count
            return
        count.watching = True
        try:
            yield count
        finally:
            if own:
                metric.inc = original
            else:
                del metric.inc

    def send_bundle(self, bundle: str, work_id: str | None, options: Mapping[str, Any]) -> Any:
        """``helper.send_stix2_bundle``; pycti returns the bundles it published."""
        return self._helper.send_stix2_bundle(bundle, work_id=work_id, **options)

    @property
    def queue_protocol(self) -> str:
        """``amqp`` (publish to the broker) or ``api`` (``CONNECTOR_QUEUE_PROTOCOL``)."""
        return str(getattr(self._helper, "queue_protocol", "amqp") or "amqp")

    @property
    def applicant_id(self) -> Any:
        """The user id pycti puts in every message (``helper.applicant_id``)."""
        return getattr(self._helper, "applicant_id", None)

    def pycti_only_features(self) -> list[str]:
        """What the helper is set up for that only pycti's own send path does."""
        helper = self._helper
        found = []
        if self.queue_protocol != "amqp":
            found.append(f"CONNECTOR_QUEUE_PROTOCOL={self.queue_protocol}")
        for attr, label in (
            ("connect_validate_before_import", "validate_before_import"),
            ("playbook", "a playbook"),
            ("enrichment_shared_organizations", "enrichment_shared_organizations"),
            ("bundle_send_to_directory", "send_to_directory"),
            ("bundle_send_to_s3", "send_to_s3"),
        ):
            if getattr(helper, attr, None):
                found.append(label)
        if getattr(helper, "bundle_send_to_queue", True) is False:
            found.append("send_to_queue=False")
        if not isinstance(getattr(helper, "connector_config", None), dict):
            found.append("no broker settings (connector_config)")
        return found

    def broker_settings(self) -> Any:
        """Where the helper publishes (:class:`~connector_batching.opencti.amqp.BrokerSettings`)."""
        from connector_batching.opencti.amqp import BrokerSettings

        return BrokerSettings.of_helper(self._helper)

    # -- the connector: state, queue, info -------------------------------------------

    def get_state(self) -> Any:
        return self._helper.get_state()

    def set_state(self, state: Any) -> None:
        self._helper.set_state(state)

    @property
    def can_ping(self) -> bool:
        """Whether the helper has pycti's API client (``api.connector.ping``)."""
        connector = getattr(getattr(self._helper, "api", None), "connector", None)
        return callable(getattr(connector, "ping", None))

    def force_ping(self) -> None:
        self._helper.force_ping()

    def ping(self, state: Mapping[str, Any]) -> Any:
        """Ping ``state`` to the platform as pycti's ping does; the platform's answer."""
        info = getattr(getattr(self._helper, "connector_info", None), "all_details", None)
        return self._helper.api.connector.ping(self._connector_id(), state, info or {})

    def read_connector(self) -> Any:
        """The platform's record of this connector (state, queue details)."""
        return self._helper.api.connector.read(connector_id=self._connector_id())

    @property
    def queue_threshold_setting(self) -> Any:
        """``CONNECTOR_QUEUE_THRESHOLD`` as the helper read it (MB), or ``None``."""
        return getattr(self._helper, "connect_queue_threshold", None)

    def show_buffering(self, size_mb: float, threshold: float, buffering: bool) -> None:
        """Tell the platform (``connector_info``) whether the connector is buffering."""
        info = getattr(self._helper, "connector_info", None)
        if info is None:
            return
        with contextlib.suppress(Exception):
            info.queue_messages_size = size_mb
            info.queue_threshold = threshold
            info.buffering = buffering
