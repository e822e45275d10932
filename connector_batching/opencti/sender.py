"""The sender: one batch to ``helper.send_stix2_bundle``, split by pycti or as bundle parts.

* ``split`` mode: one bundle, which pycti splits into one message per object;
* ``bundle`` mode: one message (``no_split=True``), or several reference-complete
  parts when the bundle is over ``max_batch_bytes``; a retry of the same batch
  skips the parts already sent.

When the broker breaks a send, the expectations pycti added for it are taken
back, so that the retry in the same work can complete it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from stix2.base import _STIXBase

from connector_batching.opencti.bundles import (
    dumps,
    split_bundle,
    utf8_size,
)
from connector_batching.opencti.metrics import MetricEvents
from connector_batching.opencti.options import ManagerOptions
from connector_batching.opencti.port import HelperPort, is_broker_error
from connector_batching.opencti.works import OpenWorks, platform_id
from connector_batching.stix import bundle_dict, iter_members, normalize_item, object_id


def flatten(objects: Sequence[Any]) -> list[Any]:
    """Members of ``objects``: mapper objects become the STIX objects they convert to."""
    out: list[Any] = []
    for obj in objects:
        if type(obj) is dict or isinstance(obj, _STIXBase):
            out.append(obj)
        else:
            out.extend(iter_members(normalize_item(obj)))
    return out


class Sender:
    """Send batches' bundles within their works."""

    def __init__(
        self, port: HelperPort, events: MetricEvents, registry: OpenWorks, options: ManagerOptions
    ) -> None:
        self._port = port
        self._events = events
        self._registry = registry
        self._options = options

    def send(self, work_id: str, objects: Sequence[Any]) -> None:
        """Send ``objects`` (deduplicated by id) within ``work_id``."""
        members = flatten(objects)
        count = len({object_id(member) for member in members})  # as sent, deduplicated
        attempt = self._registry.attempt(work_id, count)
        if attempt > 1:
            self._events.emit("retry")
        if not members:
            self._port.log("debug", "Empty batch: nothing to send", {"work_id": work_id})
            return
        bundle = bundle_dict(members)
        bundles = self._parts(work_id, bundle)
        fingerprint = hash(tuple(obj["id"] for obj in bundle["objects"]))
        done = self._registry.parts_done(work_id, fingerprint)
        if done:
            self._events.emit("parts_skipped_on_retry", done)
        remote = platform_id(work_id)
        send_options = self._options.send_options
        messages = 0
        for index in range(done, len(bundles)):
            meta: dict[str, Any] = {"work_id": work_id, "objects": count, "attempt": attempt}
            if len(bundles) > 1:
                meta["part"] = f"{index + 1}/{len(bundles)}"
            with self._port.failing("Cannot send the bundle", meta):
                try:
                    sent = self._port.send_bundle(bundles[index], remote, send_options)
                except Exception as exc:
                    self._events.emit("send_failed")
                    if remote is not None and is_broker_error(exc):
                        self._withdraw_expectations(remote, bundles[index])
                    raise
            # pycti returns the bundles it published: one per message
            published = len(sent) if isinstance(sent, list) else 1
            messages += published
            self._registry.part_sent(work_id, fingerprint, index + 1)
            self._events.emit("bundle_sent")
            self._events.emit("messages_sent", published)
        self._events.emit("objects_sent", count)
        self._port.log(
            "info",
            "Bundle sent",
            {
                "work_id": work_id,
                "objects": count,
                "attempt": attempt,
                "send_mode": self._options.send_mode,
                "messages": messages,
            },
        )

    def _parts(self, work_id: str, bundle: dict[str, Any]) -> list[str]:
        """The bundle JSON as sent: one string, or reference-complete parts in bundle mode."""
        whole = dumps(bundle)
        limit = self._options.max_batch_bytes
        if self._options.send_mode != "bundle" or utf8_size(whole) <= limit:
            return [whole]
        with self._port.failing("Cannot send the bundle", {"work_id": work_id}):
            parts = split_bundle(bundle["objects"], limit)
        self._events.emit("oversize_batch")
        self._port.log(
            "info",
            "Batch over max_batch_bytes: sent as reference-complete parts",
            {"work_id": work_id, "parts": len(parts), "max_batch_bytes": limit},
        )
        return parts

    def _withdraw_expectations(self, work_id: str, bundle: str) -> None:
        """Take back the expectations pycti added for a send the broker broke.

        pycti adds a send's expectations to the work before it talks to the
        broker.  The platform completes a work only when the messages its
        workers imported equal its expectations, so a failed send (retried in
        the same work) would leave the work "in progress" for ever.  Messages
        published before a cut are imported in addition: the count then passes
        through the expected number on the way, which completes the work.
        """
        options = self._options
        if options.send_mode == "bundle":
            expected = 1
        else:
            try:
                expected = self._port.split_expectations(
                    bundle,
                    event_version=options.send_options.get("event_version"),
                    cleanup_inconsistent_bundle=bool(
                        options.send_options.get("cleanup_inconsistent_bundle")
                    ),
                )
            except Exception:
                return
        try:
            with self._port.failing(
                "Cannot withdraw the expectations of a failed send",
                {"work_id": work_id},
                level="warning",
                count=False,
            ):
                self._port.add_expectations(work_id, -expected)
        except Exception:  # pycti logs and swallows; never fail the batch for it
            return
        self._events.emit("expectations_withdrawn", expected)
