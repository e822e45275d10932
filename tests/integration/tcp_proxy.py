"""A small TCP proxy between pika and RabbitMQ that breaks the broker link on command.

* ``cut()`` drops every open connection now;
* ``cut_after(nbytes, skip=0)`` lets ``skip`` new connections through, then drops
  the next one once it has carried ``nbytes`` from the client to the broker (a
  cut in the middle of a send);
* ``refuse(n)`` resets the next ``n`` connection attempts at once (``None``: all
  of them, until ``accept()``) — the broker is unreachable for a while, then back.

Forwarding runs on daemon threads; ``stop()`` closes everything.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
from dataclasses import dataclass


@dataclass
class ProxyStats:
    """What the proxy did."""

    connections: int = 0
    refused: int = 0
    cut: int = 0


class _Link:
    """One client connection and its upstream twin."""

    def __init__(self, proxy: TcpProxy, client: socket.socket, upstream: socket.socket) -> None:
        self.proxy = proxy
        self.client = client
        self.upstream = upstream
        self.sent_upstream = 0
        self.cut_at: int | None = None
        self.closed = False

    def start(self) -> None:
        for source, target, upward in (
            (self.client, self.upstream, True),
            (self.upstream, self.client, False),
        ):
            threading.Thread(
                target=self._pump, args=(source, target, upward), daemon=True, name="tcp-proxy"
            ).start()

    def _pump(self, source: socket.socket, target: socket.socket, upward: bool) -> None:
        try:
            while True:
                data = source.recv(65536)
                if not data:
                    break
                if upward and self.cut_at is not None:
                    room = self.cut_at - self.sent_upstream
                    if len(data) >= room:
                        target.sendall(data[: max(room, 0)])
                        self.sent_upstream += max(room, 0)
                        self.proxy._count_cut()
                        break
                target.sendall(data)
                if upward:
                    self.sent_upstream += len(data)
        except OSError:
            pass
        self.close()

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        for sock in (self.client, self.upstream):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            with contextlib.suppress(OSError):
                sock.close()
        self.proxy._forget(self)


class TcpProxy:
    """Listens on a free loopback port and forwards to ``target_host:target_port``."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.stats = ProxyStats()
        self._lock = threading.Lock()
        self._links: list[_Link] = []
        self._refuse_left: int | None = 0  # None: refuse until accept()
        self._cut_next: list[list[int]] = []  # [connections to let through, bytes]
        self._server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._server.bind(("127.0.0.1", 0))
        self._server.listen(64)
        self._stopped = False
        self._thread = threading.Thread(target=self._serve, daemon=True, name="tcp-proxy-accept")

    @property
    def host(self) -> str:
        return "127.0.0.1"

    @property
    def port(self) -> int:
        return int(self._server.getsockname()[1])

    def start(self) -> TcpProxy:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopped = True
        with contextlib.suppress(OSError):
            self._server.close()
        self.cut(count=False)

    # -- commands --------------------------------------------------------------

    def cut(self, *, count: bool = True) -> int:
        """Drop every open connection; return how many."""
        with self._lock:
            links = list(self._links)
        for link in links:
            link.close()
        if count:
            with self._lock:
                self.stats.cut += len(links)
        return len(links)

    def cut_after(self, nbytes: int, skip: int = 0) -> None:
        """After ``skip`` new connections, drop the next once it carried ``nbytes`` upstream."""
        with self._lock:
            self._cut_next.append([skip, nbytes])

    def refuse(self, attempts: int | None = None) -> None:
        """Reset the next ``attempts`` connections (``None``: every one until ``accept()``)."""
        with self._lock:
            self._refuse_left = attempts

    def accept(self) -> None:
        """Forward new connections again."""
        with self._lock:
            self._refuse_left = 0

    # -- internals ---------------------------------------------------------------

    def _count_cut(self) -> None:
        with self._lock:
            self.stats.cut += 1

    def _forget(self, link: _Link) -> None:
        with self._lock:
            if link in self._links:
                self._links.remove(link)

    def _should_refuse(self) -> bool:
        with self._lock:
            if self._refuse_left is None:
                self.stats.refused += 1
                return True
            if self._refuse_left > 0:
                self._refuse_left -= 1
                self.stats.refused += 1
                return True
            return False

    def _serve(self) -> None:
        while not self._stopped:
            try:
                client, _address = self._server.accept()
            except OSError:
                return
            if self._should_refuse():
                # RST instead of FIN: the client sees "connection reset", as with a dead port
                client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                client.close()
                continue
            try:
                upstream = socket.create_connection(self.target, timeout=30)  # a hang only
                upstream.settimeout(None)
            except OSError:
                client.close()
                continue
            for sock in (client, upstream):  # no Nagle stall on small AMQP frames
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            link = _Link(self, client, upstream)
            with self._lock:
                self.stats.connections += 1
                if self._cut_next:
                    plan = self._cut_next[0]
                    if plan[0] > 0:
                        plan[0] -= 1
                    else:
                        link.cut_at = self._cut_next.pop(0)[1]
                self._links.append(link)
            link.start()
