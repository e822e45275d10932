"""No secret in any log line, exception message or repr on the error paths of
``OpenCTIWorkManager`` and the mixin: the OpenCTI token, the broker password and
credentials in URLs.  Real helper, stub platform, real broker; everything the
process prints or logs is captured (``caplog`` at DEBUG and the file descriptors)."""

from __future__ import annotations

import logging
import socket
import traceback
import uuid
from typing import Any

import pytest

from connector_batching.config import GenericBatchProcessorConfig
from connector_batching.opencti import OpenCTIWorkManager, redact
from connector_batching.processor import GenericBatchProcessor
from connector_batching.testing.stub_platform import StubOpenCTI
from tests.integration.feed import AUTHOR, TLP_RED, modified_of, rows
from tests.integration.test_mixin_connector import FeedConnector

pytestmark = pytest.mark.broker


class FeedBatchError(Exception):
    """Raised when a batch fails for good."""


def _config(max_retries: int) -> GenericBatchProcessorConfig:
    return GenericBatchProcessorConfig(
        batch_size=10,
        work_name_template="Secret test #{batch_num}",
        state_key="cursor",
        entity_type="indicators",
        display_name="indicators",
        date_extraction_function=modified_of,
        exception_class=FeedBatchError,
        max_retries=max_retries,
        retry_delay=0.01,
        retry_max_delay=0.02,
    )


def _run(processor: GenericBatchProcessor, count: int) -> list[BaseException]:
    errors: list[BaseException] = []
    for item in [TLP_RED, AUTHOR, *rows(count)]:
        try:
            processor.add_item(item)
        except Exception as exc:
            errors.append(exc)
    try:
        processor.flush()
    except Exception as exc:
        errors.append(exc)
    processor.update_final_state()
    return errors


def _everything(
    caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str], *extra: Any
) -> str:
    """All text the run produced: log records (message, extras, traceback), output, extras."""
    parts = []
    formatter = logging.Formatter()
    for record in caplog.records:
        parts.append(record.getMessage())
        parts.append(repr({k: v for k, v in vars(record).items() if k not in ("msg", "args")}))
        if record.exc_info:
            parts.append(formatter.formatException(record.exc_info))
        if record.exc_text:
            parts.append(record.exc_text)
    out, err = capfd.readouterr()
    parts += [out, err]
    for value in extra:
        parts += [str(value), repr(value)]
        if isinstance(value, BaseException):
            parts.append("".join(traceback.format_exception(value)))  # as printed
    return "\n".join(parts)


def test_a_platform_that_echoes_the_token_never_gets_it_into_logs_or_errors(
    stub: StubOpenCTI,
    make_helper: Any,
    caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
) -> None:
    caplog.set_level(logging.DEBUG)
    helper = make_helper()

    # the raw path does carry the token: what the manager must keep out
    stub.fail("workAdd", times=1, kind="echo")
    with pytest.raises(ValueError, match=stub.token):
        helper.api.work.initiate_work(helper.connect_id, "raw")
    capfd.readouterr()
    caplog.clear()

    for operation in ("ConnectorBatchingOpenWorks", "workAdd", "workToProcessed"):
        stub.fail(operation, times=1, kind="echo")
    stub.fail("GetConnector", times=2, kind="echo")  # state refresh, back-pressure check
    stub.fail("addExpectations", times=1, kind="echo")  # pycti logs it with the traceback
    stub.fail("PingConnector", times=1, kind="echo")  # pycti's force_ping logs it
    connector = FeedConnector(helper)
    manager = connector.work_manager  # lists interrupted works: echo
    assert connector.get_cursor("feed_cursor") is None  # reads the platform state: echo
    processor = GenericBatchProcessor(_config(max_retries=2), manager, helper.connector_logger)
    errors = _run(processor, 12)
    assert errors == []
    assert isinstance(manager, OpenCTIWorkManager)
    manager.queue_size_mb()  # echo on the queue read

    # an error that is raised to the caller: the manager's own exception, redacted
    stub.fail("workAdd", times=3, kind="echo")
    failing = GenericBatchProcessor(_config(max_retries=2), manager, helper.connector_logger)
    failures = _run(failing, 3)
    assert len(failures) == 1 and isinstance(failures[0], FeedBatchError)
    assert "ValueError" in str(failures[0])  # the reason is kept, the token is not
    assert "***" in str(failures[0])

    echoed = [c.operation for c in stub.calls if c.outcome == "echo"]
    assert len(echoed) == 11, echoed
    text = _everything(caplog, capfd, manager, processor, failing, *failures)
    assert "Request headers" in text  # the echoed errors were logged...
    assert stub.token not in text  # ...without the token
    for work in stub.works_list():
        assert stub.token not in repr(work.messages)  # nor in what went to the platform


def test_a_wrong_broker_password_never_appears(
    stub: StubOpenCTI,
    make_helper: Any,
    caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
) -> None:
    caplog.set_level(logging.DEBUG)
    password = f"broker-pw-{uuid.uuid4().hex}"
    stub.advertised_broker.password = password  # the platform hands out a bad password
    helper = make_helper()
    manager = OpenCTIWorkManager(helper, backpressure=False)
    processor = GenericBatchProcessor(_config(max_retries=1), manager, helper.connector_logger)
    failures = _run(processor, 5)
    assert len(failures) == 1  # one batch of 7 items, refused by the broker twice
    assert len(processor.get_failed_items()) == 7
    (work,) = stub.works_list()
    assert work.closed and work.in_error is True
    text = _everything(caplog, capfd, manager, processor, *failures, work.messages)
    assert "Authentication" in text or "ACCESS_REFUSED" in text, text[-3000:]
    assert password not in text


def _dead_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_credentials_in_the_platform_url_never_appear_when_it_is_down(
    stub: StubOpenCTI,
    make_helper: Any,
    caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
) -> None:
    caplog.set_level(logging.DEBUG)
    helper = make_helper()
    url_secret = f"url-pw-{uuid.uuid4().hex}"
    helper.api.api_url = f"http://alice:{url_secret}@127.0.0.1:{_dead_port()}/graphql"
    helper.api.session_requests_timeout = 2
    connector = FeedConnector(helper)
    manager = connector.work_manager  # listing fails: logged, not raised
    assert connector.get_cursor("feed_cursor") is None  # refresh fails: local state used
    assert isinstance(manager, OpenCTIWorkManager)
    processor = GenericBatchProcessor(_config(max_retries=1), manager, helper.connector_logger)
    failures = _run(processor, 3)
    assert len(failures) == 1 and isinstance(failures[0], FeedBatchError)
    assert "ConnectionError" in str(failures[0])
    text = _everything(caplog, capfd, manager, processor, *failures)
    assert url_secret not in text
    assert stub.token not in text


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("amqp://guest:s3cret@broker:5672/%2F down", "amqp://***:***@broker:5672/%2F down"),
        ("see https://u:p@x.example/graphql", "see https://***:***@x.example/graphql"),
        ("Bearer tok-12345 refused", "Bearer *** refused"),
        ("http://host:8080/path stays", "http://host:8080/path stays"),
    ],
)
def test_redact_removes_secrets_and_url_credentials(text: str, expected: str) -> None:
    assert redact(text, ["tok-12345"]) == expected
