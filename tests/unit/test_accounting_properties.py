"""Properties of the work accounting, under random faults, against the platform's rule sets.

The processor drives ``OpenCTIWorkManager`` (direct path) over a fake platform
that counts as OpenCTI does and a fake broker whose publishes break at random —
after some confirms, with some unconfirmed messages that reached the queue all
the same — while the platform API fails at random, before or after applying a
call. A fake worker reports each message that reached the queue (one report per
object), at random moments. At the end, for every work and both rule sets
(``current``, ``older``):

* the reports exceed the expected count by at most what was ambiguous for that
  work (messages in doubt — unconfirmed when a publish broke — that reached the
  queue, a report whose answer was lost), and never fall short of it;
* with nothing ambiguous, the work is complete, and did not complete before its
  connector marked it processed.

Closes the processor gave up on (the API failing on both of its tries) are done
by the manager before its next work and at ``close()``: the test heals the
platform, then calls ``close()``.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from connector_batching import GenericBatchProcessor, GenericBatchProcessorConfig
from connector_batching.opencti import OpenCTIWorkManager
from connector_batching.opencti.amqp import PublishIncomplete
from connector_batching.testing.work_rules import RULE_SETS, replay


class BatchFailed(Exception):
    """A batch failed for good (its items are kept as failed)."""


#: what a fault does to one API call
OK, BEFORE, AFTER = "ok", "before", "after"  # AFTER: applied, the answer lost


@dataclass
class Platform:
    """Works as OpenCTI counts them, an event log each; faults drawn per call."""

    draw: Any
    events: dict[str, list[tuple[str, int]]] = field(default_factory=dict)
    ambiguous: dict[str, int] = field(default_factory=dict)
    failed_last: bool = False
    healthy: bool = False  # no more faults

    def fault(self, allowed: Sequence[str] = (OK, BEFORE, AFTER)) -> str:
        # never two failures in a row: a retried call succeeds
        quiet = self.healthy or self.failed_last
        kind = OK if quiet else self.draw(st.sampled_from(allowed))
        self.failed_last = kind != OK
        return str(kind)

    def tally(self, work_id: str) -> tuple[int, int]:
        events = self.events[work_id]
        expected = sum(n for kind, n in events if kind == "add")
        processed = sum(1 for kind, _n in events if kind == "report")
        return expected, processed

    def call(self, work_id: str, event: tuple[str, int], kinds: Sequence[str]) -> None:
        fault = self.fault(kinds)
        if fault == BEFORE:
            raise ConnectionError("platform unreachable")
        self.events[work_id].append(event)
        if fault == AFTER:
            if event[0] == "report":
                self.ambiguous[work_id] = self.ambiguous.get(work_id, 0) + 1
            raise TimeoutError("read timed out")


class Api:
    def __init__(self, platform: Platform) -> None:
        self.platform = platform
        self.work = self

    # -- api.work ---------------------------------------------------------------
    def initiate_work(self, connector_id: str, name: str, is_multipart: bool) -> str:
        assert is_multipart
        if self.platform.fault((OK, BEFORE)) == BEFORE:
            raise ConnectionError("platform unreachable")
        work_id = f"work_{len(self.platform.events)}"
        self.platform.events[work_id] = []
        return work_id

    def to_processed(self, work_id: str, message: str, in_error: bool) -> None:
        self.platform.call(work_id, ("processed", int(in_error)), (OK, BEFORE, AFTER))

    # -- api.query: the manager's own calls --------------------------------------
    def query(self, query: str, variables: dict[str, Any]) -> dict[str, Any]:
        work_id = variables["id"]
        if "addExpectations" in query:
            event = ("add", int(variables["expectations"]))
            self.platform.call(work_id, event, (OK, BEFORE, AFTER))
        elif "reportExpectation" in query:
            self.platform.call(work_id, ("report", 1), (OK, BEFORE, AFTER))
        else:  # the read back
            if self.platform.fault((OK, BEFORE)) == BEFORE:
                raise ConnectionError("platform unreachable")
            expected, processed = self.platform.tally(work_id)
            verdict = replay(self.platform.events[work_id], True, "current")
            tracking = {"import_expected_number": expected, "import_processed_number": processed}
            return {
                "data": {"work": {"id": work_id, "status": verdict.status, "tracking": tracking}}
            }
        return {"data": {"workEdit": {}}}


class Helper:
    def __init__(self, platform: Platform) -> None:
        self.connect_id = "c0ffee00-0000-4000-8000-000000000001"
        self.api = Api(platform)
        self.connector_config = {  # broker settings: the direct publisher is used
            "connection": {"host": "x", "port": 1, "vhost": "/", "user": "u", "pass": "p"},
            "push_exchange": "amqp.worker.exchange",
            "push_routing": "push",
        }
        self.state: dict[str, Any] = {}

    def get_state(self) -> dict[str, Any]:
        return dict(self.state)

    def set_state(self, state: dict[str, Any]) -> None:
        self.state = dict(state)

    def force_ping(self) -> None:
        return None


@dataclass
class Broker:
    """Publishes break at random; the queue is what reached the broker."""

    draw: Any
    platform: Platform
    queue: list[tuple[str, int]] = field(default_factory=list)  # (work id, reports)

    def publish(self, bodies: Sequence[bytes], window: int | None = None) -> frozenset[int]:
        if not bodies or not self.draw(st.booleans()):
            for body in bodies:
                self._arrive(body)
            return frozenset(range(len(bodies)))
        confirmed = self.draw(st.integers(0, len(bodies) - 1))
        in_flight = self.draw(st.integers(0, len(bodies) - confirmed))
        reached = self.draw(st.integers(0, in_flight))
        for body in bodies[:confirmed]:
            self._arrive(body)
        for body in bodies[confirmed : confirmed + reached]:
            self._arrive(body, in_doubt=True)  # unconfirmed, in the queue all the same
        raise PublishIncomplete("cut", frozenset(range(confirmed)), in_flight)

    def _arrive(self, body: bytes, in_doubt: bool = False) -> None:
        work_id = json.loads(body)["work_id"]
        if in_doubt:
            self.platform.ambiguous[work_id] = self.platform.ambiguous.get(work_id, 0) + 1
        self.queue.append((work_id, 1))  # split mode: one object a message

    def work(self, count: int) -> None:
        """The worker imports ``count`` queued messages (their reports land at once)."""
        for _ in range(min(count, len(self.queue))):
            work_id, reports = self.queue.pop(0)
            self.platform.events[work_id].extend([("report", 1)] * reports)

    def close(self) -> None:
        return None


def _items(n: int) -> list[dict[str, Any]]:
    return [
        {
            "type": "indicator",
            "spec_version": "2.1",
            "id": f"indicator--00000000-0000-4000-8000-{i:012d}",
            "created": "2026-01-01T00:00:00.000Z",
            "modified": f"2026-01-01T00:00:{i:02d}.000Z",
            "pattern": f"[url:value = 'http://{i}.example']",
            "pattern_type": "stix",
            "valid_from": "2026-01-01T00:00:00Z",
        }
        for i in range(n)
    ]


class WorkingManager(OpenCTIWorkManager):
    """The manager, with the fake worker importing some messages after each call."""

    broker: Broker
    draw: Any

    def send_bundle(self, work_id: str, objects: Sequence[Any]) -> None:
        try:
            super().send_bundle(work_id, objects)
        finally:
            self.broker.work(self.draw(st.integers(0, 3)))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), items=st.integers(1, 25), batch_size=st.integers(1, 8))
def test_every_work_ends_exact_and_never_early_under_both_rule_sets(
    data: st.DataObject, items: int, batch_size: int
) -> None:
    platform = Platform(draw=data.draw)
    helper = Helper(platform)
    manager = WorkingManager(helper, backpressure=False, refresh_state=False)
    assert manager.publisher == "direct"
    broker = Broker(draw=data.draw, platform=platform)
    manager.broker, manager.draw = broker, data.draw
    manager._sender.path.publisher = broker  # type: ignore[union-attr]
    config = GenericBatchProcessorConfig(
        batch_size=batch_size,
        work_name_template="batch #{batch_num}",
        state_key="cursor",
        entity_type="indicators",
        display_name="indicators",
        max_retries=3,
        retry_delay=0.0,
        retry_max_delay=0.0,
        exception_class=BatchFailed,
    )
    processor = GenericBatchProcessor(config, manager)
    with contextlib.suppress(BatchFailed), processor:  # a batch may fail for good
        processor.add_items(_items(items))
    if processor.get_failed_items():
        with contextlib.suppress(BatchFailed):
            processor.retry_failed()
            processor.flush()
    # the platform answers again: closes the processor gave up on are done now
    platform.healthy = True
    manager.close()
    assert manager.open_works == []
    broker.work(len(broker.queue))  # the worker drains the queue

    for work_id, events in platform.events.items():
        ambiguous = platform.ambiguous.get(work_id, 0)
        for rules in RULE_SETS:
            verdict = replay(events, True, rules)
            over = verdict.processed - verdict.expected
            assert 0 <= over <= ambiguous, (rules, events)
            if ambiguous == 0:
                assert verdict.complete and not verdict.early, (rules, events)
