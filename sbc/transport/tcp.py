"""SIP over TCP: listeners, framed connections, idle timeouts and per-source limits.

Each connection has an id; the SIP core sees it in :class:`Address.conn_id` so that responses
go back over the connection the request came on (RFC 3261 §18.2.2). Outbound requests to a
TCP destination reuse an open connection to that address or open a new one.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import socket
from collections.abc import Callable

from .. import metrics
from ..config import ListenSpec
from ..sip.events import Address
from ..sip.framing import FramedMessage, FramingError, KeepAlivePing, StreamFramer

log = logging.getLogger(__name__)

OnMessage = Callable[[bytes, Address], None]
LISTEN_BACKLOG = 1024
# RFC 5626 §3.5.1: the answer to a CRLFCRLF ping is a single CRLF.
PONG = b"\r\n"
# How often idle connections are looked for; a fraction of the idle timeout is precise enough.
IDLE_SWEEP_FRACTION = 0.25
_conn_ids = itertools.count(1)
#: Low bits of a connection id that name the worker process holding the connection (with
#: ``sbc run --workers N`` a message may be handled by another worker than the one that read it,
#: and its answer must go back over this connection; sbc.workers.MAX_WORKERS fits).
CONN_WORKER_BITS = 8


def conn_worker(conn_id: int) -> int:
    """The worker holding the connection with this id."""
    return conn_id & ((1 << CONN_WORKER_BITS) - 1)


# Where a TcpTransport sends bytes for another worker's connection: (worker, data, address).
SendElsewhere = Callable[[int, bytes, Address], bool]


class TcpConnection(asyncio.Protocol):
    """One SIP TCP connection (accepted or opened by us)."""

    def __init__(self, owner: TcpTransport, outbound: bool = False) -> None:
        self.owner = owner
        self.id = (next(_conn_ids) << CONN_WORKER_BITS) | owner.worker
        self.framer = StreamFramer(owner.max_message_size)
        self.transport: asyncio.Transport | None = None
        self.peer: tuple[str, int] = ("", 0)
        self.last_activity = 0.0
        self.outbound = outbound
        self.closed = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.peer = transport.get_extra_info("peername")[:2]
        self.last_activity = asyncio.get_running_loop().time()
        if not self.owner.admit(self):
            metrics.TCP_CONNECTIONS_REFUSED.inc()
            transport.close()
            return
        metrics.TCP_CONNECTIONS.inc()

    def data_received(self, data: bytes) -> None:
        self.last_activity = asyncio.get_running_loop().time()
        addr = Address("tcp", self.peer[0], self.peer[1], self.id)
        for ev in self.framer.feed(data):
            if isinstance(ev, FramedMessage):
                try:
                    self.owner.on_message(ev.data, addr)
                except Exception:  # one bad message never stops the connection's peers
                    log.exception("unhandled error processing a message from %s", self.peer)
            elif isinstance(ev, KeepAlivePing):
                self.write(PONG)
            elif isinstance(ev, FramingError):
                metrics.SIP_MESSAGES_DROPPED.labels("tcp", "framing").inc()
                if ev.head and not ev.head.startswith(b"SIP/"):
                    self.owner.on_framing_error(ev, addr)
                log.info("closing tcp connection from %s: %s", self.peer, ev.reason)
                self.close()
                return

    def write(self, data: bytes) -> bool:
        """Queue ``data``; False when the connection is gone."""
        if self.transport is None or self.transport.is_closing():
            return False
        self.transport.write(data)
        self.last_activity = asyncio.get_running_loop().time()
        return True

    def close(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.owner.forget(self):
            metrics.TCP_CONNECTIONS.dec()
        if not self.closed.done():
            self.closed.set_result(None)


class TcpTransport:
    """All TCP listeners and connections of one SBC process."""

    def __init__(
        self,
        on_message: OnMessage,
        *,
        max_message_size: int,
        idle_timeout: float,
        max_per_source: int,
        on_framing_error: Callable[[FramingError, Address], None] | None = None,
        worker: int = 0,
        send_elsewhere: SendElsewhere | None = None,
    ) -> None:
        self.on_message = on_message
        self.worker = worker
        self.send_elsewhere = send_elsewhere
        self.on_framing_error = on_framing_error or (lambda ev, addr: None)
        self.max_message_size = max_message_size
        self.idle_timeout = idle_timeout
        self.max_per_source = max_per_source
        self.connections: dict[int, TcpConnection] = {}
        self._by_peer: dict[tuple[str, int], TcpConnection] = {}
        self._per_source: dict[str, int] = {}
        self.servers: list[asyncio.AbstractServer] = []
        self.locals: list[tuple[str, int]] = []
        self._sweeper: asyncio.Task | None = None

    def admit(self, conn: TcpConnection) -> bool:
        """Register a new connection; False when its source is over the limit."""
        host = conn.peer[0]
        count = self._per_source.get(host, 0)
        if not conn.outbound and count >= self.max_per_source:
            log.warning("refusing tcp connection from %s: %d already open", host, count)
            return False
        self._per_source[host] = count + 1
        self.connections[conn.id] = conn
        self._by_peer[conn.peer] = conn
        return True

    def forget(self, conn: TcpConnection) -> bool:
        """Drop a closed connection; True when it had been admitted."""
        if self.connections.pop(conn.id, None) is None:
            return False
        if self._by_peer.get(conn.peer) is conn:
            del self._by_peer[conn.peer]
        left = self._per_source.get(conn.peer[0], 1) - 1
        if left:
            self._per_source[conn.peer[0]] = left
        else:
            self._per_source.pop(conn.peer[0], None)
        return True

    async def listen(self, spec: ListenSpec, sock: socket.socket | None = None) -> None:
        """Start a listener (on ``sock`` when given: bound by the supervisor, every worker
        listens and accepts on it). Raises OSError when the address cannot be bound."""
        loop = asyncio.get_running_loop()
        if sock is not None:
            server = await loop.create_server(lambda: TcpConnection(self), sock=sock, backlog=LISTEN_BACKLOG)
        else:
            server = await loop.create_server(
                lambda: TcpConnection(self), spec.host, spec.port, family=spec.family, reuse_address=True,
                backlog=LISTEN_BACKLOG,
            )  # fmt: skip
        self.servers.append(server)
        self.locals.append(server.sockets[0].getsockname()[:2])
        if self._sweeper is None:
            self._sweeper = asyncio.create_task(self._sweep_idle())

    def send(self, data: bytes, addr: Address) -> bool:
        """Send over the request's connection, else any open connection to the address.

        Returns False when no connection is open (the caller then reports a transport error
        or, for requests, uses :meth:`send_to`). A connection another worker holds is handed to
        ``send_elsewhere``.
        """
        if addr.conn_id is not None and self.send_elsewhere is not None:
            holder = conn_worker(addr.conn_id)
            if holder != self.worker:
                return self.send_elsewhere(holder, data, addr)
        conn = self.connections.get(addr.conn_id) if addr.conn_id is not None else None
        if conn is None:
            conn = self._by_peer.get((addr.host, addr.port))
        return conn.write(data) if conn is not None else False

    async def send_to(self, data: bytes, host: str, port: int) -> Address:
        """Send, opening a connection when none is open. Raises OSError when connecting fails."""
        conn = self._by_peer.get((host, port))
        if conn is None or not conn.write(data):
            loop = asyncio.get_running_loop()
            _, conn = await loop.create_connection(lambda: TcpConnection(self, outbound=True), host, port)
            conn.write(data)
        return Address("tcp", host, port, conn.id)

    async def _sweep_idle(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(max(0.05, self.idle_timeout * IDLE_SWEEP_FRACTION))
            cutoff = loop.time() - self.idle_timeout
            for conn in [c for c in self.connections.values() if c.last_activity < cutoff]:
                log.info("closing idle tcp connection from %s", conn.peer)
                conn.close()

    async def close(self) -> None:
        """Stop listening and close every connection."""
        if self._sweeper is not None:
            self._sweeper.cancel()
        for server in self.servers:
            server.close()
        for conn in list(self.connections.values()):
            conn.close()
        for server in self.servers:
            await server.wait_closed()
