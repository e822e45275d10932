"""The direct path: a batch's messages through :class:`~.amqp.AmqpPublisher`.

Per batch and work: the messages are built once (pycti's envelope); in bundle
mode each is confirmed before the next is published; their
expectations — the reports the worker will make for them — are added before
the first is published (a failed call raises: nothing is published); the
broker's confirms say which reached the queue, and a retry publishes only the
others, without counting them again.  What was counted and never confirmed is
taken back when the work closes (:meth:`~.works.Works.close`).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from connector_batching.opencti.amqp import AmqpPublisher, PublishIncomplete
from connector_batching.opencti.messages import messages_of
from connector_batching.opencti.sender import SendParts
from connector_batching.opencti.works import BatchProgress

if TYPE_CHECKING:
    from connector_batching.opencti.sender import BatchPlan


class DirectSend:
    """Publish batches with exact expectations; re-send only the unconfirmed."""

    def __init__(self, parts: SendParts, publisher: AmqpPublisher) -> None:
        self._port = parts.port
        self._events = parts.events
        self._registry = parts.registry
        self._options = parts.options
        self._expectations = parts.expectations
        self.publisher = publisher

    def send(self, work_id: str, remote: str | None, plan: BatchPlan, meta: dict[str, Any]) -> int:
        progress = self._registry.resume(
            work_id,
            plan.fingerprint,
            lambda: messages_of(
                plan.bundles(),
                work_id=remote,
                applicant_id=self._port.applicant_id,
                send_options=self._options.send_options,
            ),
        )
        if progress.confirmed:
            self._events.emit("parts_skipped_on_retry", len(progress.confirmed))
        if remote is not None and not progress.counted:
            with self._port.failing("Cannot add the batch's expectations", meta):
                self._expectations.add_batch(remote, sum(m.reports for m in progress.messages))
            progress.counted = True
        pending = progress.pending()
        bodies = [progress.messages[index].body for index in pending]
        with self._port.failing("Cannot send the bundle", meta):
            try:
                # bundle mode: large messages, each confirmed before the next (one in doubt)
                self.publisher.publish(bodies, 1 if self._options.send_mode == "bundle" else None)
            except PublishIncomplete as exc:
                self._events.emit("send_failed")
                self._events.emit("messages_in_doubt", exc.in_flight)
                self._confirmed(work_id, progress, (pending[i] for i in exc.confirmed))
                raise
            except Exception:
                self._events.emit("send_failed")
                raise
        self._confirmed(work_id, progress, pending)
        self._events.emit("bundle_sent")
        return len(pending)

    def _confirmed(self, work_id: str, progress: BatchProgress, indexes: Iterable[int]) -> None:
        messages, reports = progress.confirm(indexes)
        self._registry.delivered(work_id, reports)
        self._events.emit("messages_sent", messages)
