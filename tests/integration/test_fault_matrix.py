"""Fault-injection matrix: a real pycti helper, the stub OpenCTI API and the real broker,
broken on purpose one way per row.

Each row runs the same feed (the TLP:RED marking, the author, 30 indicator + URL +
relationship groups: 32 items, batches of 10, so four batches) through
``GenericBatchProcessor`` and ``OpenCTIWorkManager`` with ``max_retries=3``, injects
one fault, while a model of the OpenCTI worker (``WorkerModel``) drains the push
queue concurrently and reports to the works as the real worker does, then checks:

* nothing lost: every accepted object was imported by the worker, or reported
  failed, or counted as one pycti's splitter cannot import;
* every work complete under both of the platform's rule sets (``current``:
  multipart works complete once processed and reports >= expected; ``older``:
  at reports == expected), never before its connector closed it, its expected
  count equal to the reports it got — or over by at most the messages the
  manager counted as in doubt (published, unconfirmed when the send broke);
* the cursor safe: never past an undelivered item while a batch is failed, the
  latest date once everything is delivered;
* the numbers: retries, batches failed, objects re-sent, as the row expects.

With ``CONNECTOR_BATCHING_WRITE_MATRIX=1`` the module writes the results table of the
rows that passed to ``docs/fault_matrix_opencti.md``.
"""

from __future__ import annotations

import datetime as dt
import os
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from connector_batching.config import GenericBatchProcessorConfig
from connector_batching.dates import format_instant, parse_instant
from connector_batching.opencti import OpenCTIWorkManager
from connector_batching.processor import GenericBatchProcessor
from connector_batching.stix import object_id
from connector_batching.testing.stub_platform import StubOpenCTI
from connector_batching.testing.work_rules import RULE_SETS
from connector_batching.testing.worker_model import WorkerModel
from tests.integration.feed import AUTHOR, TLP_RED, modified_of, rows
from tests.integration.tcp_proxy import TcpProxy

pytestmark = pytest.mark.broker

STATE_KEY = "last_modified"
GROUPS = 30
BATCH_SIZE = 10
BATCHES = 4  # 32 items (marking, author, 30 groups) in batches of 10
MAX_RETRIES = 3
#: api_timeout in the timeout rows (pycti's default: 300 s).  The faulted request
#: times out because the stub holds its answer until the client gives up; every
#: other request has this long, far more than a loaded machine needs.
REQUEST_TIMEOUT = 5.0
MATRIX_PATH = Path(__file__).resolve().parents[2] / "docs" / "fault_matrix_opencti.md"


class FeedBatchError(Exception):
    """Raised by the processor when a batch fails for good."""


#: A custom object pycti's splitter cannot import (its type is not one OpenCTI knows).
ODD_OBJECT = {
    "type": "x-acme-widget",
    "spec_version": "2.1",
    "id": "x-acme-widget--6b0f7c4e-3f4a-4c56-9a53-0d7f1d0b9b11",
    "created": "2026-01-01T00:00:30.000Z",
    "modified": "2026-01-01T00:00:30.000Z",
    "name": "not importable",
}


@dataclass
class Context:
    stub: StubOpenCTI
    proxy: TcpProxy  # between pika and RabbitMQ
    api_proxy: TcpProxy  # between the helper's API client and the stub
    monkeypatch: pytest.MonkeyPatch
    helper: Any = None
    manager: OpenCTIWorkManager | None = None
    cursors_while_failed: list[tuple[str | None, dt.datetime]] = field(default_factory=list)


@dataclass(frozen=True)
class Row:
    """One fault: what is injected, what must happen."""

    id: str
    injected: str
    happened: str
    inject: Callable[[Context], None]
    on_failure: Callable[[Context], None] | None = None
    send_mode: str = "split"
    publisher: str = "direct"
    odd_object: bool = False
    max_batch_bytes: int | None = None
    timeout: bool = False
    retries: int = 0
    failed_batches: int = 0
    resent: str = "none"  # "none": no object twice in a work; "some": at least one; "any"
    works: int = BATCHES
    works_in_error: int = 0
    extra: Callable[[Context, Outcome], None] | None = None


@dataclass
class Outcome:
    stats: dict[str, Any]
    counters: dict[str, int]
    messages: int
    messages_per_work: dict[str | None, int]
    resent: int
    delivered: set[str]
    lost: set[str]
    failed_reported: set[str]
    cursor: str | None
    works: list[Any]


def _api_fault(operation: str, kind: str, times: int) -> Callable[[Context], None]:
    def inject(ctx: Context) -> None:
        ctx.stub.fail(operation, times=times, kind=kind)

    return inject


def _nothing(_ctx: Context) -> None:
    return None


def _refuse(attempts: int | None) -> Callable[[Context], None]:
    def inject(ctx: Context) -> None:
        ctx.proxy.refuse(attempts)

    return inject


def _accept_again(ctx: Context) -> None:
    ctx.proxy.accept()


def _api_down(attempts: int | None) -> Callable[[Context], None]:
    def inject(ctx: Context) -> None:
        ctx.api_proxy.cut(count=False)  # no kept-alive connection survives
        ctx.api_proxy.refuse(attempts)

    return inject


def _api_back(ctx: Context) -> None:
    ctx.api_proxy.accept()


def _no_work_for_the_failed_attempts(ctx: Context, outcome: Outcome) -> None:
    assert ctx.api_proxy.stats.refused >= MAX_RETRIES + 1
    assert ctx.manager is not None and ctx.manager.open_works == []


def _cut_after(nbytes: int, skip: int = 0) -> Callable[[Context], None]:
    def inject(ctx: Context) -> None:
        ctx.proxy.cut_after(nbytes, skip=skip)

    return inject


def _expectations_raised(ctx: Context, outcome: Outcome) -> None:
    calls = [c.outcome for c in ctx.stub.calls_of("addExpectations")]
    assert calls.count("ok") == BATCHES and len(calls) - calls.count("ok") == 2
    assert outcome.resent == 0  # nothing was published before the count was made


def _late_expectations_counted(ctx: Context, outcome: Outcome) -> None:
    calls = [c.outcome for c in ctx.stub.calls_of("addExpectations")]
    assert calls.count("late") == 1 and len(calls) == BATCHES  # read back, not added twice


def _builtin_error_in_pika(after: int) -> Callable[[Context], None]:
    """pika raises a builtin ``ValueError`` (a reset socket) at the ``after``-th publish
    of the connector's thread (the worker model publishes from its own)."""

    def inject(ctx: Context) -> None:
        import pika.channel

        original = pika.channel.Channel.basic_publish
        connector_thread = threading.current_thread()
        publishes = [0]

        def publish(channel: Any, *args: Any, **kwargs: Any) -> None:
            if threading.current_thread() is connector_thread:
                publishes[0] += 1
                if publishes[0] == after:
                    raise ValueError("Expected connected socket, but getpeername() failed")
            original(channel, *args, **kwargs)

        ctx.monkeypatch.setattr(pika.channel.Channel, "basic_publish", publish)

    return inject


def _odd_object_counted(ctx: Context, outcome: Outcome) -> None:
    assert outcome.counters["incompatible_objects"] == 1
    assert ODD_OBJECT["id"] not in outcome.delivered


def _placeholder_report_retried(ctx: Context, outcome: Outcome) -> None:
    reports = [c.outcome for c in ctx.stub.calls_of("reportExpectation")]
    assert reports.count("ok") == BATCHES and len(reports) == BATCHES + 2
    assert [c.outcome for c in ctx.stub.calls_of("workToProcessed")].count("ok") == BATCHES


def _closed_twice(ctx: Context, outcome: Outcome) -> None:
    assert sorted(w.closed_count for w in outcome.works) == [1, 1, 1, 2]


def _ping_failures_counted(failed: int) -> Callable[[Context, Outcome], None]:
    def check(ctx: Context, outcome: Outcome) -> None:
        pings = [c.outcome for c in ctx.stub.calls_of("PingConnector")]
        assert len(pings) - pings.count("ok") == failed
        # each failed save raised: counted by the processor, the save tried again
        assert outcome.stats["state_update_errors"] == failed

    return check


def _orphan_closed(ctx: Context, outcome: Outcome) -> None:
    assert ctx.manager is not None
    assert ctx.manager.counters["orphan_works_closed"] == 1
    (orphan,) = [w for w in outcome.works if w.in_error]
    assert orphan.expectations == 0  # nothing was sent in it
    assert "orphaned" in str(orphan.messages[-1])


def _parts_resumed(ctx: Context, outcome: Outcome) -> None:
    assert ctx.manager is not None
    assert ctx.manager.counters["oversize_batches"] >= 1
    assert ctx.manager.counters["parts_skipped_on_retry"] == 1  # part 1 was not sent again


def _cursor_held(ctx: Context, outcome: Outcome) -> None:
    assert ctx.cursors_while_failed, "the batch should have failed for good"


def _hold_then_accept(ctx: Context) -> None:
    _accept_again(ctx)


ROWS = [
    Row(
        "none",
        "nothing (baseline)",
        "4 works, 4 bundles, every work closed",
        _nothing,
    ),
    *[
        Row(
            f"{op}-{kind}",
            f"{label}, twice, on `{op}`",
            happened,
            _api_fault(op, kind, 2),
            retries=retries,
            extra=extra,
        )
        for op, happened, retries, extra in (
            (
                "workAdd",
                "batch 1 retried twice (backoff), then opened its one work",
                2,
                None,
            ),
            (
                "addExpectations",
                "the manager's expectations call raises before anything is published: "
                "batch 1 retried twice in its work, then counted and sent once",
                2,
                _expectations_raised,
            ),
            (
                "workToProcessed",
                "the bundle is not re-sent: only closing the work is retried; the count "
                "stays exact (no overshoot under the older rules)",
                2,
                None,
            ),
            (
                "reportExpectation",
                "the placeholder's report fails: closing retried without marking the work "
                "processed again; the work completes once it is reported",
                2,
                _placeholder_report_retried,
            ),
            (
                "PingConnector",
                "the cursor save raises (the local state keeps the cursor): the processor "
                "counts it (`state_update_errors` 2) and saves again at the next checkpoint",
                0,
                _ping_failures_counted(2),
            ),
        )
        for kind, label in (("graphql", "GraphQL error"), ("http_500", "HTTP 500"))
    ],
    Row(
        "workAdd-timeout",
        "API timeout on `workAdd` (the platform creates the work, the answer is late)",
        "retried; the orphan work whose id never arrived is found by name and closed "
        'in error ("orphaned")',
        _api_fault("workAdd", "timeout", 1),
        timeout=True,
        retries=1,
        works=BATCHES + 1,
        works_in_error=1,
        extra=_orphan_closed,
    ),
    Row(
        "addExpectations-timeout",
        "API timeout on `addExpectations` (the platform counts them, the answer is late)",
        "the manager reads the work back: counted, so not added again; the batch is sent",
        _api_fault("addExpectations", "timeout", 1),
        timeout=True,
        extra=_late_expectations_counted,
    ),
    Row(
        "workToProcessed-timeout",
        "API timeout on `workToProcessed` (the platform closes the work, the answer is late)",
        "closing retried (closed twice, harmless); the bundle is not re-sent",
        _api_fault("workToProcessed", "timeout", 1),
        timeout=True,
        retries=1,
        extra=_closed_twice,
    ),
    Row(
        "PingConnector-timeout",
        "API timeout on `PingConnector`",
        "the save raises on the timeout and is tried again at once "
        "(`state_update_errors` 1); the platform had stored the state anyway",
        _api_fault("PingConnector", "timeout", 1),
        timeout=True,
        extra=_ping_failures_counted(1),
    ),
    Row(
        "api-down-briefly",
        "platform API unreachable (connections refused) for 2 requests, then back",
        "`workAdd` of batch 1 fails twice (requests `ConnectionError`), retried, then delivered",
        _api_down(2),
        retries=2,
    ),
    Row(
        "api-down-long",
        "platform API unreachable longer than the 4 attempts of batch 1, then back",
        "batch 1 fails for good before any work exists (nothing to close), items kept as "
        "failed, cursor held; `retry_failed()` delivers them once the API is back",
        _api_down(None),
        on_failure=_api_back,
        retries=MAX_RETRIES,
        failed_batches=1,
        extra=_no_work_for_the_failed_attempts,
    ),
    Row(
        "broker-cut-split",
        "broker connection cut mid-batch (direct publisher, split mode, after ~12 kB of "
        "batch 1's messages)",
        "the retry in the same work re-publishes only the messages the broker had not "
        "confirmed; those in doubt (published, unconfirmed at the cut) may arrive twice",
        _cut_after(12_000),
        retries=1,
        resent="any",
    ),
    Row(
        "broker-cut-split-pycti",
        'broker connection cut mid-send (`publisher="pycti"`, split mode, after ~12 kB)',
        "pycti raises; what it published is known from its `bundle_send` metric: counted, "
        "not re-sent; the retry sends the rest (the message being published is in doubt)",
        _cut_after(12_000),
        publisher="pycti",
        retries=1,
        resent="any",
    ),
    Row(
        "send-builtin-error",
        "pika raises a builtin `ValueError` (a reset socket) at the 5th publish of batch 1",
        "the publish stops; the broker confirms the 4 before it; the retry sends the rest",
        _builtin_error_in_pika(5),
        retries=1,
    ),
    Row(
        "send-builtin-error-pycti",
        'the same builtin `ValueError` inside pika under `publisher="pycti"`',
        "any exception from the send counts as maybe partly published: the 4 pycti "
        "published are counted, the count read back and set, the rest re-sent",
        _builtin_error_in_pika(5),
        publisher="pycti",
        retries=1,
    ),
    Row(
        "incompatible-objects",
        "a custom object pycti's splitter cannot import (`x-acme-widget`) in batch 1",
        "not sent, counted (`incompatible_objects` 1) and logged at WARNING with its type",
        _nothing,
        odd_object=True,
        extra=_odd_object_counted,
    ),
    Row(
        "broker-cut-bundle",
        "broker connection cut mid-send (bundle mode, batches over `max_batch_bytes`: "
        "cut while sending part 2 of batch 1)",
        "the retry skips the part the broker confirmed and re-sends only the cut part",
        _cut_after(12_000),
        send_mode="bundle",
        max_batch_bytes=8_000,
        retries=1,
        extra=_parts_resumed,
    ),
    Row(
        "broker-down-briefly",
        "broker unreachable for 2 connection attempts, then back",
        "batch 1 retried twice, delivered at the third attempt",
        _refuse(2),
        retries=2,
    ),
    Row(
        "broker-down-briefly-bundle",
        "broker unreachable for 2 connection attempts, then back (bundle mode)",
        "batch 1 retried twice, delivered at the third attempt, one message per batch",
        _refuse(2),
        send_mode="bundle",
        retries=2,
    ),
    Row(
        "broker-down-long",
        "broker unreachable longer than the 4 attempts of batch 1, then back",
        "batch 1 fails for good: work closed in error, items kept as failed, cursor held "
        "before them; later batches delivered; `retry_failed()` delivers batch 1 in a new work",
        _refuse(None),
        on_failure=_hold_then_accept,
        retries=MAX_RETRIES,
        failed_batches=1,
        works=BATCHES + 1,
        works_in_error=1,
        extra=_cursor_held,
    ),
]

_results: dict[str, str] = {}


def _config() -> GenericBatchProcessorConfig:
    return GenericBatchProcessorConfig(
        batch_size=BATCH_SIZE,
        work_name_template="Matrix batch #{batch_num}",
        state_key=STATE_KEY,
        entity_type="indicators",
        display_name="indicators",
        date_extraction_function=modified_of,
        exception_class=FeedBatchError,
        max_retries=MAX_RETRIES,
        retry_delay=0.05,
        retry_max_delay=0.2,
    )


def _run(row: Row, ctx: Context) -> tuple[GenericBatchProcessor, list[Any]]:
    options: dict[str, Any] = {
        "backpressure": False,
        "send_mode": row.send_mode,
        "publisher": row.publisher,
    }
    if row.timeout:
        options["api_timeout"] = REQUEST_TIMEOUT
    if row.max_batch_bytes is not None:
        options["max_batch_bytes"] = row.max_batch_bytes
    ctx.manager = OpenCTIWorkManager(ctx.helper, **options)
    assert ctx.manager.publisher == row.publisher
    processor = GenericBatchProcessor(_config(), ctx.manager)
    feed: list[Any] = [TLP_RED, AUTHOR, *rows(GROUPS)]
    if row.odd_object:
        feed.insert(2, dict(ODD_OBJECT))
    row.inject(ctx)
    for item in feed:
        try:
            processor.add_item(item)
        except FeedBatchError:
            failed = processor.get_failed_items()
            earliest = min(
                row_item.modified for row_item in failed if hasattr(row_item, "modified")
            )
            ctx.cursors_while_failed.append((ctx.stub.state_dict().get(STATE_KEY), earliest))
            if row.on_failure is not None:
                row.on_failure(ctx)
    processor.flush()
    processor.update_final_state()
    if processor.get_failed_items():
        processor.retry_failed()
        processor.flush()
        processor.update_final_state()
    return processor, feed


def _ids_of(item: Any) -> list[str]:
    if hasattr(item, "to_stix"):
        return [object_id(member) for member in item.to_stix()]
    if isinstance(item, list):
        return [object_id(member) for member in item]
    return [object_id(item)]


def _outcome(
    ctx: Context, worker: WorkerModel, processor: GenericBatchProcessor, feed: list[Any]
) -> Outcome:
    worker.wait_idle()  # every message confirmed into the queue imported and reported
    messages = list(worker.imported_messages)
    # a message re-sent: the same objects again in the same work
    seen: Counter[tuple[str | None, tuple[str, ...]]] = Counter()
    per_work: Counter[str | None] = Counter()
    delivered: set[str] = set()
    for message in messages:
        ids = tuple(sorted(obj["id"] for obj in message.objects))
        seen[(message.work_id, ids)] += 1
        per_work[message.work_id] += 1
        delivered.update(ids)
    accepted: set[str] = set()
    for item in feed:
        accepted.update(_ids_of(item))
    failed: set[str] = set()
    for item in processor.get_failed_items():
        failed.update(_ids_of(item))
    assert ctx.manager is not None
    return Outcome(
        stats=processor.get_statistics(),
        counters=dict(ctx.manager.counters),
        messages=len(messages),
        messages_per_work=dict(per_work),
        resent=sum(count - 1 for count in seen.values()),
        delivered=delivered,
        lost=accepted - delivered - failed - {str(ODD_OBJECT["id"])},
        failed_reported=failed,
        cursor=ctx.stub.state_dict().get(STATE_KEY),
        works=ctx.stub.works_list(),
    )


def _check_completion(row: Row, outcome: Outcome) -> dict[str, str]:
    """Every work complete under both rule sets, never early, its count exact — or over
    by at most the messages in doubt; per rule set, what the table shows.

    Over by messages in doubt (the documented ambiguity), the older rules may complete
    a work early; with the direct publisher it still completes (its expected count
    only grows before the batch's first publish), with pycti's it may stay in progress
    (its count is lowered after pycti's own add, when a report in doubt may have
    passed it).
    """
    doubt = outcome.counters["messages_in_doubt"]
    shown: dict[str, str] = {}
    for rules in RULE_SETS:
        complete = exact = early = 0
        for work in outcome.works:
            verdict = work.verdict(rules)
            over = verdict.processed - verdict.expected
            assert 0 <= over <= doubt, (rules, work)
            complete += verdict.complete
            if over == 0:
                exact += 1
                assert verdict.complete and not verdict.early, (rules, work)
                continue
            assert rules == "older" or (verdict.complete and not verdict.early), (rules, work)
            assert verdict.complete or row.publisher == "pycti", (rules, work)
            early += verdict.early
        note = f"{complete}/{len(outcome.works)} complete, {exact} exact"
        shown[rules] = note + (f", {early} early" if early else "")
    return shown


@pytest.fixture(scope="module", autouse=True)
def _write_matrix() -> Iterator[None]:
    yield
    if os.environ.get("CONNECTOR_BATCHING_WRITE_MATRIX") == "1":
        MATRIX_PATH.write_text(_table(), encoding="utf-8")


def _table() -> str:
    lines = [
        "# Fault matrix: the OpenCTI path (OpenCTIWorkManager)",
        "",
        "Generated by `tests/integration/test_fault_matrix.py` "
        "(`CONNECTOR_BATCHING_WRITE_MATRIX=1`): a real `pycti.OpenCTIConnectorHelper`, the "
        "stub OpenCTI API (`connector_batching/testing/stub_platform.py`) and the real "
        "RabbitMQ broker behind a TCP proxy that cuts or refuses connections "
        "(`tests/integration/tcp_proxy.py`); "
        "the helper's API client reaches the stub through another such proxy.",
        "",
        f"Every row sends the same feed: 32 items (the TLP:RED marking, the author, {GROUPS} "
        "indicator + URL + relationship groups) in batches of 10: four batches, 92 objects "
        "(98 messages in split mode, as batches 2 to 4 carry the marking and the author "
        f"again), with `max_retries={MAX_RETRIES}`, `retry_delay=0.05`. In the timeout rows "
        f"the manager's `api_timeout` is {REQUEST_TIMEOUT:g} s (pycti's default is 300 s) "
        "and the stub answers the faulted request only once the client has timed out and "
        "closed the connection.",
        "",
        "A model of the OpenCTI worker (`connector_batching/testing/worker_model.py`) drains "
        "the push queue while the connector runs and reports to the works as "
        "`opencti-worker` does (one report per object of a message it imports whole). The "
        "stub records every `addExpectations`, report and `workToProcessed` of each work; "
        "both of the platform's rule sets are replayed over that record "
        "(`connector_batching/testing/work_rules.py`): *current* (a multipart work completes "
        "once marked processed and its reports reach its expected count) and *older* (it "
        "completes at the report that makes them equal).",
        "",
        "* *Re-sent*: messages the worker imported twice within one work (the same objects again).",
        "* *In doubt*: messages published and not confirmed when a send broke "
        "(`counters['messages_in_doubt']`); the retry publishes them again, so each may "
        "arrive twice. It bounds how far a work's reports can exceed its expected count.",
        "* *Expected / reports*: the sums over the works (the manager's placeholder "
        "included, one per work in which something was sent).",
        "* *Current rules*, *older rules*: works complete; *exact*: reports equal to the "
        "expected count; *early*: completed before the connector closed it. Every row "
        "asserts: all complete, none early unless over by messages in doubt.",
        "* *Cursor*: the state the platform holds at the end.",
        "* *Lost*: accepted objects neither delivered, nor reported failed, nor counted as "
        "objects pycti's splitter cannot import (`incompatible_objects`, logged at WARNING).",
        "",
        "Every row is a passing test; a row missing here failed or did not run.",
        "",
        "| # | Injected | What happened | Retries | Failed batches | Works (in error) | "
        "Messages | Re-sent | In doubt | Expected / reports | Current rules | Older rules | "
        "Cursor | Lost |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for number, row in enumerate(ROWS, start=1):
        if row.id in _results:
            lines.append(f"| {number} | {_results[row.id]} |")
    lines.append("")
    return "\n".join(lines)


@pytest.mark.parametrize("row", ROWS, ids=[row.id for row in ROWS])
def test_fault(
    row: Row,
    stub: StubOpenCTI,
    broker_proxy: TcpProxy,
    make_helper: Any,
    request: pytest.FixtureRequest,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    host, port = stub.url.removeprefix("http://").split(":")
    api_proxy = TcpProxy(host, int(port)).start()
    request.addfinalizer(api_proxy.stop)
    ctx = Context(stub=stub, proxy=broker_proxy, api_proxy=api_proxy, monkeypatch=monkeypatch)
    stub.completion_rules = "current"  # the live status; both rule sets are replayed below
    ctx.helper = make_helper()
    ctx.helper.api.api_url = f"http://{host}:{api_proxy.port}/graphql"
    with WorkerModel(stub) as worker:
        try:
            processor, feed = _run(row, ctx)
            outcome = _outcome(ctx, worker, processor, feed)
        finally:
            monkeypatch.undo()  # the worker model publishes through pika too
            assert ctx.manager is not None
            ctx.manager.close()
    stats = outcome.stats

    # nothing lost, nothing left failed after recovery
    assert outcome.lost == set()
    assert outcome.failed_reported == set()
    assert stats["failed_items_count"] == 0
    # every work complete as the platform decides, under both rule sets, never early
    completion = _check_completion(row, outcome)
    assert [w for w in outcome.works if not w.closed] == []  # live: the current rules
    assert len(outcome.works) == row.works
    assert sum(1 for w in outcome.works if w.in_error) == row.works_in_error
    assert ctx.manager is not None and ctx.manager.open_works == []
    # the cursor: held before failed items while they were failed, the latest at the end
    for cursor, earliest in ctx.cursors_while_failed:
        assert cursor is None or parse_instant(cursor) < earliest  # type: ignore[operator]
    latest = format_instant(rows(GROUPS)[-1].modified)
    assert outcome.cursor == latest
    assert ctx.manager.get_state(STATE_KEY) == latest
    # the numbers
    assert stats["retries"] == row.retries
    assert stats["failed_batches"] == row.failed_batches
    assert stats["total_batches_processed"] == BATCHES
    if row.resent == "none":
        assert outcome.resent == 0
    elif row.resent == "some":
        assert outcome.resent > 0
    assert outcome.resent <= outcome.counters["messages_in_doubt"]
    expected = sum(w.expectations for w in outcome.works)
    reports = sum(w.reported_expectations for w in outcome.works)
    assert 0 <= reports - expected <= outcome.counters["messages_in_doubt"]
    if row.send_mode == "bundle":
        assert outcome.counters["messages_sent"] == outcome.messages
    if row.extra is not None:
        row.extra(ctx, outcome)

    in_error = sum(1 for w in outcome.works if w.in_error)
    cursor_note = "latest item" if outcome.cursor == latest else str(outcome.cursor)
    if ctx.cursors_while_failed:
        cursor_note += "; held before the failed batch while it was failed"
    _results[row.id] = " | ".join(
        [
            row.injected,
            row.happened,
            str(stats["retries"]),
            str(stats["failed_batches"]),
            f"{len(outcome.works)} ({in_error})",
            str(outcome.messages),
            str(outcome.resent),
            str(outcome.counters["messages_in_doubt"]),
            f"{expected} / {reports}",
            completion["current"],
            completion["older"],
            cursor_note,
            "nothing",
        ]
    )
