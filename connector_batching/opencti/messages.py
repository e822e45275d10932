"""Push-queue messages as pycti builds them, and what the worker will report for each.

pycti's splitter (``OpenCTIStix2Splitter``) cuts and orders a bundle into
one-object bundles, dropping the elements it cannot import (incompatible);
:func:`split_messages` uses it unchanged.  :func:`envelope` wraps one bundle in
the JSON message pycti's ``_send_bundle`` publishes, field for field.

The worker reports one expectation per object of a message it imports whole (a
one-object message, or ``no_split``): :attr:`Message.reports` is that number.
"""

from __future__ import annotations

import base64
import json
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Message:
    """One message for the push queue and the reports the worker makes for it."""

    body: bytes
    reports: int


@dataclass(frozen=True)
class Split:
    """A bundle as pycti's splitter cuts it: one-object bundles, and what it dropped."""

    bundles: list[str]
    #: types of the elements the splitter dropped (not importable), with their counts
    incompatible: Mapping[str, int]

    @property
    def dropped(self) -> int:
        return sum(self.incompatible.values())


def pycti_split(bundle: str, send_options: Mapping[str, Any]) -> Split:
    """``bundle`` cut as ``helper.send_stix2_bundle`` cuts it (same splitter, same options)."""
    from pycti.utils.opencti_stix2_splitter import OpenCTIStix2Splitter

    _count, incompatible, bundles = OpenCTIStix2Splitter().split_bundle_with_expectations(
        bundle=bundle,
        use_json=True,
        event_version=send_options.get("event_version"),
        cleanup_inconsistent_bundle=bool(send_options.get("cleanup_inconsistent_bundle")),
    )
    types = Counter(
        str(item.get("type", "unknown")) if isinstance(item, Mapping) else "unknown"
        for item in incompatible
    )
    return Split(bundles=list(bundles), incompatible=dict(types))


def envelope(
    bundle: str,
    *,
    sequence: int,
    work_id: str | None,
    applicant_id: Any,
    send_options: Mapping[str, Any],
) -> bytes:
    """The JSON message pycti publishes for ``bundle`` (``_send_bundle``'s fields)."""
    message: dict[str, Any] = {
        "bundle_type": "QUEUE_BUNDLE",
        "applicant_id": applicant_id,
        "action_sequence": sequence,
        "entities_types": list(send_options.get("entities_types") or []),
        "content": base64.b64encode(bundle.encode("utf-8", "escape")).decode("utf-8"),
        "update": bool(send_options.get("update", False)),
        "draft_id": send_options.get("draft_id"),
        "no_split": bool(send_options.get("no_split", False)),
    }
    if work_id is not None:
        message["work_id"] = work_id
    return json.dumps(message).encode("utf-8")


def object_count(bundle: str) -> int:
    """Objects in a bundle's JSON (what the worker reports for a message imported whole)."""
    objects = json.loads(bundle).get("objects") or []
    return len(objects)


def messages_of(
    bundles: Sequence[str],
    *,
    work_id: str | None,
    applicant_id: Any,
    send_options: Mapping[str, Any],
) -> list[Message]:
    """The messages for ``bundles``, numbered from 1 as pycti numbers them."""
    whole = bool(send_options.get("no_split", False))
    return [
        Message(
            body=envelope(
                bundle,
                sequence=sequence,
                work_id=work_id,
                applicant_id=applicant_id,
                send_options=send_options,
            ),
            reports=object_count(bundle) if whole else 1,
        )
        for sequence, bundle in enumerate(bundles, start=1)
    ]
