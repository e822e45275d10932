"""A real pycti helper against the integration tests' stub OpenCTI API and RabbitMQ.

Reuses ``connector_batching.testing.stub_platform.StubOpenCTI`` (the stub platform, which
declares a unique push queue per connector id and deletes it on stop) and
``tests.integration.conftest.helper_config`` (the helper configuration).
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pika

DEFAULT_AMQP_URL = "amqp://guest:guest@127.0.0.1:5672/%2F"


def amqp_url() -> str:
    """The broker URL (``AMQP_URL``, default the local guest broker)."""
    return os.environ.get("AMQP_URL", DEFAULT_AMQP_URL)


def broker_problem(url: str | None = None) -> str | None:
    """Why the broker cannot be used (``None`` when it answers)."""
    params = pika.URLParameters(url or amqp_url())
    params.socket_timeout = 30
    params.blocked_connection_timeout = 30
    params.connection_attempts = 1
    try:
        pika.BlockingConnection(params).close()
    except Exception as exc:
        return (
            f"RabbitMQ not reachable at {params.host}:{params.port} "
            f"({type(exc).__name__}); start it or set AMQP_URL"
        )
    return None


@dataclass
class Platform:
    """A started stub platform and a real helper registered with it."""

    stub: Any
    helper: Any

    @property
    def queue(self) -> str:
        return str(self.stub.push_queue)

    def purge(self) -> int:
        """Empty the connector's push queue; returns how many messages were dropped."""
        connection = pika.BlockingConnection(pika.URLParameters(self.stub.amqp_url))
        try:
            frame = connection.channel().queue_purge(self.queue)
            return int(frame.method.message_count)
        finally:
            connection.close()

    def depth(self) -> int:
        """Messages waiting in the push queue."""
        from connector_batching.testing.stub_platform import queue_depth

        return queue_depth(self.stub.amqp_url, self.queue)


@contextlib.contextmanager
def opencti_platform(latency: float = 0.0) -> Iterator[Platform]:
    """Start the stub (``latency`` s per API call) and a real helper; stop both after."""
    from pycti import OpenCTIConnectorHelper

    from connector_batching.testing.stub_platform import StubOpenCTI
    from tests.integration.conftest import helper_config

    stub = StubOpenCTI(amqp_url()).start()
    saved_hook = sys.excepthook
    helper: Any = None
    try:
        pings = len(stub.calls_of("PingConnector"))
        try:
            helper = OpenCTIConnectorHelper(helper_config(stub, log_level="error"))
        finally:
            sys.excepthook = saved_hook  # pycti installs a hook that SIGTERMs the process
        if getattr(helper, "ping", None) is not None:
            stub.wait_for(
                lambda: len(stub.calls_of("PingConnector")) > pings,
                what="the helper's first ping",
            )
        _quiet_pycti()
        stub.latency = latency
        yield Platform(stub=stub, helper=helper)
    finally:
        if helper is not None and getattr(helper, "ping", None) is not None:
            helper.ping.stop()
        sys.excepthook = saved_hook
        stub.latency = 0.0
        stub.stop()


def _quiet_pycti() -> None:
    """pycti logs every bundle at info level; keep the benchmark's terminal readable."""
    for name in ("pika", "pycti", "api", "urllib3"):
        logging.getLogger(name).setLevel(logging.ERROR)
