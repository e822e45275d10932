"""The parts of `connector_batching.opencti` on their own: options, helper port, metric
events, back-pressure, state rules.  The facade is covered in test_opencti_unit.py."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from connector_batching.opencti import prometheus
from connector_batching.opencti.backpressure import QueueBackpressure
from connector_batching.opencti.metrics import COUNTER_KEYS, ROUTES, MetricEvents
from connector_batching.opencti.options import MIN_CHECK_INTERVAL, ManagerOptions
from connector_batching.opencti.port import HelperPort
from connector_batching.opencti.state import cursor_text, state_from
from connector_batching.redaction import RedactedError

TOKEN = "tok-5a1d-never-shown"


class Logger:
    def __init__(self) -> None:
        self.records: list[tuple[str, str, dict[str, Any]]] = []

    def __getattr__(self, level: str) -> Any:
        return lambda message, meta: self.records.append((level, message, meta))


class Metric:
    def __init__(self) -> None:
        self.incs: list[tuple[str, int]] = []

    def inc(self, name: str, n: int = 1) -> None:
        self.incs.append((name, n))


class Helper:
    """The least a port needs: an id, a token, a logger, a metric handler."""

    def __init__(self) -> None:
        self.connect_id = "c0ffee00-0000-4000-8000-0000000000aa"
        self.opencti_token = TOKEN
        self.connector_logger = Logger()
        self.metric = Metric()
        self.connect_queue_threshold = 1
        self.sizes = [2_000_000, 2_000_000, 0]

        helper = self

        class Connector:
            def read(self, connector_id: str) -> dict[str, Any]:
                size = helper.sizes.pop(0) if len(helper.sizes) > 1 else helper.sizes[0]
                return {"connector_queue_details": {"messages_size": size}}

        class Api:
            connector = Connector()

        self.api = Api()


def port_and_events() -> tuple[Helper, HelperPort, MetricEvents]:
    helper = Helper()
    port = HelperPort(helper)
    events = MetricEvents(port.label, port.pycti_metric)
    port.events = events
    return helper, port, events


# -- options ---------------------------------------------------------------------


def test_options_are_frozen_and_hold_the_values_in_effect() -> None:
    options = ManagerOptions.checked(
        send_mode="bundle", queue_check_interval=0, send_options={"update": True}
    )
    assert options.send_options == {
        "update": True,
        "cleanup_inconsistent_bundle": False,
        "no_split": True,
    }
    assert options.queue_check_interval == MIN_CHECK_INTERVAL
    with pytest.raises(dataclasses.FrozenInstanceError):
        options.backpressure = False  # type: ignore[misc]
    with pytest.raises(TypeError):
        options.send_options["update"] = True  # type: ignore[index]


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"send_mode": "fast"}, "send_mode"),
        ({"max_batch_bytes": 2048}, "max_batch_bytes"),  # split mode
        ({"send_mode": "bundle", "max_batch_bytes": 10}, "max_batch_bytes"),
        ({"api_timeout": 0}, "api_timeout"),
        ({"api_timeout": True}, "api_timeout"),
        ({"send_options": {"no_spilt": True}}, "no_spilt"),
        ({"send_mode": "bundle", "send_options": {"no_split": False}}, "no_split"),
    ],
)
def test_a_wrong_option_is_named(kwargs: dict[str, Any], field: str) -> None:
    with pytest.raises(ValueError, match=field):
        ManagerOptions.checked(**kwargs)


# -- the helper port ---------------------------------------------------------------


def test_failing_counts_logs_and_reraises_the_same_error() -> None:
    helper, port, _events = port_and_events()
    error = ConnectionError("platform down")
    with pytest.raises(ConnectionError) as caught, port.failing("Cannot do it", {"work_id": "w"}):
        raise error
    assert caught.value is error
    assert helper.metric.incs == [("error_count", 1)]
    assert helper.connector_logger.records == [
        ("error", "Cannot do it", {"work_id": "w", "reason": "platform down"})
    ]


def test_failing_replaces_an_error_whose_message_holds_a_secret() -> None:
    helper, port, _events = port_and_events()
    with (
        pytest.raises(RedactedError) as caught,
        port.failing("Cannot close", level="warning", count=False),
    ):
        raise ValueError(f"proxy said: Authorization: Bearer {TOKEN}")
    assert str(caught.value) == "ValueError: proxy said: Authorization: Bearer ***"
    assert caught.value.__cause__ is None and caught.value.__suppress_context__
    assert helper.metric.incs == []
    ((level, _message, meta),) = helper.connector_logger.records
    assert level == "warning" and TOKEN not in str(meta)


def test_failing_without_a_message_only_cleans() -> None:
    helper, port, _events = port_and_events()
    with pytest.raises(KeyError), port.failing(count=False):
        raise KeyError("data")
    assert helper.connector_logger.records == [] and helper.metric.incs == []


def test_a_helper_without_logger_or_metric_is_fine() -> None:
    port = HelperPort(object())
    port.log("info", "nothing to log to", {})
    port.pycti_metric("record_send", 3)
    assert port.label == ""


# -- metric events -------------------------------------------------------------------


def test_every_route_names_a_known_counter_or_collector() -> None:
    collectors = prometheus.collectors()
    for event, route in ROUTES.items():
        assert route.counter or route.prometheus or route.pycti, event
        assert route.counter is None or route.counter in COUNTER_KEYS, event
        assert route.prometheus is None or hasattr(collectors, route.prometheus), event
    assert {r.counter for r in ROUTES.values() if r.counter} == set(COUNTER_KEYS)


def test_one_event_reaches_each_channel_of_its_route() -> None:
    from prometheus_client import REGISTRY

    helper, _port, events = port_and_events()
    events.emit("objects_sent", 3)
    events.emit("bundle_sent")
    events.emit("parts_skipped_on_retry", 2)
    assert helper.metric.incs == [("record_send", 3)]
    assert events.snapshot()["bundles_sent"] == 1
    assert events.counters["parts_skipped_on_retry"] == 2
    labels = {"connector_id": helper.connect_id}
    assert REGISTRY.get_sample_value("connector_batching_objects_sent_total", labels) == 3.0
    with pytest.raises(KeyError):
        events.emit("no_such_event")


# -- back-pressure -------------------------------------------------------------------


def test_backpressure_waits_with_an_injected_clock_until_the_queue_drains() -> None:
    helper, port, events = port_and_events()
    now = [0.0]
    sleeps: list[float] = []

    def sleep(seconds: float) -> None:
        sleeps.append(seconds)
        now[0] += seconds

    options = ManagerOptions.checked(queue_check_interval=5.0)
    gate = QueueBackpressure(port, events, options, clock=lambda: now[0], sleep=sleep)
    assert gate.threshold_mb() == 1.0  # the helper's CONNECTOR_QUEUE_THRESHOLD
    assert gate.wait() == 10.0
    assert sleeps == [5.0, 5.0]
    assert gate.wait() == 0.0  # within the interval: no query
    messages = [m for _level, m, _meta in helper.connector_logger.records]
    assert (
        messages.count(
            "Waiting: the connector's push queue is over its threshold "
            "(the platform's workers are behind)"
        )
        == 2
    )
    assert "Push queue back under its threshold" in messages


# -- state rules ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [(None, None), ("", None), ("  ", None), ("{}", None), ('{"a": 1}', {"a": 1})],
)
def test_state_from_a_platform_answer(raw: object, expected: object) -> None:
    assert state_from(raw) == expected


def test_state_from_rejects_what_is_not_json() -> None:
    with pytest.raises(ValueError):
        state_from("{not json")


@pytest.mark.parametrize(
    ("stored", "expected"),
    [
        (None, None),
        ("", None),
        ("2026-01-01T00:00:00Z", "2026-01-01T00:00:00Z"),
        (1767225600, "2026-01-01T00:00:00Z"),
        (True, "True"),
        ([1], "[1]"),
    ],
)
def test_cursor_text(stored: object, expected: str | None) -> None:
    assert cursor_text(stored) == expected


def test_a_cursor_key_wiped_by_a_wholesale_set_state_is_said_at_warning() -> None:
    from connector_batching.opencti.state import ConnectorState

    helper, port, events = port_and_events()
    stored: dict[str, Any] = {}
    port.get_state = lambda: dict(stored)  # type: ignore[method-assign]
    port.set_state = lambda state: stored.update(state) or None  # type: ignore[method-assign,func-returns-value]
    port.force_ping = lambda: None  # type: ignore[method-assign]
    state = ConnectorState(port, events, refresh=False)
    state.update("cursor", "2024-01-01T00:00:00Z")
    stored.clear()
    stored["last_run"] = "2024-01-02"  # the connector's own helper.set_state({...})
    state.update("cursor", "2024-01-02T00:00:00Z")
    warnings = [m for level, m, _meta in helper.connector_logger.records if level == "warning"]
    assert any("vanished from the connector state" in m for m in warnings)
    assert stored == {"last_run": "2024-01-02", "cursor": "2024-01-02T00:00:00Z"}
