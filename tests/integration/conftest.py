"""Fixtures: the real RabbitMQ broker, the stub OpenCTI API, real pycti helpers."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from typing import Any

import pika
import pytest

from connector_batching.testing.stub_platform import StubOpenCTI
from tests.integration.tcp_proxy import TcpProxy

DEFAULT_AMQP_URL = "amqp://guest:guest@127.0.0.1:5672/%2F"


def _redacted(url: str) -> str:
    params = pika.URLParameters(url)
    return f"amqp://{params.host}:{params.port}/{params.virtual_host}"


@pytest.fixture(scope="session")
def amqp_url() -> str:
    """The broker URL (``AMQP_URL``, default the local guest broker)."""
    return os.environ.get("AMQP_URL", DEFAULT_AMQP_URL)


@pytest.fixture(scope="session")
def broker(amqp_url: str) -> str:
    """The broker URL once the broker answered; skip (or fail when required) if not."""
    params = pika.URLParameters(amqp_url)
    params.socket_timeout = 30  # against a black-holed host only: a loaded machine is slow
    params.blocked_connection_timeout = 30
    params.connection_attempts = 1
    try:
        pika.BlockingConnection(params).close()
    except Exception as exc:
        reason = (
            f"RabbitMQ not reachable at {_redacted(amqp_url)} ({type(exc).__name__}); "
            "start it or set AMQP_URL"
        )
        if os.environ.get("CONNECTOR_BATCHING_REQUIRE_BROKER") == "1":
            pytest.fail(f"{reason} — required by CONNECTOR_BATCHING_REQUIRE_BROKER=1")
        pytest.skip(reason)
    return amqp_url


@pytest.fixture
def stub(broker: str) -> Iterator[StubOpenCTI]:
    """A started stub platform with its own push queue (deleted afterwards)."""
    server = StubOpenCTI(broker).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def broker_proxy(stub: StubOpenCTI) -> Iterator[TcpProxy]:
    """A TCP proxy in front of the broker; the stub tells helpers to push through it.

    Request it before building helpers: pycti reads the broker host and port from
    the connector configuration the stub returns at registration.
    """
    real = stub.advertised_broker
    proxy = TcpProxy(real.host, real.port).start()
    original = (real.host, real.port)
    real.host, real.port = proxy.host, proxy.port
    try:
        yield proxy
    finally:
        real.host, real.port = original
        proxy.stop()


HelperFactory = Callable[..., Any]


def helper_config(stub: StubOpenCTI, **connector: Any) -> dict[str, Any]:
    """An OpenCTI connector configuration pointing at ``stub``."""
    return stub.helper_config(**connector)


@pytest.fixture
def make_helper(stub: StubOpenCTI) -> Iterator[HelperFactory]:
    """Build real ``OpenCTIConnectorHelper`` objects against ``stub``; stopped afterwards."""
    from pycti import OpenCTIConnectorHelper

    helpers: list[Any] = []
    saved_hook = sys.excepthook

    def make(**connector: Any) -> Any:
        pings_before = len(stub.calls_of("PingConnector"))
        try:
            helper = OpenCTIConnectorHelper(helper_config(stub, **connector))
        finally:
            sys.excepthook = saved_hook  # pycti installs a hook that SIGTERMs the process
        helpers.append(helper)
        if getattr(helper, "ping", None) is not None:
            # The helper's ping thread sends the state it read at start; let that first
            # ping land before the test moves cursors, or it may overwrite a newer state.
            stub.wait_for(
                lambda: len(stub.calls_of("PingConnector")) > pings_before,
                what="the helper's first ping",
            )
        return helper

    yield make
    for helper in helpers:
        ping = getattr(helper, "ping", None)
        if ping is not None:
            ping.stop()
    sys.excepthook = saved_hook
