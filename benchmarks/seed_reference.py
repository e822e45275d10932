"""A minimal re-implementation of the naive processor design the seed describes.

Used only as a comparison point for the engine benchmark.  It is what a
straightforward reading of the seed's documentation produces: per-item debug
logging with an f-string (formatted even when debug is off), an
``_ensure_stix_format`` conversion per item, ``hasattr`` checks, and a copy of
the batch list before each send.  It has none of the guarantees (no lock, no
safe cursor, no reference completion, no retries).
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable
from typing import Any

_LOG = logging.getLogger("benchmarks.seed_reference")


class SeedReferenceProcessor:
    """The seed's processor shape, naively: every item goes through the same slow path."""

    def __init__(
        self,
        work_manager: Any,
        *,
        batch_size: int,
        validation_function: Callable[[Any], bool] | None = None,
        date_extraction_function: Callable[[Any], Any] | None = None,
        display_name: str = "items",
        logger: logging.Logger | None = None,
    ) -> None:
        self.work_manager = work_manager
        self.batch_size = batch_size
        self.validation_function = validation_function
        self.date_extraction_function = date_extraction_function
        self.display_name = display_name
        self.display_name_singular = display_name.rstrip("s")
        self.logger = logger or _LOG
        self.current_batch: list[Any] = []
        self.total_items_processed = 0
        self.total_batches_processed = 0
        self.latest_date: str | None = None
        self.batch_num = 0

    def _ensure_stix_format(self, item: Any) -> Any:
        if hasattr(item, "to_stix2_object"):
            return item.to_stix2_object()
        if hasattr(item, "to_stix"):
            return item.to_stix()
        if isinstance(item, dict) and "id" in item and "type" in item:
            return item
        if hasattr(item, "id") and hasattr(item, "type"):
            return item
        raise ValueError(f"Item is not a STIX object: {item!r}")

    def add_item(self, item: Any) -> bool:
        self.logger.debug(f"Adding {self.display_name_singular} to batch: {item}")
        if self.validation_function is not None and not self.validation_function(item):
            self.logger.debug(f"Invalid {self.display_name_singular} skipped: {item}")
            return False
        stix_item = self._ensure_stix_format(item)
        if self.date_extraction_function is not None:
            value = self.date_extraction_function(item)
            if value is not None:
                date = value if isinstance(value, str) else str(value)
                parsed = dt.datetime.fromisoformat(date.replace("Z", "+00:00"))
                text = parsed.isoformat()
                if self.latest_date is None or text > self.latest_date:
                    self.latest_date = text
        self.current_batch.append(stix_item)
        self.logger.debug(
            f"Current batch size: {len(self.current_batch)}/{self.batch_size} {self.display_name}"
        )
        if len(self.current_batch) >= self.batch_size:
            self.process_current_batch()
        return True

    def process_current_batch(self) -> str | None:
        if not self.current_batch:
            return None
        self.batch_num += 1
        batch_items = self.current_batch.copy()
        work_name = f"Batch #{self.batch_num}"
        work_id = str(self.work_manager.initiate_work(work_name, self.display_name))
        self.work_manager.send_bundle(work_id, batch_items)
        self.work_manager.work_to_process(work_id)
        self.total_items_processed += len(batch_items)
        self.total_batches_processed += 1
        self.current_batch = []
        if self.latest_date is not None:
            self.work_manager.update_state("cursor", self.latest_date)
        self.logger.info(f"Processed batch #{self.batch_num} of {len(batch_items)} items")
        return work_id

    def flush(self) -> str | None:
        return self.process_current_batch()
