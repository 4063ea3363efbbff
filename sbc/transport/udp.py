"""SIP over UDP: one non-blocking socket per listener, read and written in batches.

A readiness event takes every datagram waiting (up to 64 per ``recvmmsg``), hands each to the
core, then lets the owner flush once, and sends what the batch produced with one ``sendmmsg``.
Datagrams sent outside a batch (timers, TCP, the API) go out at the end of the loop iteration.
Each datagram's kernel receive timestamp gives its queueing delay, which the overload guard reads
through :meth:`UdpListener.take_queue_delay` (see :mod:`sbc.transport._udpio` for why).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
from collections.abc import Callable

from ..config import ListenSpec
from ..sip.events import Address
from ._udpio import BATCH, BatchSocket

log = logging.getLogger(__name__)

# Socket buffers: a burst of 1,500 INVITEs/s with retransmissions needs far more than the
# kernel's default 208 KiB; the kernel caps this at net.core.rmem_max (see deploy/).
SOCKET_BUFFER_BYTES = 4 * 1024 * 1024
# Batches taken per readiness event before other callbacks (timers, TCP, the API) get a turn:
# 4 x 64 datagrams bounds one turn to a few tens of milliseconds at full load.
BATCHES_PER_TURN = 4
# Datagrams kept while the socket buffer is full; beyond this new ones are dropped (counted):
# SIP over UDP survives a loss by retransmission, not a process that queues without bound.
MAX_PENDING = 20_000

OnMessage = Callable[[bytes, Address], None]


class UdpListener:
    """Receives datagrams for the SIP core and sends what it asks to send.

    ``on_message(data, source)`` runs for each datagram; ``on_batch_end()``, when given, once
    after each batch (the owner flushes the core's output and timers there, once per batch
    instead of once per message).
    """

    def __init__(
        self,
        spec: ListenSpec,
        sock: socket.socket,
        on_message: OnMessage,
        on_batch_end: Callable[[], None] | None = None,
    ) -> None:
        self.spec = spec
        self.sock = sock
        self.on_message = on_message
        self.on_batch_end = on_batch_end
        self.local: tuple[str, int] = sock.getsockname()[:2]
        self.io = BatchSocket(sock.fileno())
        self.loop = asyncio.get_running_loop()
        self.dropped = 0
        # How old the last datagram read was when a full batch left more waiting, else 0: the
        # owner's timers must not act on time its input has not caught up with (see behind()).
        self.input_lag = 0.0
        self._pending: list[tuple[bytes, str, int]] = []
        self._in_batch = False
        self._flush_scheduled = False
        self._waiting_writable = False
        self._closed = False
        self._reading_since = time.monotonic()
        self.loop.add_reader(sock.fileno(), self._on_readable)

    # -- receiving -------------------------------------------------------------------------------

    def _on_readable(self) -> None:
        self._in_batch = True
        try:
            for _ in range(BATCHES_PER_TURN):
                try:
                    batch = self.io.recv()
                except OSError as e:  # ICMP errors and the like: the transaction timers deal with it
                    log.debug("udp receive error on %s: %s", self.spec, e)
                    continue
                if len(batch) < BATCH:
                    self.input_lag = 0.0  # the queue was emptied
                else:
                    self.input_lag = self.io.last_delay
                if not batch:
                    break
                for data, host, port in batch:
                    try:
                        self.on_message(data, Address("udp", host, port, None))
                    except Exception:  # one bad datagram never stops the listener
                        log.exception("unhandled error processing a datagram from %s:%s", host, port)
                if self.on_batch_end is not None:
                    try:
                        self.on_batch_end()
                    except Exception:
                        log.exception("unhandled error after a batch on %s", self.spec)
                self._send_pending()
        finally:
            self._in_batch = False

    def take_queue_delay(self) -> float:
        """The longest a datagram waited in the kernel's queue (seconds) since the last call.

        Never more than this listener has been reading: with ``sbc run --workers N`` the
        supervisor's socket takes traffic before a starting (or restarted) worker reads it, and
        the time a datagram waited for the process to exist is not overload. Counted whole, it
        made a worker shed calls in its first second (a 363 ms "delay" 100 ms after it started).
        """
        delay = self.io.take_max_delay()
        reading = time.monotonic() - self._reading_since
        return delay if delay <= reading else reading

    # -- sending ---------------------------------------------------------------------------------

    def send(self, data: bytes, host: str, port: int) -> None:
        """Queue one datagram; it leaves with this batch or at the end of this loop iteration.
        Never raises: a closed listener or a full queue drops it (counted in ``dropped``)."""
        if self._closed or len(self._pending) >= MAX_PENDING:
            self.dropped += 1
            return
        self._pending.append((data, host, port))
        if not self._in_batch and not self._flush_scheduled and not self._waiting_writable:
            self._flush_scheduled = True
            self.loop.call_soon(self._scheduled_flush)

    def _scheduled_flush(self) -> None:
        self._flush_scheduled = False
        self._send_pending()

    def _send_pending(self) -> None:
        pending = self._pending
        if not pending or self._waiting_writable or self._closed:
            return
        done = self.io.send(pending)
        for item, err in self.io.last_errors:
            log.debug("udp send to %s:%s failed: %s", item[1], item[2], err)
        if done >= len(pending):
            pending.clear()
            return
        del pending[:done]  # the socket buffer is full: the rest goes when it drains
        self._waiting_writable = True
        self.loop.add_writer(self.sock.fileno(), self._on_writable)

    def _on_writable(self) -> None:
        self.loop.remove_writer(self.sock.fileno())
        self._waiting_writable = False
        self._send_pending()

    def close(self) -> None:
        """Send what is queued (best effort), stop reading and close the socket; idempotent."""
        if self._closed:
            return
        with contextlib.suppress(OSError):
            self._send_pending()
        self._closed = True
        self.loop.remove_reader(self.sock.fileno())
        if self._waiting_writable:
            self.loop.remove_writer(self.sock.fileno())
        self.sock.close()


def bind_udp(spec: ListenSpec, *, reuse_port: bool = False) -> socket.socket:
    """A non-blocking UDP socket bound to ``spec`` with large buffers; with ``reuse_port`` one of
    a group sharing the address (``sbc run --workers N``). Raises OSError when it cannot bind."""
    sock = socket.socket(spec.family, socket.SOCK_DGRAM)
    try:
        sock.setblocking(False)
        for opt in (socket.SO_RCVBUF, socket.SO_SNDBUF):
            with contextlib.suppress(OSError):  # capped by the kernel, not fatal
                sock.setsockopt(socket.SOL_SOCKET, opt, SOCKET_BUFFER_BYTES)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((spec.host, spec.port))
    except BaseException:
        sock.close()
        raise
    return sock


async def start_udp(
    spec: ListenSpec,
    on_message: OnMessage,
    on_batch_end: Callable[[], None] | None = None,
    sock: socket.socket | None = None,
) -> UdpListener:
    """Listen on ``spec`` (on ``sock`` when given: a worker's socket, bound by the supervisor).
    Raises OSError when the address cannot be bound."""
    if sock is None:
        sock = bind_udp(spec)
    else:
        sock.setblocking(False)
    return UdpListener(spec, sock, on_message, on_batch_end)
