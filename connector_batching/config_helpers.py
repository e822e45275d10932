"""The reference implementation's public config helpers, with its meaning.

Code written against the google-ti-feeds ``GenericBatchProcessorConfig`` calls
these on the config (in connectors and in their tests); the processor itself
does not need them.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

from connector_batching.errors import build_error


class ReferenceConfigHelpers:
    """``extract_date``, ``validate_item``, ``preprocess_batch``, ``postprocess_batch``,
    ``create_exception``, ``get_current_timestamp`` and ``format_work_name``."""

    work_name_template: str
    entity_type: str
    display_name: str
    exception_class: type[BaseException]
    date_extraction_function: Callable[[Any], Any] | None
    preprocessing_function: Callable[[list[Any]], list[Any]] | None
    postprocessing_function: Callable[[list[Any], str], Any] | None
    validation_function: Callable[[Any], bool] | None

    def format_work_name(self, batch_num: int, **extra: Any) -> str:
        """The work name of batch ``batch_num``; ``extra`` may override the
        template's other fields (``entity_type``, ``display_name``)."""
        fields = {"entity_type": self.entity_type, "display_name": self.display_name, **extra}
        try:
            return self.work_name_template.format(batch_num=batch_num, **fields)
        except KeyError as exc:
            raise ValueError(
                f"work_name_template {self.work_name_template!r} needs {exc.args[0]!r}"
            ) from exc

    def extract_date(self, item: Any) -> Any:
        """The item's date as the function returns it, or None (no function, or it raised)."""
        if self.date_extraction_function is None:
            return None
        try:
            return self.date_extraction_function(item)
        except Exception:
            return None

    def validate_item(self, item: Any) -> bool:
        """True without a function; False when it returns falsy or raises."""
        if self.validation_function is None:
            return True
        try:
            return bool(self.validation_function(item))
        except Exception:
            return False

    def preprocess_batch(self, items: list[Any]) -> list[Any]:
        """The preprocessing function's result (``items`` without one); its error is
        raised as the configured exception class."""
        if self.preprocessing_function is None:
            return items
        try:
            result = self.preprocessing_function(items)
        except Exception as exc:
            raise self.create_exception(f"Batch preprocessing failed: {exc}") from exc
        return items if result is None else result

    def postprocess_batch(self, items: list[Any], work_id: str) -> None:
        """Run the postprocessing function; its error is raised as the configured class."""
        if self.postprocessing_function is None:
            return
        try:
            self.postprocessing_function(items, work_id)
        except Exception as exc:
            raise self.create_exception(f"Batch postprocessing failed: {exc}") from exc

    def create_exception(
        self, message: str, batch_number: int | None = None, work_id: str | None = None
    ) -> BaseException:
        """An instance of the configured exception class (one that takes only a
        message works too); ``batch_number`` and ``work_id`` are set as attributes."""
        return build_error(
            self.exception_class, message, batch_number=batch_number, work_id=work_id
        )

    @staticmethod
    def get_current_timestamp() -> str:
        """Now, ISO 8601 UTC, as the reference writes it (``…+00:00``)."""
        return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S+00:00")
