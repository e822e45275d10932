"""Benchmark 4: peak memory (tracemalloc) of a long stream through the engine.

A stream of small STIX dicts, generated one at a time (the stream itself is
never held in memory), goes through ``GenericBatchProcessor.add_items`` with a
no-op manager at several batch sizes.  The peak should depend on the batch
size and the reference cache (``reference_cache_size``), not on the stream
length: the same batch size is also run on a stream ten times shorter.
"""

from __future__ import annotations

import gc
import tracemalloc
from collections.abc import Iterator
from typing import Any

from benchmarks.common import NoOpWorkManager, Row, compared
from connector_batching import GenericBatchProcessor, GenericBatchProcessorConfig

NAME = "memory"
REFERENCE_CACHE = GenericBatchProcessorConfig.reference_cache_size


def stream(count: int) -> Iterator[dict[str, Any]]:
    """``count`` small STIX-shaped dicts, made on demand."""
    for n in range(count):
        yield {
            "type": "indicator",
            "id": f"indicator--00000000-0000-4000-8000-{n:012d}",
            "modified": "2026-01-01T00:00:00Z",
        }


def peak_bytes(count: int, batch_size: int) -> int:
    """Peak traced memory while ``count`` items stream through a processor."""
    config = GenericBatchProcessorConfig(
        batch_size=batch_size,
        work_name_template="memory #{batch_num}",
        state_key="memory",
        entity_type="indicator",
        display_name="indicators",
    )
    gc.collect()
    tracemalloc.start()
    try:
        processor = GenericBatchProcessor(config, NoOpWorkManager())
        processor.add_items(stream(count))
        processor.flush()
        _current, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return peak


def run(
    quick: bool = False,
    *,
    items: int | None = None,
    batch_sizes: tuple[int, ...] = (100, 1_000, 10_000),
) -> list[Row]:
    """Peak MB per batch size on the long stream, and long/short at the middle size."""
    long = items or (100_000 if quick else 1_000_000)
    # past the reference cache's fill (two generations of reference_cache_size)
    short = min(max(long // 10, 3 * REFERENCE_CACHE), long)
    rows: list[Row] = []
    peaks: dict[int, int] = {}
    for size in batch_sizes:
        peaks[size] = peak_bytes(long, size)
        rows.append(
            Row(
                benchmark=NAME,
                figure=f"peak, {long:,} items, batch {size:,}",
                value=peaks[size] / 1e6,
                unit="MB",
                details={"items": long, "batch_size": size, "peak_bytes": peaks[size]},
            )
        )
    middle = batch_sizes[len(batch_sizes) // 2]
    short_peak = peak_bytes(short, middle)
    rows.append(
        compared(
            NAME,
            f"peak {long:,} vs {short:,} items, batch {middle:,}",
            peaks[middle] / 1e6,
            "MB",
            f"peak for {short:,} items",
            short_peak / 1e6,
            target="<= 1.2",
            note="flat in stream length once the reference cache is full: ratio ~1",
            details={"long": long, "short": short, "batch_size": middle},
        )
    )
    return rows
