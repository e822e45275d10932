"""Benchmark 5: pipelined sending (``max_in_flight_batches``) against synchronous.

The producer is the example connector's own work per row — convert a parsed
URLhaus row to its STIX group and add it — at the example's default batch
size (500 rows).  Every OpenCTI API call takes an extra 20 ms (the stub's
``latency`` injection), as on a real deployment.  Pipelining overlaps the
producer's CPU work with the sender's waiting, so its gain is bounded by
(producer + sender) / max(producer, sender): at most 2x, reached when both
take as long.

Measured through the real pycti helper, the stub and RabbitMQ, in bundle mode
(one message per batch: the sender waits on API latency) and in split mode
(one message per object: the sender is bound by the broker's confirms, so
little is left to overlap); and, without any broker, around a
``LocalWorkManager`` wrapped to sleep 20 ms per call.
"""

from __future__ import annotations

import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from typing import Any

from benchmarks.common import NoOpWorkManager, Row, compared, median_round, unavailable
from benchmarks.end_to_end import bundle_mode_available
from benchmarks.platform import broker_problem, opencti_platform
from connector_batching import (
    SEND_OPTIONS,
    GenericBatchProcessor,
    GenericBatchProcessorConfig,
    LocalWorkManager,
    OpenCTIWorkManager,
)

#: The GIL switch interval of the tuned rows (CPython's default is 5 ms).
TUNED_SWITCH_INTERVAL = 0.0001

NAME = "pipelined"
LATENCY = 0.020
BATCH_SIZE = 500
IN_FLIGHT = 2


class SlowWorkManager:
    """Wraps a work manager; every call first sleeps ``latency`` seconds."""

    def __init__(self, inner: Any, latency: float) -> None:
        self.inner = inner
        self.latency = latency

    def initiate_work(self, work_name: str, entity_type: str) -> str:
        time.sleep(self.latency)
        return str(self.inner.initiate_work(work_name, entity_type))

    def send_bundle(self, work_id: str, objects: Sequence[Any]) -> None:
        time.sleep(self.latency)
        self.inner.send_bundle(work_id, objects)

    def work_to_process(
        self, work_id: str, in_error: bool = False, message: str | None = None
    ) -> None:
        time.sleep(self.latency)
        self.inner.work_to_process(work_id, in_error=in_error, message=message)

    def update_state(self, state_key: str, date_str: str) -> None:
        time.sleep(self.latency)
        self.inner.update_state(state_key, date_str)

    def get_state(self, state_key: str) -> str | None:
        time.sleep(self.latency)
        value = self.inner.get_state(state_key)
        return None if value is None else str(value)


def feed_rows(count: int) -> list[Any]:
    """``count`` parsed URLhaus rows (the example's generator and parser)."""
    from example_connector.client import parse_row
    from example_connector.data.make_sample_feed import make_rows

    return [parse_row(n, fields) for n, fields in enumerate(make_rows(count), start=1)]


def _config(in_flight: int) -> GenericBatchProcessorConfig:
    from example_connector.connector import indicator_date

    return GenericBatchProcessorConfig(
        batch_size=BATCH_SIZE,
        work_name_template="Pipelined benchmark #{batch_num}",
        state_key="pipelined_cursor",
        entity_type="indicator",
        display_name="URLhaus rows",
        date_extraction_function=indicator_date,
        max_in_flight_batches=in_flight,
    )


def produce(rows: list[Any], manager: Any, in_flight: int) -> float:
    """Convert and add every row through a processor; seconds until all is delivered."""
    from example_connector.converter import URLhausConverter

    converter = URLhausConverter(tlp_level="amber")
    processor = GenericBatchProcessor(_config(in_flight), manager)
    start = time.perf_counter()
    with processor:
        for n, row in enumerate(rows):
            processor.add_item(converter.group([row], with_shared=n == 0))
    elapsed = time.perf_counter() - start
    stats = processor.get_statistics()
    if stats["total_items_processed"] != len(rows) or stats["failed_items_count"]:
        raise RuntimeError(f"pipelined benchmark: not everything was delivered: {stats}")
    return elapsed


def _compare(
    figure: str,
    rows: list[Any],
    make_manager: Callable[[], Any],
    repeat: int,
    *,
    target: str = "",
    note: str = "",
    after: Callable[[], object] | None = None,
) -> Row:
    """``repeat`` rounds, each timing the producer alone, synchronous and pipelined;
    the figure is the round with the median sync/pipelined ratio.

    The producer alone runs with a no-op manager: with the sender's share taken
    as synchronous minus producer, pipelining can at best reach
    synchronous / max(producer, sender) — the ideal ratio in the details.
    """
    rounds: list[dict[str, Any]] = []
    for _ in range(max(repeat, 1)):
        result = {"producer_alone": produce(rows, NoOpWorkManager(), 0)}
        for name, in_flight in (("synchronous", 0), ("pipelined", IN_FLIGHT)):
            result[name] = produce(rows, make_manager(), in_flight)
            if after is not None:
                after()
        rounds.append(result)
    chosen = median_round(rounds, lambda r: r["synchronous"] / r["pipelined"])
    sender = max(chosen["synchronous"] - chosen["producer_alone"], 0.0)
    slowest = max(chosen["producer_alone"], sender)
    bound = chosen["synchronous"] / slowest if slowest > 0 else None
    return compared(
        NAME,
        figure,
        len(rows) / chosen["pipelined"],
        "rows/s",
        "synchronous (max_in_flight_batches=0)",
        len(rows) / chosen["synchronous"],
        target=target,
        note=f"{note}; ideal here {bound:.2f}x" if bound else note,
        details={
            "rows": len(rows),
            "batch_size": BATCH_SIZE,
            "max_in_flight_batches": IN_FLIGHT,
            "latency_s": LATENCY,
            "repeat": repeat,
            "method": "median of per-round paired ratios",
            "seconds": {**chosen, "sender_estimate": sender},
            "rounds": rounds,
            "ideal_ratio": bound,
        },
    )


def run(
    quick: bool = False,
    *,
    rows: int | None = None,
    split_rows: int | None = None,
    repeat: int | None = None,
) -> list[Row]:
    """Pipelined vs synchronous: bundle mode and split mode via pycti, and broker-free;
    then bundle mode and broker-free again with CPython's GIL switch interval at 0.1 ms."""
    count = rows or (1_500 if quick else 4_000)
    split_count = split_rows or 500
    reps = repeat or (1 if quick else 3)
    data = feed_rows(count)
    out = _measure(data, split_count, reps, suffix="", with_split=True)
    default_interval = sys.getswitchinterval()
    sys.setswitchinterval(TUNED_SWITCH_INTERVAL)
    try:
        out += _measure(
            data,
            split_count,
            reps,
            suffix=f", switch interval {TUNED_SWITCH_INTERVAL * 1e3:g} ms",
            with_split=False,
        )
    finally:
        sys.setswitchinterval(default_interval)
    return out


def _measure(
    data: list[Any], split_count: int, reps: int, *, suffix: str, with_split: bool
) -> list[Row]:
    out: list[Row] = []
    problem = broker_problem()
    bundle_figure = (
        f"pipelined vs synchronous, helper + stub at {LATENCY * 1e3:.0f} ms, bundle{suffix}"
    )
    split_figure = f"pipelined vs synchronous, helper + stub at {LATENCY * 1e3:.0f} ms, split"
    if problem is not None:
        out.append(unavailable(NAME, bundle_figure, problem, ">= 1.5"))
        if with_split:
            out.append(unavailable(NAME, split_figure, problem))
    else:
        with opencti_platform(latency=LATENCY) as platform:
            helper = platform.helper
            if bundle_mode_available():
                bundle_options: dict[str, Any] = {"send_mode": "bundle"}
                how = 'send_mode="bundle"'
            elif "no_split" in SEND_OPTIONS:
                bundle_options = {"no_split": True}
                how = "no_split=True pass-through (send_mode not available yet)"
            else:
                bundle_options = {}
                how = ""
            if how:
                out.append(
                    _compare(
                        bundle_figure,
                        data,
                        lambda: OpenCTIWorkManager(helper, **bundle_options),
                        reps,
                        target=">= 1.5",
                        note=f"one message per batch: {how}",
                        after=platform.purge,
                    )
                )
            else:
                out.append(unavailable(NAME, bundle_figure, "no bundle send mode", ">= 1.5"))
            if with_split:
                out.append(
                    _compare(
                        split_figure,
                        data[:split_count],
                        lambda: OpenCTIWorkManager(helper),
                        reps,
                        note="one message per object: the broker's confirms dominate the sender",
                        after=platform.purge,
                    )
                )
    with tempfile.TemporaryDirectory(prefix="bench-pipelined-") as tmp:
        managers: list[LocalWorkManager] = []

        def local() -> SlowWorkManager:
            manager = LocalWorkManager(f"{tmp}/{len(managers)}")
            managers.append(manager)
            return SlowWorkManager(manager, LATENCY)

        try:
            out.append(
                _compare(
                    f"pipelined vs synchronous, LocalWorkManager + {LATENCY * 1e3:.0f} ms a call"
                    + suffix,
                    data,
                    local,
                    reps,
                    target=">= 1.5",
                    note="no broker: a wrapper sleeps before every work manager call",
                )
            )
        finally:
            for manager in managers:
                manager.close()
    return out
