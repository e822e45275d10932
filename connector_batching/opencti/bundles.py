"""Bundle-mode sizing: message-size bounds and splitting a bundle into parts under one.

A part is reference-complete: it carries every object its members reference.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from typing import Any

from connector_batching.references import add_references

#: RabbitMQ 4 refuses messages over 16 MiB by default (``max_message_size``).
RABBITMQ_DEFAULT_MAX_MESSAGE_BYTES = 16 * 1024 * 1024
#: RabbitMQ's hard ceiling for ``max_message_size``.
RABBITMQ_MAX_MESSAGE_BYTES = 512 * 1024 * 1024
#: Room left for pycti's JSON envelope around the content (ids, flags, entity types).
ENVELOPE_HEADROOM_BYTES = 64 * 1024


def max_bundle_bytes_for(message_bytes: int) -> int:
    """The largest bundle JSON whose base64 message fits in ``message_bytes``."""
    return (message_bytes - ENVELOPE_HEADROOM_BYTES) * 3 // 4


#: Default ``max_batch_bytes``: a bundle whose message fits RabbitMQ's default limit.
DEFAULT_MAX_BATCH_BYTES = max_bundle_bytes_for(RABBITMQ_DEFAULT_MAX_MESSAGE_BYTES)
MIN_BATCH_BYTES = 1024
MAX_BATCH_BYTES = max_bundle_bytes_for(RABBITMQ_MAX_MESSAGE_BYTES)


class BundleTooLargeError(ValueError):
    """One object with the objects it references is larger than ``max_batch_bytes``.

    Retrying cannot help: ``retryable`` is false.
    """

    retryable = False


def dumps(obj: Any) -> str:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"))


def _bundle_prefix() -> str:
    return f'{{"type":"bundle","id":"bundle--{uuid.uuid4()}","objects":['


_PREFIX_BYTES = len(_bundle_prefix())
_SUFFIX = "]}"


def split_bundle(objects: Sequence[dict[str, Any]], max_bytes: int) -> list[str]:
    """Bundle JSON strings of at most ``max_bytes`` UTF-8 bytes holding ``objects``.

    Objects keep their order.  Each part is reference-complete: it carries every
    object of ``objects`` that its members reference (markings, authors,
    relationship endpoints, and what those reference), repeated in every part
    that needs it.  Raises :class:`BundleTooLargeError` when one object with its
    references does not fit alone.
    """
    encoded = [dumps(obj) for obj in objects]
    sizes = [len(text.encode("utf-8")) + 1 for text in encoded]  # + the comma
    position = {str(obj["id"]): i for i, obj in enumerate(objects)}
    direct: list[list[int]] = []
    for i, obj in enumerate(objects):
        refs: set[str] = set()
        add_references(obj, refs)
        direct.append([position[r] for r in refs if r in position and position[r] != i])

    def needed(i: int) -> set[int]:
        seen = {i}
        stack = [i]
        while stack:
            for j in direct[stack.pop()]:
                if j not in seen:
                    seen.add(j)
                    stack.append(j)
        return seen

    overhead = _PREFIX_BYTES + len(_SUFFIX)
    parts: list[set[int]] = []
    current: set[int] = set()
    size = overhead
    for i in range(len(objects)):
        if i in current:
            continue
        need = needed(i)
        new = need - current
        grow = sum(sizes[j] for j in new)
        if current and size + grow > max_bytes:
            parts.append(current)
            current, size, new = set(), overhead, need
            grow = sum(sizes[j] for j in new)
        if overhead + grow > max_bytes and not current:
            raise BundleTooLargeError(
                f"object {objects[i]['id']} with the {len(need) - 1} object(s) it references "
                f"is {overhead + grow} bytes of bundle JSON, over max_batch_bytes={max_bytes}; "
                "raise max_batch_bytes (and the broker's max_message_size) or shrink the object"
            )
        current |= new
        size += grow
    if current:
        parts.append(current)
    return [
        _bundle_prefix() + ",".join(encoded[j] for j in sorted(part)) + _SUFFIX for part in parts
    ]


def utf8_size(text: str) -> int:
    return len(text) if text.isascii() else len(text.encode("utf-8"))
