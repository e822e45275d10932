"""Shared pieces: result rows, timing helpers, a no-op work manager."""

from __future__ import annotations

import gc
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class Row:
    """One figure of the table, next to its baseline.

    ``ratio`` is ``value / baseline_value``; ``target`` says how the ratio is
    judged (``">= 20"``, ``"<= 6"``) and ``met`` whether it is (``None``: no
    target, informational).  ``available=False`` marks a figure that could not
    be measured here, with the reason in ``note``.
    """

    benchmark: str
    figure: str
    value: float | None
    unit: str
    baseline: str = ""
    baseline_value: float | None = None
    ratio: float | None = None
    target: str = ""
    met: bool | None = None
    note: str = ""
    available: bool = True
    details: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def judge(ratio: float | None, target: str) -> bool | None:
    """Whether ``ratio`` meets ``target`` (``"<= X"`` or ``">= X"``); None without one."""
    if ratio is None or not target:
        return None
    op, _, number = target.partition(" ")
    limit = float(number.rstrip("x%"))
    if op == "<=":
        return ratio <= limit
    if op == ">=":
        return ratio >= limit
    raise ValueError(f"unknown target {target!r}")


def compared(
    benchmark: str,
    figure: str,
    value: float,
    unit: str,
    baseline: str,
    baseline_value: float,
    *,
    target: str = "",
    note: str = "",
    invert: bool = False,
    details: dict[str, Any] | None = None,
) -> Row:
    """A row with its ratio (``value / baseline``, or ``baseline / value`` when ``invert``)."""
    if invert:
        ratio = baseline_value / value if value else None
    else:
        ratio = value / baseline_value if baseline_value else None
    return Row(
        benchmark=benchmark,
        figure=figure,
        value=value,
        unit=unit,
        baseline=baseline,
        baseline_value=baseline_value,
        ratio=ratio,
        target=target,
        met=judge(ratio, target),
        note=note,
        details=details or {},
    )


def unavailable(benchmark: str, figure: str, reason: str, target: str = "") -> Row:
    """A row for a figure that cannot be measured here (the reason says why)."""
    return Row(
        benchmark=benchmark,
        figure=figure,
        value=None,
        unit="",
        target=target,
        note=f"not available: {reason}",
        available=False,
    )


def best_time(run: Callable[[], Any], repeat: int) -> float:
    """The shortest wall time (s) of ``repeat`` calls of ``run`` (GC off while timing)."""
    best = float("inf")
    for _ in range(max(repeat, 1)):
        gc.collect()
        enabled = gc.isenabled()
        gc.disable()
        try:
            start = time.perf_counter()
            run()
            elapsed = time.perf_counter() - start
        finally:
            if enabled:
                gc.enable()
        best = min(best, elapsed)
    return best


def best_rate(count: int, run: Callable[[], Any], repeat: int) -> float:
    """``count`` units divided by the best time of ``run``: units per second."""
    return count / best_time(run, repeat)


class NoOpWorkManager:
    """A work manager that does nothing (counts calls): engine cost alone."""

    def __init__(self) -> None:
        self.works = 0
        self.objects = 0
        self.states = 0

    def initiate_work(self, work_name: str, entity_type: str) -> str:
        self.works += 1
        return f"work-{self.works}"

    def send_bundle(self, work_id: str, objects: Sequence[Any]) -> None:
        self.objects += len(objects)

    def work_to_process(
        self, work_id: str, in_error: bool = False, message: str | None = None
    ) -> None:
        return None

    def update_state(self, state_key: str, date_str: str) -> None:
        self.states += 1


def small_items(count: int) -> list[dict[str, Any]]:
    """``count`` small STIX-shaped dicts (distinct ids, ``modified`` dates)."""
    return [
        {
            "type": "indicator",
            "id": f"indicator--00000000-0000-4000-8000-{n:012d}",
            "modified": f"2026-01-01T{(n // 3600) % 24:02d}:{(n // 60) % 60:02d}:{n % 60:02d}Z",
        }
        for n in range(count)
    ]


def median_round(
    rounds: list[dict[str, Any]], key: Callable[[dict[str, Any]], float]
) -> dict[str, Any]:
    """The round whose ``key`` (a paired ratio measured within the round) is the median.

    Pairing both sides of a ratio in one round, then taking the median round,
    resists the bursts of load of a shared machine better than comparing each
    side's best time: a burst slows one round's pair, not one side of the ratio.
    """
    ordered = sorted(rounds, key=key)
    return ordered[(len(ordered) - 1) // 2]
