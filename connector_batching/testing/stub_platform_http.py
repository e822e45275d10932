"""The HTTP side of the stub platform: ``POST /graphql`` with the connector's bearer token."""

from __future__ import annotations

import contextlib
import json
import select
import socket
import time
from http.server import BaseHTTPRequestHandler
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from connector_batching.testing.stub_platform import StubOpenCTI


def graphql_error(message: str, code: str) -> dict[str, Any]:
    """A GraphQL error answer, as the platform words it."""
    return {
        "errors": [{"message": message, "name": code, "extensions": {"code": code}}],
        "data": None,
    }


class GraphQLHandler(BaseHTTPRequestHandler):
    """Hands each GraphQL request to ``owner.handle`` (set in a subclass per stub)."""

    owner: StubOpenCTI
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body are two writes: no 40 ms stall

    def log_message(self, format: str, *args: Any) -> None:
        return

    def _reply(self, status: int, body: dict[str, Any] | str) -> None:
        payload = (json.dumps(body) if isinstance(body, dict) else body).encode()
        ctype = "application/json" if isinstance(body, dict) else "text/plain"
        with contextlib.suppress(OSError):  # the client may have given up (timeout)
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length)
        if self.path.rstrip("/") != "/graphql":
            self._reply(404, "not found")
            return
        if self.headers.get("Authorization") != f"Bearer {self.owner.token}":
            self._reply(200, graphql_error("You must be logged in to do this.", "AUTH_REQUIRED"))
            return
        try:
            request = json.loads(raw)
        except ValueError:
            self._reply(400, "invalid JSON")
            return
        variables = request.get("variables") or {}
        status, body = self.owner.handle(
            request.get("query", ""),
            variables,
            headers=dict(self.headers.items()),
            client_gone=self._client_gone,
        )
        self._reply(status, body)

    def _client_gone(self, limit: float) -> bool:
        """Block until the client closes the connection (True) or ``limit`` s pass."""
        sock = self.connection
        deadline = time.monotonic() + limit
        while (left := deadline - time.monotonic()) > 0:
            readable, _, _ = select.select([sock], [], [], left)
            if readable:
                try:
                    return bool(sock.recv(1, socket.MSG_PEEK) == b"")
                except OSError:
                    return True
        return False
