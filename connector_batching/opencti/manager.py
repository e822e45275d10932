"""`OpenCTIWorkManager`: the facade that wires the OpenCTI parts into one work manager."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from connector_batching.opencti.amqp import AmqpPublisher
from connector_batching.opencti.backpressure import QueueBackpressure
from connector_batching.opencti.bundles import (
    DEFAULT_MAX_BATCH_BYTES,
    RABBITMQ_DEFAULT_MAX_MESSAGE_BYTES,
    RABBITMQ_MAX_MESSAGE_BYTES,
)
from connector_batching.opencti.direct_send import DirectSend
from connector_batching.opencti.expectations import Expectations
from connector_batching.opencti.interrupted import LeftoverWorks
from connector_batching.opencti.metrics import MetricEvents
from connector_batching.opencti.options import PYCTI_ONLY_OPTIONS, ManagerOptions
from connector_batching.opencti.port import HelperPort
from connector_batching.opencti.pycti_send import PyctiSend
from connector_batching.opencti.sender import Sender, SendParts
from connector_batching.opencti.state import ConnectorState
from connector_batching.opencti.works import OpenWorks, Works


class OpenCTIWorkManager:
    """A work manager backed by a pycti ``OpenCTIConnectorHelper``.

    Manager options (keyword-only):

    * ``send_mode`` (``"split"``): ``"split"`` cuts each batch's bundle with
      pycti's splitter into one message per object (the platform's default);
      ``"bundle"`` sends each batch as ONE message (``no_split``), imported
      whole by one worker;
    * ``publisher`` (``"direct"``): ``"direct"`` publishes a batch's messages
      over one kept AMQP connection with publisher confirms per batch (exact
      expectations; a retry re-sends only what the broker did not confirm);
      ``"pycti"`` calls ``helper.send_stix2_bundle``.  The manager uses pycti's
      path whatever is asked when a send option or the helper's setup needs it
      (directory, S3, validation, playbooks, ``CONNECTOR_QUEUE_PROTOCOL=api``):
      :attr:`publisher` says which is in effect;
    * ``max_batch_bytes`` (bundle mode; default
      :data:`~connector_batching.opencti.DEFAULT_MAX_BATCH_BYTES`, about 12 MB of
      JSON, i.e. 16 MiB once base64-encoded): a batch whose bundle is larger goes
      as several reference-complete parts, each under it, in the same work;
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
      to the helper's own calls such as its pings);
    * ``clock`` / ``sleep`` (``time.monotonic`` / ``time.sleep``): the time the
      back-pressure wait reads and sleeps (a seam for tests).

    Every other keyword is passed to ``helper.send_stix2_bundle`` (``update``,
    ``cleanup_inconsistent_bundle`` — off unless set —, ``entities_types``, …).
    """

    def __init__(
        self,
        helper: Any,
        *,
        send_mode: str = "split",
        publisher: str = "direct",
        max_batch_bytes: int | None = None,
        backpressure: bool = True,
        queue_threshold_mb: float | None = None,
        queue_check_interval: float = 10.0,
        max_backpressure_wait: float | None = None,
        refresh_state: bool = True,
        api_timeout: float | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        **options: Any,
    ) -> None:
        self.options = ManagerOptions.checked(
            send_mode=send_mode,
            publisher=publisher,
            max_batch_bytes=max_batch_bytes,
            backpressure=backpressure,
            queue_threshold_mb=queue_threshold_mb,
            queue_check_interval=queue_check_interval,
            max_backpressure_wait=max_backpressure_wait,
            refresh_state=refresh_state,
            api_timeout=api_timeout,
            send_options=options,
        )
        self.helper = helper
        port = HelperPort(helper)
        if api_timeout is not None:
            port.set_api_timeout(api_timeout)
        events = MetricEvents(port.label, port.pycti_metric)
        port.events = events
        self._port = port
        self._events = events
        registry = OpenWorks()
        self._registry = registry
        expectations = Expectations(port)
        expectations.exclusive = port.queue_protocol == "amqp"
        self._leftovers = LeftoverWorks(port, events, registry, expectations)
        self._works = Works(port, events, registry, self._leftovers.close_orphans, expectations)
        parts = SendParts(port, events, registry, self.options, expectations)
        self._sender = Sender(parts)
        self._amqp: AmqpPublisher | None = None
        #: why pycti's path is used although ``publisher="direct"`` was asked (or [])
        self.pycti_reasons = self._pycti_reasons(port)
        if self.options.publisher == "direct" and not self.pycti_reasons:
            limit = RABBITMQ_DEFAULT_MAX_MESSAGE_BYTES
            if self.options.max_batch_bytes > DEFAULT_MAX_BATCH_BYTES:
                limit = RABBITMQ_MAX_MESSAGE_BYTES  # the operator raised the broker's limit
            self._amqp = AmqpPublisher(port.broker_settings(), max_message_bytes=limit)
            self._sender.path = DirectSend(parts, self._amqp)
        else:
            self._sender.path = PyctiSend(parts)
            if self.options.publisher == "direct":
                port.log(
                    "info",
                    "Sending through pycti's send_stix2_bundle",
                    {"because": ", ".join(self.pycti_reasons)},
                )
        self._state = ConnectorState(port, events, refresh=self.options.refresh_state)
        #: The push-queue gate passed before each batch.
        self.push_queue = QueueBackpressure(port, events, self.options, clock=clock, sleep=sleep)
        port.install_redaction()

    def _pycti_reasons(self, port: HelperPort) -> list[str]:
        reasons = sorted(set(self.options.send_options) & PYCTI_ONLY_OPTIONS)
        return reasons + port.pycti_only_features()

    # -- the options in effect --------------------------------------------------

    @property
    def publisher(self) -> str:
        """The publisher in effect: ``"direct"`` or ``"pycti"``."""
        return "direct" if self._amqp is not None else "pycti"

    def close(self) -> None:
        """Close again the works whose close failed (as they were to be closed), then the
        direct publisher's broker connection (a later send opens it again). Never raises."""
        self._works.close_unclosed()
        if self._amqp is not None:
            self._amqp.close()

    @property
    def send_mode(self) -> str:
        return self.options.send_mode

    @property
    def send_options(self) -> Mapping[str, Any]:
        """The keywords given to ``send_stix2_bundle`` (read-only)."""
        return self.options.send_options

    @property
    def max_batch_bytes(self) -> int:
        return self.options.max_batch_bytes

    @property
    def backpressure(self) -> bool:
        return self.options.backpressure

    @property
    def queue_threshold_mb(self) -> float | None:
        return self.options.queue_threshold_mb

    @property
    def queue_check_interval(self) -> float:
        return self.options.queue_check_interval

    @property
    def max_backpressure_wait(self) -> float | None:
        return self.options.max_backpressure_wait

    @property
    def refresh_state(self) -> bool:
        return self.options.refresh_state

    @property
    def api_timeout(self) -> float | None:
        return self.options.api_timeout

    @property
    def counters(self) -> dict[str, int]:
        """What happened on the way: bundles and messages sent, failed sends, oversize
        batches, messages or parts not re-sent on retry, expectations withdrawn,
        objects pycti's splitter cannot import (not sent), messages in doubt (published,
        unconfirmed when the connection broke), orphan and interrupted works closed,
        state refreshes and resets seen."""
        return self._events.counters

    # -- WorkManager -------------------------------------------------------------

    def initiate_work(self, work_name: str, entity_type: str) -> str:
        """Wait for the push queue if needed, then open an OpenCTI work.

        Works whose close failed earlier (the processor gave up) are closed again
        first, as they were to be closed.
        """
        self._works.close_unclosed()
        self.push_queue.wait()
        return self._works.open(work_name, entity_type)

    def send_bundle(self, work_id: str, objects: Sequence[Any]) -> None:
        """Send ``objects`` (deduplicated by id) within ``work_id``.

        Split mode: one bundle, which pycti splits into one message per object.
        Bundle mode: one message, or several reference-complete parts when the
        bundle is over ``max_batch_bytes``; a retry of the same batch skips the
        parts already sent.
        """
        self._sender.send(work_id, objects)

    def work_to_process(
        self, work_id: str, in_error: bool = False, message: str | None = None
    ) -> None:
        """Close the work; ``in_error=True`` marks it failed with ``message``."""
        self._works.close(work_id, in_error, message)

    def update_state(self, state_key: str, date_str: str) -> None:
        """Store ``date_str`` under ``state_key`` (other keys kept), then ping it to OpenCTI.

        The ping is the helper's (``helper.api.connector.ping``), done here so that
        its outcome is known: a failure raises (the local state keeps the cursor
        and pycti's ping thread sends it later), and when the platform answers
        another state — an operator reset it since the last ping — that state is
        adopted with this cursor added, instead of being overwritten by the stale
        local copy (what pycti's ``force_ping`` does).
        """
        self._state.update(state_key, date_str)

    def get_state(self, state_key: str) -> str | None:
        """The cursor stored under ``state_key`` in the connector state, or ``None``.

        With ``refresh_state`` (the default) the platform's copy is read first.
        """
        return self._state.get(state_key)

    # -- more than the protocol ----------------------------------------------------

    def sync_state(self) -> bool:
        """Adopt the state stored on the platform when it differs from the helper's copy.

        An operator may reset the connector state in the UI between two runs of
        a long-lived process; pycti's ping thread applies that only at its next
        ping (every 40 s).  Returns whether the local state changed.  Never
        raises: when the platform cannot be read, the local state stays.
        """
        return self._state.sync()

    def wait_for_queue(self) -> float:
        """Block while the push queue is over the threshold; return the seconds waited.

        Queries the queue at most once per ``queue_check_interval``.  Does
        nothing when ``backpressure`` is off; never raises.
        """
        return self.push_queue.wait()

    def queue_size_mb(self) -> float | None:
        """The push queue's size in MB as the platform reports it, or ``None`` if unknown."""
        return self.push_queue.queue_size_mb()

    @property
    def open_works(self) -> list[str]:
        """Ids of works opened by this manager and not closed yet."""
        return self._registry.ids()

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

    def platform_open_works(self) -> list[dict[str, Any]]:
        """This connector's works the platform lists as in progress (``wait``/``progress``).

        Raises what the API raises (secrets removed).
        """
        return self._leftovers.in_progress()

    def close_interrupted_works(self, message: str = "interrupted") -> int:
        """Close, in error with ``message``, the works a previous process left in progress.

        Call it at start, before the first batch (the mixin does): works of this
        connector that the platform lists as in progress and that no connector
        marked processed — a process killed between opening a work and closing
        it.  Works already marked processed whose bundles the workers are still
        importing are left alone.  Never raises; returns how many were closed.
        Only one process may run per connector id.
        """
        return self._leftovers.close_interrupted(message)

    def __repr__(self) -> str:
        return (
            f"OpenCTIWorkManager(connector_id={self._port.label!r}, "
            f"send_mode={self.send_mode!r}, publisher={self.publisher!r}, "
            f"backpressure={self.backpressure}, "
            f"send_options={sorted(self.send_options)})"
        )
