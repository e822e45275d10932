"""Benchmarks 2 and 6: end to end through a real pycti helper, the stub API and RabbitMQ.

Objects/s for

* (a) batched sending: ``GenericBatchProcessor`` + ``OpenCTIWorkManager`` with
  its default direct publisher (split mode);
* (a') the same through pycti's publisher (``publisher="pycti"``);
* (b) the naive pattern: one work and one ``send_stix2_bundle`` per object;
* (c) ``helper.send_stix2_bundle`` called directly on the very bundles (a')
  sent (recorded during a warm-up run), within works opened beforehand: pycti
  alone, so (a')/(c) is our overhead over pycti, and (a)/(c) what the direct
  publisher gains on the same bundles;
* bundle mode (``send_mode="bundle"``: one message per batch) against the
  split mode through pycti's publisher.

The feed is the integration tests' TLP:RED indicator + URL + relationship
groups, converted to STIX dicts before timing (conversion is not measured).
Each run's messages are counted in the connector's push queue, then purged.
"""

from __future__ import annotations

import inspect
import time
from collections.abc import Callable
from typing import Any

from benchmarks.common import Row, compared, median_round, unavailable
from benchmarks.platform import Platform, broker_problem, opencti_platform
from connector_batching import (
    SEND_OPTIONS,
    GenericBatchProcessor,
    GenericBatchProcessorConfig,
    OpenCTIWorkManager,
    bundle_json,
    to_stix_dict,
)

NAME = "end_to_end"


class Group:
    """One feed row's pre-built STIX dicts (they travel in one batch)."""

    __slots__ = ("objects",)

    def __init__(self, objects: list[dict[str, Any]]) -> None:
        self.objects = objects

    def to_stix(self) -> list[dict[str, Any]]:
        return self.objects


class RecordingHelper:
    """Delegates to a real helper; records the bundles passed to ``send_stix2_bundle``."""

    def __init__(self, helper: Any) -> None:
        self._helper = helper
        self.bundles: list[str] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self._helper, name)

    def send_stix2_bundle(self, bundle: str, **kwargs: Any) -> Any:
        self.bundles.append(bundle)
        return self._helper.send_stix2_bundle(bundle, **kwargs)


def feed(groups: int) -> tuple[list[dict[str, Any]], list[Group]]:
    """(shared objects: TLP:RED and the author, ``groups`` row groups) as STIX dicts."""
    from tests.integration.feed import AUTHOR, TLP_RED, rows

    shared = [to_stix_dict(TLP_RED), to_stix_dict(AUTHOR)]
    return shared, [Group([to_stix_dict(o) for o in row.to_stix()]) for row in rows(groups)]


def _modified(obj: Any) -> Any:
    return obj.get("modified")


def _config(batch_size: int) -> GenericBatchProcessorConfig:
    return GenericBatchProcessorConfig(
        batch_size=batch_size,
        work_name_template="Benchmark batch #{batch_num}",
        state_key="benchmark_cursor",
        entity_type="indicators",
        display_name="indicators",
        date_extraction_function=_modified,
    )


def bundle_mode_available() -> bool:
    """Whether ``OpenCTIWorkManager`` accepts ``send_mode``."""
    return "send_mode" in inspect.signature(OpenCTIWorkManager.__init__).parameters


def _batched(
    helper: Any,
    shared: list[dict[str, Any]],
    groups: list[Group],
    batch_size: int,
    **options: Any,
) -> tuple[float, int]:
    """Send through processor + manager; (seconds, objects sent)."""
    manager = OpenCTIWorkManager(helper, **options)
    processor = GenericBatchProcessor(_config(batch_size), manager)
    start = time.perf_counter()
    with processor:
        processor.add_items(shared)
        processor.add_items(groups)
    elapsed = time.perf_counter() - start
    return elapsed, int(processor.get_statistics()["total_objects_sent"])


def _rounds(
    platform: Platform, repeat: int, runs: dict[str, Callable[[], tuple[float, int]]]
) -> list[dict[str, dict[str, Any]]]:
    """``repeat`` rounds, each running every run once (interleaved); the push queue
    is counted and purged after every run."""
    rounds: list[dict[str, dict[str, Any]]] = []
    for _ in range(max(repeat, 1)):
        results: dict[str, dict[str, Any]] = {}
        for name, run_once in runs.items():
            seconds, objects = run_once()
            messages = platform.depth()
            platform.purge()
            results[name] = {
                "seconds": seconds,
                "objects": objects,
                "messages": messages,
                "rate": objects / seconds,
            }
        rounds.append(results)
    return rounds


def run(
    quick: bool = False,
    *,
    groups: int | None = None,
    naive_objects: int | None = None,
    batch_size: int | None = None,
    repeat: int | None = None,
) -> list[Row]:
    """Measure (a), (b), (c) and the send modes; rows marked unavailable without a broker.

    The batch size defaults to the example connector's (500 rows: 1,500 objects).
    """
    problem = broker_problem()
    figures = (
        ("batched vs naive per-object sending", ">= 20"),
        ("batched, bundle mode vs naive per-object sending", ">= 20"),
        ("batched vs direct send_stix2_bundle (time ratio)", "<= 1.1"),
        ("split mode: direct publisher vs pycti's send_stix2_bundle", ">= 5"),
        ("bundle mode vs split mode", ">= 10"),
    )
    if problem is not None:
        return [unavailable(NAME, figure, problem, target) for figure, target in figures]
    n_groups = groups or (300 if quick else 1_000)
    n_naive = naive_objects or (15 if quick else 45)
    size = batch_size or (100 if quick else 500)
    reps = repeat or (1 if quick else 5)
    shared, data = feed(n_groups)
    rows: list[Row] = []
    with opencti_platform() as platform:
        helper = platform.helper
        # warm-up run, recording the bundles (c) will send
        recorder = RecordingHelper(helper)
        _, recorded_objects = _batched(recorder, shared, data, size, publisher="pycti")
        platform.purge()
        bundles = list(recorder.bundles)

        def direct() -> tuple[float, int]:
            works = [
                helper.api.work.initiate_work(helper.connect_id, f"direct #{n}")
                for n in range(len(bundles))
            ]
            start = time.perf_counter()
            for bundle, work_id in zip(bundles, works, strict=True):
                helper.send_stix2_bundle(bundle, work_id=work_id)
            elapsed = time.perf_counter() - start
            for work_id in works:
                helper.api.work.to_processed(work_id, "done")
            return elapsed, recorded_objects

        runs: dict[str, Callable[[], tuple[float, int]]] = {
            "batched": lambda: _batched(helper, shared, data, size),
            "batched_pycti": lambda: _batched(helper, shared, data, size, publisher="pycti"),
            "direct": direct,
        }
        bundle_options: dict[str, Any] = {"send_mode": "bundle"} if bundle_mode_available() else {}
        if not bundle_options and "no_split" in SEND_OPTIONS:
            bundle_options = {"no_split": True}
        if bundle_options:
            runs["bundle"] = lambda: _batched(helper, shared, data, size, **bundle_options)
        singles = [obj for group in data for obj in group.objects][:n_naive]

        def naive() -> tuple[float, int]:
            start = time.perf_counter()
            for obj in singles:
                work_id = helper.api.work.initiate_work(helper.connect_id, f"naive {obj['id']}")
                helper.send_stix2_bundle(bundle_json([obj]), work_id=work_id)
                helper.api.work.to_processed(work_id, "done")
            return time.perf_counter() - start, len(singles)

        runs["naive"] = naive
        rounds = _rounds(platform, reps, runs)
    common: dict[str, Any] = {
        "groups": n_groups,
        "objects": recorded_objects,
        "batch_size": size,
        "repeat": reps,
        "method": "median of per-round paired ratios (rounds interleave all runs)",
        "rounds_objects_per_s": [
            {name: round(result["rate"], 1) for name, result in one.items()} for one in rounds
        ],
    }

    def pair(name: str, baseline: str) -> tuple[dict[str, Any], dict[str, Any]]:
        chosen = median_round(rounds, lambda r: r[name]["rate"] / r[baseline]["rate"])
        return chosen[name], chosen[baseline]

    batched, per_object = pair("batched", "naive")
    rows.append(
        compared(
            NAME,
            "batched vs naive per-object sending",
            batched["rate"],
            "objects/s",
            "one work + one send_stix2_bundle per object",
            per_object["rate"],
            target=">= 20",
            details={**common, "batched": batched, "naive": per_object},
        )
    )
    if "send_mode" in bundle_options:
        bundled, per_object = pair("bundle", "naive")
        rows.append(
            compared(
                NAME,
                "batched, bundle mode vs naive per-object sending",
                bundled["rate"],
                "objects/s",
                "one work + one send_stix2_bundle per object",
                per_object["rate"],
                target=">= 20",
                details={**common, "bundle": bundled, "naive": per_object},
            )
        )
    batched, pycti_alone = pair("batched_pycti", "direct")
    rows.append(
        compared(
            NAME,
            "batched vs direct send_stix2_bundle (time ratio)",
            batched["rate"],
            "objects/s",
            "helper.send_stix2_bundle on the same bundles",
            pycti_alone["rate"],
            target="<= 1.1",
            invert=True,
            note='publisher="pycti"; ratio: our time / pycti\'s time (1.1 = 10 % overhead)',
            details={**common, "batched_pycti": batched, "direct": pycti_alone},
        )
    )
    direct_publisher, pycti_alone = pair("batched", "direct")
    rows.append(
        compared(
            NAME,
            "split mode: direct publisher vs pycti's send_stix2_bundle",
            direct_publisher["rate"],
            "objects/s",
            "helper.send_stix2_bundle on the same bundles",
            pycti_alone["rate"],
            target=">= 5",
            note="processor + manager (default publisher) against pycti alone",
            details={**common, "batched": direct_publisher, "direct": pycti_alone},
        )
    )
    figure = "bundle mode vs split mode"
    bundled, split = pair("bundle", "batched_pycti") if bundle_options else ({}, {})
    split_baseline = 'split mode through pycti (publisher="pycti"): one message per object'

    if "send_mode" in bundle_options:
        rows.append(
            compared(
                NAME,
                figure,
                bundled["rate"],
                "objects/s",
                split_baseline,
                split["rate"],
                target=">= 10",
                details={**common, "split": split, "bundle": bundled},
            )
        )
    else:
        rows.append(
            unavailable(
                NAME, figure, "OpenCTIWorkManager has no send_mode option yet", target=">= 10"
            )
        )
        if bundle_options:
            rows.append(
                compared(
                    NAME,
                    "no_split=True pass-through vs split mode",
                    bundled["rate"],
                    "objects/s",
                    split_baseline,
                    split["rate"],
                    note="send_stix2_bundle(no_split=True) via manager options: "
                    "what bundle mode will do, minus its size guard",
                    details={**common, "split": split, "no_split": bundled},
                )
            )
    return rows
