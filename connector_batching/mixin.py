"""`BatchingConnectorMixin`: batch processors wired to a connector's pycti helper."""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar

from connector_batching.dates import parse_instant

if TYPE_CHECKING:
    from connector_batching.config import GenericBatchProcessorConfig
    from connector_batching.processor import GenericBatchProcessor
    from connector_batching.work_manager import WorkManager

_CREATE_LOCK = threading.Lock()


class BatchingConnectorMixin:
    """Inherit it in a connector class that sets ``self.helper`` in ``__init__``.

    ``work_manager`` is an :class:`~connector_batching.opencti.OpenCTIWorkManager`
    built once from ``self.helper`` and ``work_manager_options``; assign another
    manager (e.g. a ``LocalWorkManager``) to run without OpenCTI.  When it is
    built, the works a killed process left in progress are closed in error
    ("interrupted") unless ``close_interrupted_works_at_start`` is false.
    """

    helper: Any
    #: Keyword options for the default ``OpenCTIWorkManager``.
    work_manager_options: ClassVar[Mapping[str, Any]] = {}
    #: Close this connector's works left in progress by a killed process when the
    #: default manager is created (turn off when several processes share a connector id).
    close_interrupted_works_at_start: ClassVar[bool] = True

    @property
    def work_manager(self) -> WorkManager:
        """The manager batches go through (created on first use)."""
        manager = self.__dict__.get("_batching_work_manager")
        if manager is None:
            with _CREATE_LOCK:
                manager = self.__dict__.get("_batching_work_manager")
                if manager is None:
                    from connector_batching.opencti import OpenCTIWorkManager

                    helper = getattr(self, "helper", None)
                    if helper is None:
                        raise AttributeError(
                            f"{type(self).__name__}.helper is not set: set self.helper in "
                            "__init__ before using the batching mixin, or assign "
                            "self.work_manager"
                        )
                    manager = OpenCTIWorkManager(helper, **dict(self.work_manager_options))
                    self.__dict__["_batching_work_manager"] = manager
                    if self.close_interrupted_works_at_start:
                        manager.close_interrupted_works()
        return manager  # type: ignore[no-any-return,unused-ignore]

    @work_manager.setter
    def work_manager(self, manager: WorkManager) -> None:
        self.__dict__["_batching_work_manager"] = manager

    def create_batch_processor(
        self, config: GenericBatchProcessorConfig, logger: Any = None
    ) -> GenericBatchProcessor:
        """A processor for ``config`` on this connector's manager and logger."""
        from connector_batching.processor import GenericBatchProcessor

        if logger is None:
            logger = getattr(getattr(self, "helper", None), "connector_logger", None)
        return GenericBatchProcessor(config, self.work_manager, logger=logger)

    def get_cursor(self, state_key: str) -> dt.datetime | None:
        """The cursor saved under ``state_key`` as an aware UTC datetime, or ``None``."""
        read = getattr(self.work_manager, "get_state", None)
        if not callable(read):
            return None
        return parse_instant(read(state_key))
