"""Safe, fast batching for OpenCTI connectors.

The engine (:class:`GenericBatchProcessor`) delivers items in batches through a
:class:`WorkManager`: :class:`OpenCTIWorkManager` for a real platform (pycti),
:class:`LocalWorkManager` for offline runs.  :class:`BatchingConnectorMixin`
wires it into any connector class that has ``self.helper``.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from connector_batching.config import GenericBatchProcessorConfig
from connector_batching.dates import InvalidDate, format_instant, parse_instant
from connector_batching.dead_letters import DeadLetterStore
from connector_batching.processor import GenericBatchProcessor
from connector_batching.redaction import RedactingFilter, redact, register_secrets
from connector_batching.retry import RetryPolicy
from connector_batching.stix import bundle_json, to_stix_dict
from connector_batching.work_manager import WorkManager

if TYPE_CHECKING:
    from connector_batching.local import LocalWorkManager
    from connector_batching.mixin import BatchingConnectorMixin
    from connector_batching.opencti import SEND_OPTIONS, OpenCTIWorkManager

__all__ = [
    "SEND_OPTIONS",
    "BatchingConnectorMixin",
    "DeadLetterStore",
    "GenericBatchProcessor",
    "GenericBatchProcessorConfig",
    "InvalidDate",
    "LocalWorkManager",
    "OpenCTIWorkManager",
    "RedactingFilter",
    "RetryPolicy",
    "WorkManager",
    "bundle_json",
    "format_instant",
    "parse_instant",
    "redact",
    "register_secrets",
    "to_stix_dict",
]
__version__ = "0.1.0"

# Imported on first use: pycti is slow to import and offline users may not need it.
_LAZY = {
    "OpenCTIWorkManager": "connector_batching.opencti",
    "SEND_OPTIONS": "connector_batching.opencti",
    "BatchingConnectorMixin": "connector_batching.mixin",
    "LocalWorkManager": "connector_batching.local",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'connector_batching' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
