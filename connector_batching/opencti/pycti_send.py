"""pycti's path: ``helper.send_stix2_bundle``, with the work's count made exact around it.

For options only pycti supports (directory, S3, workbench / draft validation,
playbooks) and for ``CONNECTOR_QUEUE_PROTOCOL=api``.  pycti adds its own
expectations (1 for a ``no_split`` message, whatever it holds) and swallows a
failure to add them, so around each call:

1. the reports the worker will make for this send are added first (a call
   that raises): the count covers the send before any message is published;
2. pycti sends (and adds its own);
3. the work is read back and set to the count before the send plus the reports
   of what pycti published (its own add taken back, whether it was applied or not).

What pycti published is counted as it goes: pycti counts each message the
broker confirmed in its ``bundle_send`` metric, which the helper port watches
during the call (:meth:`~.port.HelperPort.counting_publishes`).  In split mode a
send broken part-way is then resumed: the retry sends only the objects pycti
had not published, and the one message being published when it broke is in
doubt.  Without pycti's metric handler, the whole send is.

With the API transport the platform queues the bundle as one message; the
worker splits it and adds the expectations of the parts itself, except for a
one-object bundle, which it imports whole: that one report is added here.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from connector_batching.opencti.bundles import dumps
from connector_batching.opencti.messages import Message, object_count, pycti_split
from connector_batching.opencti.sender import SendParts
from connector_batching.opencti.works import BatchProgress

if TYPE_CHECKING:
    from connector_batching.opencti.sender import BatchPlan


class PyctiSend:
    """``send_stix2_bundle`` per bundle (or part), the expected count corrected around it."""

    def __init__(self, parts: SendParts) -> None:
        self._port = parts.port
        self._events = parts.events
        self._registry = parts.registry
        self._options = parts.options
        self._expectations = parts.expectations
        self._api = parts.port.queue_protocol == "api"

    def send(self, work_id: str, remote: str | None, plan: BatchPlan, meta: dict[str, Any]) -> int:
        if self._options.send_mode == "split" and not self._api:
            return self._send_split(work_id, remote, plan, meta)
        # bundle mode: one message a part; the API transport: one push a bundle
        sends = plan.bundles() if self._options.send_mode == "bundle" else [plan.whole()]
        progress = self._registry.resume(
            work_id, plan.fingerprint, lambda: [Message(b"", self._reports(s)) for s in sends]
        )
        if progress.confirmed:
            self._events.emit("parts_skipped_on_retry", len(progress.confirmed))
        pending = progress.pending()
        for index in pending:
            part_meta = dict(meta)
            if len(sends) > 1:
                part_meta["part"] = f"{index + 1}/{len(sends)}"
            reports = progress.messages[index].reports
            try:
                self._send_one(remote, sends[index], reports, [reports], part_meta)
            except _Broken as broken:
                raise broken.error from None
            self._confirm(work_id, progress, [index])
        return len(pending)

    def _reports(self, bundle: str) -> int:
        """The reports the worker makes for ``bundle`` that no one else counts."""
        if self._api:  # the worker counts a split bundle's parts itself
            return 1 if object_count(bundle) == 1 else 0
        return object_count(bundle)  # no_split: one per object

    def _send_split(
        self, work_id: str, remote: str | None, plan: BatchPlan, meta: dict[str, Any]
    ) -> int:
        """Split mode: what pycti published of an earlier attempt is not sent again."""
        progress = self._registry.resume(
            work_id,
            plan.fingerprint,
            lambda: [Message(_only_id(bundle).encode(), 1) for bundle in plan.bundles()],
        )
        if progress.confirmed:
            self._events.emit("parts_skipped_on_retry", len(progress.confirmed))
        index_of = {message.body.decode(): n for n, message in enumerate(progress.messages)}
        pending = {progress.messages[n].body.decode() for n in progress.pending()}
        # pycti's splitter gives the same messages in the same order: which ones it published
        if len(pending) == len(progress.messages):  # the whole batch, as cut already
            text = plan.whole()
            order = [message.body.decode() for message in progress.messages]
        else:
            objects = [o for o in plan.bundle["objects"] if o["id"] in pending]
            text = dumps({**plan.bundle, "objects": objects})
            order = [_only_id(one) for one in pycti_split(text, self._options.send_options).bundles]
        try:
            self._send_one(remote, text, len(order), [1] * len(order), meta)
        except _Broken as broken:
            self._confirm(work_id, progress, [index_of[i] for i in order[: broken.published]])
            raise broken.error from None
        self._confirm(work_id, progress, [index_of[i] for i in order])
        return len(order)

    def _confirm(self, work_id: str, progress: BatchProgress, indexes: list[int]) -> None:
        self._registry.delivered(work_id, progress.confirm(indexes)[1])

    def _send_one(
        self,
        remote: str | None,
        bundle: str,
        reports: int,
        per_message: list[int],
        meta: dict[str, Any],
    ) -> None:
        """One ``send_stix2_bundle`` of messages making ``per_message`` reports each.

        Raises :class:`_Broken` (the original error, and how many messages pycti
        published before it) when pycti raised.
        """
        before = self._expectations.expected(remote) if remote is not None else 0
        if remote is not None:
            with self._port.failing("Cannot add the batch's expectations", meta):
                held = self._expectations.held(remote)
                self._expectations.add_batch(remote, reports)
            if not held:
                before += 1  # the placeholder stays
        with self._port.counting_publishes() as count:
            try:
                with self._port.failing("Cannot send the bundle", meta):
                    sent = self._port.send_bundle(bundle, remote, self._options.send_options)
            except Exception as exc:
                published = min(count.published, len(per_message)) if count.watching else 0
                self._broken(remote, before + sum(per_message[:published]), meta)
                doubt = 1 if count.watching else len(per_message) - published
                self._events.emit("messages_in_doubt", min(doubt, len(per_message) - published))
                raise _Broken(exc, published) from exc
        if remote is not None:
            self._restore(remote, before + reports, meta)
        self._events.emit("bundle_sent")
        self._events.emit("messages_sent", len(sent) if isinstance(sent, list) else 1)

    def _broken(self, remote: str | None, target: int, meta: dict[str, Any]) -> None:
        self._events.emit("send_failed")
        if remote is not None:
            self._restore(remote, target, meta)

    def _restore(self, remote: str, target: int, meta: dict[str, Any]) -> None:
        """Set the work's expected count to ``target`` (read back, then corrected)."""
        with self._port.failing("Cannot correct the work's expectations", meta):
            if self._expectations.exclusive:
                self._expectations.adopt(remote)
            self._expectations.add(remote, target - self._expectations.expected(remote))


class _Broken(Exception):
    """pycti raised ``error`` after publishing ``published`` messages."""

    def __init__(self, error: Exception, published: int) -> None:
        super().__init__(str(error))
        self.error = error
        self.published = published


def _only_id(bundle: str) -> str:
    """The id of the one object of a bundle pycti's splitter made."""
    return str(json.loads(bundle)["objects"][0]["id"])
