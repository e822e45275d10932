"""Benchmark 1: engine overhead against a bare ``append`` + ``len`` loop.

Items/s through ``GenericBatchProcessor`` with a no-op work manager (no hooks;
with a validation function; with date extraction), via ``add_item`` and via
``add_items``, on small STIX-shaped dicts.  The baseline is a bare loop that
appends each item to a list and cuts it at ``batch_size``: the cost of
batching with no processor at all.  The seed's naive design
(:mod:`benchmarks.seed_reference`) is measured on the same items.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from benchmarks.common import NoOpWorkManager, Row, best_time, compared, small_items
from benchmarks.seed_reference import SeedReferenceProcessor
from connector_batching import GenericBatchProcessor, GenericBatchProcessorConfig

NAME = "engine"
BATCH_SIZE = 1_000


def _validate(item: Any) -> bool:
    return "id" in item and "type" in item


def _modified(item: Any) -> Any:
    return item.get("modified")


HOOKS: dict[str, dict[str, Callable[[Any], Any]]] = {
    "no hooks": {},
    "validation": {"validation_function": _validate},
    "date extraction": {"date_extraction_function": _modified},
}


def bare_loop(items: list[dict[str, Any]], batch_size: int = BATCH_SIZE) -> int:
    """Batching with no processor: append, check the length, start a new list."""
    batch: list[Any] = []
    batches = 0
    for item in items:
        batch.append(item)
        if len(batch) >= batch_size:
            batches += 1
            batch = []
    return batches


def _processor(hooks: dict[str, Callable[[Any], Any]]) -> GenericBatchProcessor:
    config = GenericBatchProcessorConfig(
        batch_size=BATCH_SIZE,
        work_name_template="bench #{batch_num}",
        state_key="bench",
        entity_type="indicator",
        display_name="indicators",
        **hooks,  # type: ignore[arg-type]
    )
    return GenericBatchProcessor(config, NoOpWorkManager())


def run(quick: bool = False, *, items: int | None = None, repeat: int | None = None) -> list[Row]:
    """Measure every variant; ``items`` and ``repeat`` override the sizes.

    The variants are interleaved (one round times each once) and each keeps its
    best time, so a burst of load on the shared machine hits them alike.
    """
    count = items or (50_000 if quick else 300_000)
    reps = repeat or (3 if quick else 7)
    data = small_items(count)

    def via_add_item(hooks: dict[str, Callable[[Any], Any]]) -> Callable[[], None]:
        def go() -> None:
            processor = _processor(hooks)
            add = processor.add_item
            for item in data:
                add(item)
            processor.flush()

        return go

    def via_add_items(hooks: dict[str, Callable[[Any], Any]]) -> Callable[[], None]:
        def go() -> None:
            processor = _processor(hooks)
            processor.add_items(data)
            processor.flush()

        return go

    def via_seed(hooks: dict[str, Callable[[Any], Any]]) -> Callable[[], None]:
        def go() -> None:
            processor = SeedReferenceProcessor(
                NoOpWorkManager(),
                batch_size=BATCH_SIZE,
                validation_function=hooks.get("validation_function"),
                date_extraction_function=hooks.get("date_extraction_function"),
            )
            add = processor.add_item
            for item in data:
                add(item)
            processor.flush()

        return go

    variants: dict[str, Callable[[], object]] = {"bare": lambda: bare_loop(data)}
    for label, hooks in HOOKS.items():
        variants[f"add_items, {label}"] = via_add_items(hooks)
        variants[f"add_item, {label}"] = via_add_item(hooks)
        variants[f"seed reference design add_item, {label}"] = via_seed(hooks)
    best = dict.fromkeys(variants, float("inf"))
    for _ in range(reps):
        for name, variant in variants.items():
            best[name] = min(best[name], best_time(variant, 1))
    rates = {name: count / seconds for name, seconds in best.items()}
    details = {"items": count, "batch_size": BATCH_SIZE, "repeat": reps}
    rows = [
        Row(
            benchmark=NAME,
            figure="bare append+len loop (baseline)",
            value=rates["bare"],
            unit="items/s",
            details=details,
        )
    ]
    targets = {"add_items, no hooks": "<= 6", "add_item, no hooks": "<= 13"}
    for name, rate in rates.items():
        if name == "bare":
            continue
        seed = name.startswith("seed")
        rows.append(
            compared(
                NAME,
                name,
                rate,
                "items/s",
                "bare append+len loop",
                rates["bare"],
                target=targets.get(name, ""),
                invert=True,
                note=(
                    "the naive design, for comparison (no guarantees)"
                    if seed
                    else "ratio: times slower than the bare loop"
                ),
                details={**details, "ns_per_item": 1e9 / rate},
            )
        )
    return rows
