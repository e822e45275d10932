"""Building the configured exception for a batch that failed for good."""

from __future__ import annotations

import contextlib
from collections.abc import Callable


def build_error(
    exception_class: type[BaseException],
    message: str,
    *,
    batch_number: int | None = None,
    work_id: str | None = None,
) -> BaseException:
    """``exception_class(message, batch_number=…, work_id=…)``, or the closest it accepts.

    Falls back to ``exception_class(message)``, then ``exception_class()``; the
    ``batch_number`` and ``work_id`` attributes are set when missing.
    """
    cls = exception_class
    builders: tuple[Callable[[], BaseException], ...] = (
        lambda: cls(message, batch_number=batch_number, work_id=work_id),  # type: ignore[call-arg]
        lambda: cls(message),
        lambda: cls(),
    )
    error: BaseException = Exception(message)
    for build in builders:
        try:
            error = build()
            break
        except TypeError:
            continue
    for name, value in (("batch_number", batch_number), ("work_id", work_id)):
        if not hasattr(error, name):
            with contextlib.suppress(AttributeError):
                setattr(error, name, value)
    return error
