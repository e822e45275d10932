"""Fast checks of `OpenCTIWorkManager` and `BatchingConnectorMixin` with a recording helper.

The real pycti helper, platform path and broker are covered in tests/integration.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import pytest
import stix2
from prometheus_client import REGISTRY

from connector_batching.config import GenericBatchProcessorConfig
from connector_batching.mixin import BatchingConnectorMixin
from connector_batching.opencti import OpenCTIWorkManager, prometheus
from connector_batching.processor import GenericBatchProcessor
from connector_batching.work_manager import WorkManager, supports_error_closing


class RecordingLogger:
    def __init__(self) -> None:
        self.records: list[tuple[str, str, dict[str, Any] | None]] = []

    def __getattr__(self, level: str) -> Any:
        def log(message: str, meta: dict[str, Any] | None = None) -> None:
            self.records.append((level, message, meta))

        return log


class RecordingHelper:
    """Just the helper surface the manager uses, recording every call."""

    def __init__(self, connect_id: str = "c0ffee00-0000-4000-8000-000000000001") -> None:
        self.connect_id = connect_id
        self.connector_id = connect_id
        self.connect_queue_threshold = 500
        self.opencti_token = "secret-token-never-logged"
        self.connector_state: str | None = None
        self.calls: list[tuple[str, Any]] = []
        self.connector_logger = RecordingLogger()
        self.queue_sizes: list[int] = [0]
        self.queue_error: Exception | None = None
        helper = self

        self.expected: dict[str, int] = {}
        self.reported: dict[str, int] = {}

        class Work:
            def initiate_work(self, connector_id: str, name: str, is_multipart: bool) -> str:
                helper.calls.append(("initiate_work", (connector_id, name)))
                assert is_multipart
                return f"work-{len(helper.calls)}"

            def to_processed(self, work_id: str, message: str | None, in_error: bool) -> None:
                helper.calls.append(("to_processed", (work_id, message, in_error)))

        class Connector:
            def read(self, connector_id: str) -> dict[str, Any]:
                helper.calls.append(("read", connector_id))
                if helper.queue_error is not None:
                    raise helper.queue_error
                sizes = helper.queue_sizes  # reported in turn, the last one repeats
                size = sizes.pop(0) if len(sizes) > 1 else sizes[0]
                return {
                    "id": connector_id,
                    "connector_queue_details": {"messages_number": 1, "messages_size": size},
                }

        class Api:
            work = Work()
            connector = Connector()

            def query(self, query: str, variables: dict[str, Any]) -> dict[str, Any]:
                """The expectation calls the manager makes itself, counted as the platform."""
                work_id = variables["id"]
                if "addExpectations" in query:
                    helper.calls.append(("add_expectations", (work_id, variables["expectations"])))
                    helper.expected[work_id] = (
                        helper.expected.get(work_id, 0) + variables["expectations"]
                    )
                elif "reportExpectation" in query:
                    helper.calls.append(("report_expectation", work_id))
                    helper.reported[work_id] = helper.reported.get(work_id, 0) + 1
                else:
                    tracking = {
                        "import_expected_number": helper.expected.get(work_id, 0),
                        "import_processed_number": helper.reported.get(work_id, 0),
                    }
                    return {"data": {"work": {"id": work_id, "tracking": tracking}}}
                return {"data": {"workEdit": {}}}

        class Metric:
            def inc(self, name: str, n: int = 1) -> None:
                helper.calls.append(("metric", (name, n)))

        class Info:
            buffering = False
            queue_threshold = 0.0
            queue_messages_size = 0.0

        self.api = Api()
        self.metric = Metric()
        self.connector_info = Info()

    def send_stix2_bundle(self, bundle: str, **kwargs: Any) -> list[str]:
        self.calls.append(("send_stix2_bundle", (json.loads(bundle), kwargs)))
        return [bundle]

    def get_state(self) -> dict[str, Any] | None:
        return json.loads(self.connector_state) if self.connector_state else None

    def set_state(self, state: dict[str, Any] | None) -> None:
        self.calls.append(("set_state", state))
        self.connector_state = json.dumps(state) if isinstance(state, dict) else None

    def force_ping(self) -> None:
        self.calls.append(("force_ping", self.get_state()))

    def named(self, name: str) -> list[Any]:
        return [args for call, args in self.calls if call == name]


def _indicator(n: int, modified: str = "2026-01-01T00:00:00.000Z") -> dict[str, Any]:
    return {
        "type": "indicator",
        "spec_version": "2.1",
        "id": f"indicator--00000000-0000-4000-8000-{n:012d}",
        "created": "2026-01-01T00:00:00.000Z",
        "modified": modified,
        "pattern": f"[url:value = 'http://{n}.example']",
        "pattern_type": "stix",
        "valid_from": "2026-01-01T00:00:00Z",
    }


def test_manager_satisfies_the_work_manager_protocol() -> None:
    manager = OpenCTIWorkManager(RecordingHelper())
    assert isinstance(manager, WorkManager)
    assert supports_error_closing(manager)


def test_options_are_checked_and_send_options_default_to_no_cleanup() -> None:
    helper = RecordingHelper()
    with pytest.raises(ValueError, match="cleanup_inconsitent_bundle"):
        OpenCTIWorkManager(helper, cleanup_inconsitent_bundle=True)
    with pytest.raises(ValueError, match="work_id"):
        OpenCTIWorkManager(helper, work_id="x")
    with pytest.raises(ValueError, match="queue_check_interval"):
        OpenCTIWorkManager(helper, queue_check_interval=-1)
    with pytest.raises(ValueError, match="max_backpressure_wait"):
        OpenCTIWorkManager(helper, max_backpressure_wait=-1)
    with pytest.raises(ValueError, match="queue_threshold_mb"):
        OpenCTIWorkManager(helper, queue_threshold_mb=0)
    assert OpenCTIWorkManager(helper).send_options == {"cleanup_inconsistent_bundle": False}
    custom = OpenCTIWorkManager(helper, update=True, cleanup_inconsistent_bundle=True)
    assert custom.send_options == {"update": True, "cleanup_inconsistent_bundle": True}


def test_one_bundle_per_batch_deduplicated_with_mappers_flattened() -> None:
    helper = RecordingHelper()
    manager = OpenCTIWorkManager(helper, backpressure=False, update=True)

    class Mapper:
        def to_stix(self) -> list[Any]:
            return [stix2.TLP_RED, _indicator(2)]

    work_id = manager.initiate_work("Batch #1", "indicators")
    manager.send_bundle(
        work_id, [_indicator(1), _indicator(1, "2026-03-01T00:00:00.000Z"), Mapper()]
    )
    manager.send_bundle(work_id, [])  # nothing to send: no call
    ((bundle, kwargs),) = helper.named("send_stix2_bundle")
    assert kwargs == {"work_id": work_id, "update": True, "cleanup_inconsistent_bundle": False}
    assert bundle["type"] == "bundle"
    ids = [obj["id"] for obj in bundle["objects"]]
    assert ids == [_indicator(1)["id"], stix2.TLP_RED.id, _indicator(2)["id"]]
    assert bundle["objects"][0]["modified"] == "2026-03-01T00:00:00.000Z"
    assert ("record_send", 3) in helper.named("metric")
    assert helper.named("initiate_work") == [(helper.connect_id, "Batch #1")]


def test_send_failure_is_logged_counted_and_raised() -> None:
    helper = RecordingHelper()

    def broken(bundle: str, **kwargs: Any) -> list[str]:
        raise ConnectionError("broker down")

    helper.send_stix2_bundle = broken  # type: ignore[method-assign]
    manager = OpenCTIWorkManager(helper, backpressure=False)
    work_id = manager.initiate_work("w", "indicators")
    with pytest.raises(ConnectionError):
        manager.send_bundle(work_id, [_indicator(1)])
    assert ("error_count", 1) in helper.named("metric")
    assert any(level == "error" for level, _m, _meta in helper.connector_logger.records)


def test_work_closing_success_and_error() -> None:
    helper = RecordingHelper("c0ffee00-0000-4000-8000-00000000abcd")
    manager = OpenCTIWorkManager(helper, backpressure=False)
    labels = {"connector_id": helper.connect_id}
    ok = manager.initiate_work("ok", "indicators")
    bad = manager.initiate_work("bad", "indicators")
    manager.send_bundle(bad, [_indicator(1), _indicator(2)])
    assert sorted(manager.open_works) == sorted([ok, bad])
    manager.work_to_process(ok)
    manager.work_to_process(bad, in_error=True, message="broker down")
    assert helper.named("to_processed") == [
        (ok, "Batch delivered: 0 objects", False),
        (bad, "broker down", True),
    ]
    assert manager.open_works == []
    get = REGISTRY.get_sample_value
    assert get("connector_batching_batches_total", {**labels, "outcome": "success"}) == 1.0
    assert get("connector_batching_batches_total", {**labels, "outcome": "error"}) == 1.0
    assert get("connector_batching_failed_items_total", labels) == 2.0


def test_close_open_works_closes_everything_in_error() -> None:
    helper = RecordingHelper()
    manager = OpenCTIWorkManager(helper, backpressure=False)
    first = manager.initiate_work("a", "indicators")
    second = manager.initiate_work("b", "indicators")
    assert manager.close_open_works("run aborted") == 2
    assert helper.named("to_processed") == [
        (first, "run aborted", True),
        (second, "run aborted", True),
    ]


def test_update_state_is_read_modify_write_never_cached_then_pinged() -> None:
    helper = RecordingHelper()
    helper.set_state({"other": 1})
    manager = OpenCTIWorkManager(helper, backpressure=False)
    manager.update_state("cursor", "2026-01-01T00:00:00Z")
    assert helper.get_state() == {"other": 1, "cursor": "2026-01-01T00:00:00Z"}
    assert helper.calls[-1] == ("force_ping", {"other": 1, "cursor": "2026-01-01T00:00:00Z"})
    helper.set_state({"reset": True})  # the platform reset the state
    manager.update_state("cursor", "2026-01-02T00:00:00Z")
    assert helper.get_state() == {"reset": True, "cursor": "2026-01-02T00:00:00Z"}
    lag = REGISTRY.get_sample_value(
        "connector_batching_cursor_lag_seconds",
        {"connector_id": helper.connect_id, "state_key": "cursor"},
    )
    assert lag is not None and lag > 0


@pytest.mark.parametrize(
    ("stored", "expected"),
    [
        (None, None),
        ("", None),
        ("2026-01-01T00:00:00Z", "2026-01-01T00:00:00Z"),
        (1767225600, "2026-01-01T00:00:00Z"),
        (1767225600000, "2026-01-01T00:00:00Z"),
    ],
)
def test_get_state_returns_text(stored: Any, expected: str | None) -> None:
    helper = RecordingHelper()
    if stored is not None:
        helper.set_state({"cursor": stored})
    assert OpenCTIWorkManager(helper).get_state("cursor") == expected


def test_backpressure_waits_at_a_bounded_rate_and_logs_why() -> None:
    helper = RecordingHelper()
    helper.queue_sizes = [600_000_000, 600_000_000, 1_000]
    clock = [0.0]
    sleeps: list[float] = []

    def sleep(seconds: float) -> None:
        sleeps.append(seconds)
        clock[0] += seconds

    manager = OpenCTIWorkManager(
        helper, queue_check_interval=7.0, clock=lambda: clock[0], sleep=sleep
    )
    manager.initiate_work("w", "indicators")
    assert sleeps == [7.0, 7.0]
    assert len(helper.named("read")) == 3
    assert helper.named("initiate_work")
    waiting = [m for lvl, m, meta in helper.connector_logger.records if "threshold" in m]
    assert waiting and "queue_size_mb" in str(helper.connector_logger.records)
    assert helper.connector_info.buffering is False
    # within the interval, the next batch does not query again
    manager.initiate_work("w2", "indicators")
    assert len(helper.named("read")) == 3


def test_backpressure_max_wait_and_unreadable_queue() -> None:
    helper = RecordingHelper()
    helper.queue_sizes = [900_000_000]
    clock = [0.0]

    def sleep(seconds: float) -> None:
        clock[0] += seconds

    manager = OpenCTIWorkManager(
        helper,
        queue_check_interval=1.0,
        max_backpressure_wait=3.0,
        clock=lambda: clock[0],
        sleep=sleep,
    )
    assert manager.wait_for_queue() == 3.0
    helper.queue_error = ValueError("API down")
    clock[0] += 10
    assert manager.wait_for_queue() == 0.0
    assert ("error_count", 1) in helper.named("metric")


def test_logs_and_repr_never_show_the_token() -> None:
    helper = RecordingHelper()
    manager = OpenCTIWorkManager(helper, queue_check_interval=0.0)
    work_id = manager.initiate_work("w", "indicators")
    manager.send_bundle(work_id, [_indicator(1)])
    manager.work_to_process(work_id)
    manager.update_state("cursor", "2026-01-01T00:00:00Z")
    assert helper.opencti_token not in repr(manager)
    assert helper.opencti_token not in repr(helper.connector_logger.records)


def test_metrics_register_once_for_every_manager() -> None:
    first = prometheus.collectors()
    OpenCTIWorkManager(RecordingHelper())
    OpenCTIWorkManager(RecordingHelper())
    assert prometheus.collectors() is first
    with pytest.raises(ValueError, match="Duplicated timeseries"):
        prometheus.Collectors.register()  # a second registration is refused, never looked up


class Connector(BatchingConnectorMixin):
    def __init__(self, helper: Any) -> None:
        self.helper = helper


def test_mixin_creates_the_manager_once_and_lets_it_be_replaced() -> None:
    helper = RecordingHelper()
    connector = Connector(helper)
    manager = connector.work_manager
    assert isinstance(manager, OpenCTIWorkManager)
    assert connector.work_manager is manager
    assert manager.helper is helper
    other = OpenCTIWorkManager(helper, backpressure=False)
    connector.work_manager = other
    assert connector.work_manager is other


def test_mixin_without_helper_says_what_to_do() -> None:
    class NoHelper(BatchingConnectorMixin):
        pass

    with pytest.raises(AttributeError, match=r"self\.helper"):
        _ = NoHelper().work_manager


def test_mixin_processor_uses_the_helper_logger_and_cursor() -> None:
    helper = RecordingHelper()
    connector = Connector(helper)
    config = GenericBatchProcessorConfig(
        batch_size=2,
        work_name_template="B{batch_num}",
        state_key="cursor",
        entity_type="indicators",
        display_name="indicators",
        date_extraction_function=lambda obj: obj.get("modified"),
    )
    processor = connector.create_batch_processor(config)
    assert isinstance(processor, GenericBatchProcessor)
    assert processor.logger is helper.connector_logger
    assert connector.get_cursor("cursor") is None
    with processor:
        processor.add_items([_indicator(1), _indicator(2, "2026-01-05T10:00:00.000Z")])
    cursor = connector.get_cursor("cursor")
    assert cursor == dt.datetime(2026, 1, 5, 10, tzinfo=dt.UTC)
    helper.set_state({"cursor": "2026-01-05T12:00:00+02:00"})
    assert connector.get_cursor("cursor") == dt.datetime(2026, 1, 5, 10, tzinfo=dt.UTC)


@pytest.mark.parametrize(
    ("configured", "expected"), [("250", 250.0), ("lots", 500.0), (None, 500.0)]
)
def test_threshold_comes_from_the_helper_setting(configured: Any, expected: float) -> None:
    helper = RecordingHelper()
    helper.connect_queue_threshold = configured  # type: ignore[assignment]
    assert OpenCTIWorkManager(helper).push_queue.threshold_mb() == expected
    assert OpenCTIWorkManager(helper, queue_threshold_mb=2).push_queue.threshold_mb() == 2.0
