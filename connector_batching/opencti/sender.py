"""The sender: one batch into its work, through the direct publisher or pycti's.

* ``split`` mode: the batch's bundle cut by pycti's splitter into one message
  per object (elements it cannot import are counted, ``incompatible_objects``,
  and logged at WARNING with their types);
* ``bundle`` mode: one message (``no_split``), or several reference-complete
  parts when the bundle is over ``max_batch_bytes``.

Whichever publishes (:mod:`.direct_send`, :mod:`.pycti_send`), the work's
expected count is raised *before* a message can reach the queue, and a retry of
the same batch re-sends only what the broker did not confirm.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from stix2.base import _STIXBase

from connector_batching.opencti.bundles import dumps, split_bundle, utf8_size
from connector_batching.opencti.expectations import Expectations
from connector_batching.opencti.messages import pycti_split
from connector_batching.opencti.metrics import MetricEvents
from connector_batching.opencti.options import ManagerOptions
from connector_batching.opencti.port import HelperPort
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


@dataclass(frozen=True)
class SendParts:
    """What a way to the queue works with: the helper port, the event stream, the open
    works, the options and the works' expected counts."""

    port: HelperPort
    events: MetricEvents
    registry: OpenWorks
    options: ManagerOptions
    expectations: Expectations


class BatchPath(Protocol):
    """A way to the queue: publish one batch's bundles in a work; the messages sent."""

    def send(
        self, work_id: str, remote: str | None, plan: BatchPlan, meta: dict[str, Any]
    ) -> int: ...


class BatchPlan:
    """One batch as bundles: cut (split mode) or in parts (bundle mode), on first use."""

    def __init__(self, sender: Sender, work_id: str, bundle: dict[str, Any]) -> None:
        self._sender = sender
        self._work_id = work_id
        self.bundle = bundle
        self.fingerprint = hash(tuple(obj["id"] for obj in bundle["objects"]))
        self._bundles: list[str] | None = None
        self._whole: str | None = None

    def bundles(self) -> list[str]:
        """Split mode: one-object bundles (pycti's splitter); bundle mode: the parts."""
        if self._bundles is None:
            self._bundles = self._sender.cut(self._work_id, self.bundle, self.whole())
        return self._bundles

    def whole(self) -> str:
        """The batch's bundle JSON (what pycti's own splitter gets in split mode), made once."""
        if self._whole is None:
            self._whole = dumps(self.bundle)
        return self._whole


class Sender:
    """Send batches' bundles within their works."""

    def __init__(self, parts: SendParts) -> None:
        self._port = parts.port
        self._events = parts.events
        self._registry = parts.registry
        self._options = parts.options
        #: set by the manager: the direct publisher's path or pycti's
        self.path: BatchPath | None = None

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
        assert self.path is not None, "the manager sets the sender's path"
        plan = BatchPlan(self, work_id, bundle_dict(members))
        meta: dict[str, Any] = {"work_id": work_id, "objects": count, "attempt": attempt}
        messages = self.path.send(work_id, platform_id(work_id), plan, meta)
        self._events.emit("objects_sent", count)
        self._port.log(
            "info",
            "Bundle sent",
            {**meta, "send_mode": self._options.send_mode, "messages": messages},
        )

    def cut(self, work_id: str, bundle: dict[str, Any], whole: str) -> list[str]:
        """The batch's bundles as they are published (see :meth:`BatchPlan.bundles`);
        ``whole`` is ``bundle`` as JSON."""
        if self._options.send_mode == "bundle":
            return self._parts(work_id, bundle, whole)
        with self._port.failing("Cannot split the bundle", {"work_id": work_id}):
            split = pycti_split(whole, self._options.send_options)
        if split.dropped:
            self._events.emit("incompatible_objects", split.dropped)
            self._port.log(
                "warning",
                "Objects pycti's splitter cannot import were not sent",
                {"work_id": work_id, "objects": split.dropped, "types": dict(split.incompatible)},
            )
        return split.bundles

    def _parts(self, work_id: str, bundle: dict[str, Any], whole: str) -> list[str]:
        """The bundle JSON as sent in bundle mode: one string, or reference-complete parts."""
        limit = self._options.max_batch_bytes
        if utf8_size(whole) <= limit:
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
