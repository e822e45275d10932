"""The manager's options: checked once, at construction, into a frozen value."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from connector_batching.opencti.bundles import (
    DEFAULT_MAX_BATCH_BYTES,
    MAX_BATCH_BYTES,
    MIN_BATCH_BYTES,
)

#: ``send_stix2_bundle`` keywords only pycti's own path implements: with any of
#: them set, the manager sends through pycti (``publisher="pycti"``).
PYCTI_ONLY_OPTIONS = frozenset(
    {
        "validation_mode",
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
    }
)

#: ``send_stix2_bundle`` keywords a user may set (``work_id`` is the manager's); the
#: direct publisher puts the others in its messages as pycti does.
SEND_OPTIONS = PYCTI_ONLY_OPTIONS | {
    "update",
    "cleanup_inconsistent_bundle",
    "draft_id",
    "entities_types",
    "event_version",
    "no_split",
}

SEND_MODES = ("split", "bundle")
PUBLISHERS = ("direct", "pycti")

#: The least ``queue_check_interval`` (seconds).
MIN_CHECK_INTERVAL = 0.01

_MANAGER_OPTIONS = (
    "send_mode, publisher, max_batch_bytes, backpressure, queue_threshold_mb, "
    "queue_check_interval, max_backpressure_wait, refresh_state, api_timeout, clock, sleep"
)


@dataclass(frozen=True)
class ManagerOptions:
    """What :class:`~connector_batching.opencti.OpenCTIWorkManager` was asked to do.

    Build it with :meth:`checked`; the fields hold the values in effect (the
    default byte bound filled in, the check interval raised to its minimum,
    ``no_split=True`` added in bundle mode).
    """

    send_mode: str = "split"
    publisher: str = "direct"
    max_batch_bytes: int = DEFAULT_MAX_BATCH_BYTES
    backpressure: bool = True
    queue_threshold_mb: float | None = None
    queue_check_interval: float = 10.0
    max_backpressure_wait: float | None = None
    refresh_state: bool = True
    api_timeout: float | None = None
    #: Keywords for ``helper.send_stix2_bundle`` (read-only).
    send_options: Mapping[str, Any] = field(
        default_factory=lambda: MappingProxyType({"cleanup_inconsistent_bundle": False})
    )

    @classmethod
    def checked(
        cls,
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
        send_options: Mapping[str, Any] | None = None,
    ) -> ManagerOptions:
        """The options, validated; ``ValueError`` naming the option when one is wrong."""
        send = dict(send_options or {})
        if queue_check_interval < 0:
            raise ValueError("queue_check_interval must be >= 0 seconds")
        if max_backpressure_wait is not None and max_backpressure_wait < 0:
            raise ValueError("max_backpressure_wait must be None or >= 0 seconds")
        if queue_threshold_mb is not None and queue_threshold_mb <= 0:
            raise ValueError("queue_threshold_mb must be None or > 0 (MB)")
        if "work_id" in send:
            raise ValueError("OpenCTIWorkManager: work_id is set per batch, not as an option")
        _check_api_timeout(api_timeout)
        send = _checked_send_options(send)
        bound = _checked_send_mode(send_mode, max_batch_bytes, send.get("no_split"))
        if send_mode == "bundle":
            send["no_split"] = True
        if publisher not in PUBLISHERS:
            raise ValueError(
                f"OpenCTIWorkManager: publisher must be 'direct' or 'pycti', not {publisher!r}"
            )
        return cls(
            send_mode=send_mode,
            publisher=publisher,
            max_batch_bytes=bound,
            backpressure=backpressure,
            queue_threshold_mb=queue_threshold_mb,
            queue_check_interval=max(queue_check_interval, MIN_CHECK_INTERVAL),
            max_backpressure_wait=max_backpressure_wait,
            refresh_state=refresh_state,
            api_timeout=api_timeout,
            send_options=MappingProxyType(send),
        )


def _check_api_timeout(api_timeout: object) -> None:
    if api_timeout is not None and (
        isinstance(api_timeout, bool)
        or not isinstance(api_timeout, int | float)
        or not api_timeout > 0
    ):
        raise ValueError(
            f"OpenCTIWorkManager: api_timeout must be None or a number of seconds > 0, "
            f"not {api_timeout!r}"
        )


def _checked_send_options(options: Mapping[str, Any]) -> dict[str, Any]:
    unknown = sorted(set(options) - SEND_OPTIONS)
    if unknown:
        raise ValueError(
            f"OpenCTIWorkManager: unknown option(s) {', '.join(unknown)}; manager options are "
            f"{_MANAGER_OPTIONS}; "
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
    if send_mode == "split" and no_split:
        raise ValueError(
            "OpenCTIWorkManager: send_mode='split' with no_split=True is contradictory "
            "(pycti would send one message and count one expectation for the whole batch); "
            "use send_mode='bundle' for one message per batch"
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
