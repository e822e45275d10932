"""pycti's path: ``helper.send_stix2_bundle``, with the work's count made exact around it.

For options only pycti supports (directory, S3, workbench / draft validation,
playbooks) and for ``CONNECTOR_QUEUE_PROTOCOL=api``.  pycti adds its own
expectations (1 for a ``no_split`` message, whatever it holds) and swallows a
failure to add them, so around each call:

1. the reports the worker will make for this send are added first (a call
   that raises): the count covers the send before any message is published;
2. pycti sends (and adds its own);
3. the work is read back and set to the count before the send plus those
   reports (pycti's own add taken back, whether it was applied or not) — or,
   when pycti raised, to the count before the send: nothing of it is counted.

A send pycti broke part-way may still have published some of its messages:
their reports come on top (at most that send's messages).

With the API transport the platform queues the bundle as one message; the
worker splits it and adds the expectations of the parts itself, except for a
one-object bundle, which it imports whole: that one report is added here.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from connector_batching.opencti.messages import object_count
from connector_batching.opencti.sender import SendParts

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
        split_mode = self._options.send_mode == "split"
        bundles = plan.bundles()
        # split mode: pycti cuts the whole bundle itself, as the cut above did
        sends = [plan.whole()] if split_mode else bundles
        done = self._registry.parts_done(work_id, plan.fingerprint)
        if done:
            self._events.emit("parts_skipped_on_retry", done)
        messages = 0
        for index in range(done, len(sends)):
            reports = self._reports(sends[index], len(bundles) if split_mode else None)
            part_meta = dict(meta)
            if len(sends) > 1:
                part_meta["part"] = f"{index + 1}/{len(sends)}"
            messages += self._send_one(
                work_id, remote, sends[index], reports, len(bundles) if split_mode else 1, part_meta
            )
            self._registry.part_sent(work_id, plan.fingerprint, index + 1)
        return messages

    def _reports(self, bundle: str, split_messages: int | None) -> int:
        """The reports the worker makes for ``bundle`` that no one else counts."""
        if self._api:
            return 1 if object_count(bundle) == 1 else 0
        return split_messages if split_messages is not None else object_count(bundle)

    def _send_one(
        self,
        work_id: str,
        remote: str | None,
        bundle: str,
        reports: int,
        messages: int,
        meta: dict[str, Any],
    ) -> int:
        before = self._expectations.expected(remote) if remote is not None else 0
        if remote is not None:
            with self._port.failing("Cannot add the batch's expectations", meta):
                held = self._expectations.held(remote)
                self._expectations.add_batch(remote, reports)
            if not held:
                before += 1  # the placeholder stays
        try:
            with self._port.failing("Cannot send the bundle", meta):
                sent = self._port.send_bundle(bundle, remote, self._options.send_options)
        except Exception:
            self._events.emit("send_failed")
            # pycti may have published any of this send's messages before it raised
            self._events.emit("messages_in_doubt", messages)
            if remote is not None:
                self._restore(remote, before, meta)
            raise
        if remote is not None:
            self._restore(remote, before + reports, meta)
        self._registry.delivered(work_id, reports)
        published = len(sent) if isinstance(sent, list) else 1  # pycti returns one per message
        self._events.emit("bundle_sent")
        self._events.emit("messages_sent", published)
        return published

    def _restore(self, remote: str, target: int, meta: dict[str, Any]) -> None:
        """Set the work's expected count to ``target`` (read back, then corrected)."""
        with self._port.failing("Cannot correct the work's expectations", meta):
            if self._expectations.exclusive:
                self._expectations.adopt(remote)
            self._expectations.add(remote, target - self._expectations.expected(remote))
