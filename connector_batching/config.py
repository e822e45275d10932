"""`GenericBatchProcessorConfig`: everything that shapes a batch processor."""

from __future__ import annotations

import string
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from connector_batching.config_helpers import ReferenceConfigHelpers
from connector_batching.retry import RetryPolicy

EMPTY_BATCH_BEHAVIORS = ("skip", "update_state", "error")
WORK_NAME_FIELDS = frozenset({"batch_num", "entity_type", "display_name"})

_IRREGULAR_PLURALS = {
    "indices": "index",
    "matrices": "matrix",
    "analyses": "analysis",
    "people": "person",
    "children": "child",
    "data": "data",
    "series": "series",
    "species": "species",
}


def singularize(plural: str) -> str:
    """A best-effort singular of an English plural, applied to the last word.

    ``"threat indicators"`` → ``"threat indicator"``, ``"entities"`` → ``"entity"``.
    """
    head, sep, word = plural.rpartition(" ")
    lower = word.lower()
    if lower in _IRREGULAR_PLURALS:
        single = _IRREGULAR_PLURALS[lower]
        single = single if word.islower() else single.capitalize() if word.istitle() else single
    elif lower.endswith("ies") and len(word) > 3:
        single = word[:-3] + ("Y" if word[-3:].isupper() else "y")
    elif lower.endswith(("sses", "shes", "ches", "xes", "zes")):
        single = word[:-2]
    elif lower.endswith("s") and not lower.endswith(("ss", "us", "is")) and len(word) > 1:
        single = word[:-1]
    else:
        single = word
    return f"{head}{sep}{single}"


def _check_template(template: str) -> None:
    """Only ``{batch_num}``, ``{entity_type}``, ``{display_name}`` with format specs."""
    if not isinstance(template, str) or not template:
        raise ValueError("work_name_template must be a non-empty string")
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as exc:
        raise ValueError(f"work_name_template {template!r} does not format: {exc}") from exc
    for _literal, name, spec, _conversion in parsed:
        if name is None:
            continue
        if name not in WORK_NAME_FIELDS:
            raise ValueError(
                f"work_name_template {template!r} uses {{{name}}}; allowed fields are "
                f"{{batch_num}}, {{entity_type}}, {{display_name}} (no attribute or index access)"
            )
        if spec and ("{" in spec or "}" in spec):
            raise ValueError(f"work_name_template {template!r}: nested fields are not allowed")
    try:
        template.format(batch_num=1, entity_type="x", display_name="x")
    except (ValueError, TypeError) as exc:
        raise ValueError(f"work_name_template {template!r} does not format: {exc}") from exc


def _check_number(name: str, value: object, *, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{name} must be a number, got {value!r}")
    if value != value or value < 0:  # NaN or negative
        raise ValueError(f"{name} must be >= 0, got {value!r}")


@dataclass
class GenericBatchProcessorConfig(ReferenceConfigHelpers):
    """Configuration for a :class:`~connector_batching.GenericBatchProcessor`.

    Invalid values raise ``ValueError`` naming the field, at construction.
    """

    batch_size: int
    """Items collected before a batch is processed (a group counts as one item)."""
    work_name_template: str
    """Work name; may use ``{batch_num}``, ``{entity_type}``, ``{display_name}``."""
    state_key: str
    """Key under which the cursor is stored."""
    entity_type: str
    """Type identifier of the entities processed (passed to ``initiate_work``)."""
    display_name: str
    """Human-readable plural name, used in log lines."""
    exception_class: type[BaseException] = Exception
    """Raised (after retries) when a batch fails for good."""
    display_name_singular: str | None = None
    """Singular of ``display_name``; derived when not given."""
    auto_process: bool = True
    """Process automatically when ``batch_size`` items are collected."""
    date_extraction_function: Callable[[Any], Any] | None = None
    """Item → date (datetime, ISO string, epoch number or None), for the cursor."""
    preprocessing_function: Callable[[list[Any]], list[Any]] | None = None
    """Batch items → items to send; runs before each batch is sent."""
    postprocessing_function: Callable[[list[Any], str], Any] | None = None
    """(items, work_id) after a batch is delivered."""
    validation_function: Callable[[Any], bool] | None = None
    """Item → bool; falsy or raising rejects the item (counted, not raised)."""
    empty_batch_behavior: str = "update_state"
    """Processing an empty batch: ``skip``, ``update_state`` or ``error``."""
    max_retries: int = 0
    """Retries after the first attempt; 0 means one attempt."""
    retry_delay: float = 1.0
    """Delay before the first retry; doubles each retry (seconds)."""
    work_timeout: float | None = None
    """Bound on one batch's attempts all together (seconds); ``None``: no bound."""
    retry_max_delay: float = 60.0
    """Cap on one backoff delay (seconds)."""
    retry_jitter: bool = False
    """Randomise each delay within [delay/2, delay] to spread retries."""
    max_batch_age: float | None = None
    """Process a batch whose oldest item is older than this at the next call (seconds)."""
    max_in_flight_batches: int = 0
    """Pipelined sending: batches queued or sending on a background thread while
    the producer keeps adding (0: synchronous, the seed's behaviour)."""
    reference_cache_size: int = 10_000
    """Objects kept to complete later bundles' references (markings and authors apart)."""
    dead_letter_path: str | None = None
    """SQLite file where items of batches that failed for good are persisted."""
    is_sorted: bool | None = None
    """Whether items come in non-decreasing date order (the Singer SDK's name): it
    decides when the cursor may move mid-run.  ``True``: after every delivered
    batch; ``False``: only at the end of the run, once everything accepted was
    delivered; ``None``: as ``True`` until the first item older than the latest
    date seen, then as ``False`` (said once at WARNING)."""

    def __post_init__(self) -> None:
        if isinstance(self.batch_size, bool) or not isinstance(self.batch_size, int):
            raise ValueError(f"batch_size must be an integer >= 1, got {self.batch_size!r}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size!r}")
        _check_template(self.work_name_template)
        for name in ("state_key", "entity_type", "display_name"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value:
                raise ValueError(f"{name} must be a non-empty string, got {value!r}")
        if not (
            isinstance(self.exception_class, type)
            and issubclass(self.exception_class, BaseException)
        ):
            raise ValueError(
                f"exception_class must be an exception class, got {self.exception_class!r}"
            )
        if self.is_sorted not in (None, True, False):
            raise ValueError(f"is_sorted must be True, False or None, got {self.is_sorted!r}")
        if self.display_name_singular is None:
            self.display_name_singular = singularize(self.display_name)
        if self.empty_batch_behavior not in EMPTY_BATCH_BEHAVIORS:
            raise ValueError(
                f"empty_batch_behavior must be one of {', '.join(EMPTY_BATCH_BEHAVIORS)}; "
                f"got {self.empty_batch_behavior!r}"
            )
        if isinstance(self.max_retries, bool) or not isinstance(self.max_retries, int):
            raise ValueError(f"max_retries must be an integer >= 0, got {self.max_retries!r}")
        if self.max_retries < 0:
            raise ValueError(f"max_retries must be >= 0, got {self.max_retries!r}")
        _check_number("retry_delay", self.retry_delay)
        _check_number("retry_max_delay", self.retry_max_delay)
        _check_number("work_timeout", self.work_timeout, allow_none=True)
        _check_number("max_batch_age", self.max_batch_age, allow_none=True)
        if self.work_timeout is not None and self.work_timeout == 0:
            raise ValueError("work_timeout must be > 0 or None")
        if (
            isinstance(self.reference_cache_size, bool)
            or not isinstance(self.reference_cache_size, int)
            or self.reference_cache_size < 0
        ):
            raise ValueError(
                f"reference_cache_size must be an integer >= 0, got {self.reference_cache_size!r}"
            )
        if (
            isinstance(self.max_in_flight_batches, bool)
            or not isinstance(self.max_in_flight_batches, int)
            or self.max_in_flight_batches < 0
        ):
            raise ValueError(
                f"max_in_flight_batches must be an integer >= 0, got {self.max_in_flight_batches!r}"
            )
        for name in (
            "date_extraction_function",
            "preprocessing_function",
            "postprocessing_function",
            "validation_function",
        ):
            value = getattr(self, name)
            if value is not None and not callable(value):
                raise ValueError(f"{name} must be callable or None, got {value!r}")

    def __setattr__(self, name: str, value: Any) -> None:
        # A template changed at run time is checked like one given at construction.
        if name == "work_name_template" and "work_name_template" in self.__dict__:
            _check_template(value)
        object.__setattr__(self, name, value)

    def retry_policy(self) -> RetryPolicy:
        """The batch delivery's retry policy (attempts, delays, cap, jitter, timeout)."""
        return RetryPolicy(
            attempts=self.max_retries + 1,
            delay=float(self.retry_delay),
            max_delay=float(self.retry_max_delay),
            jitter=self.retry_jitter,
            timeout=self.work_timeout,
        )

    def backoff_delay(self, retry: int, random_fraction: float = 1.0) -> float:
        """Delay before retry ``retry`` (1-based): ``retry_delay * 2**(retry-1)``, capped.

        With ``retry_jitter`` the delay is scaled into ``[delay/2, delay]`` by
        ``random_fraction`` (0..1).
        """
        return self.retry_policy().backoff(retry, random_fraction)
