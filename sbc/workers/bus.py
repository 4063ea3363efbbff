"""Datagrams between the workers of one ``sbc run --workers N``.

Each worker binds one abstract Unix datagram socket, ``\\0sbc-<group>-<index>``: nothing on the
file system to clean up after a crash, and the group (the supervisor's pid and a random token)
keeps two SBCs on one host apart. A frame is one byte of kind, one byte of sender index, then the
payload. Sends never block: when a worker's queue is full the frame is dropped and counted, as a
UDP datagram would be (a SIP peer retransmits; the cluster state is re-sent in full every
refresh), so one stalled worker cannot stall the others.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Callable

from . import WorkerInfo

log = logging.getLogger(__name__)

#: A SIP message that reached the wrong worker, handed to the one that owns its Call-ID
#: (payload: :func:`sbc.workers.forward.pack_message`).
KIND_SIP = 1
#: Bytes to write on a TCP connection another worker holds (payload: connection id, data).
KIND_TCP_SEND = 2
#: Cluster state between workers: limits and carrier health (:mod:`sbc.cluster.local`).
KIND_CLUSTER = 3

#: Frames read per readiness event before other callbacks get a turn.
READS_PER_TURN = 256
#: Socket buffers: a burst of forwarded messages must not be dropped at the first stall.
BUFFER_BYTES = 4 * 1024 * 1024
#: Largest frame: a SIP message over TCP may be up to the listener's max_message_size (64 KiB
#: by default) plus the header; an abstract Unix datagram carries up to the send buffer.
MAX_FRAME = 256 * 1024

Handler = Callable[[int, bytes], None]


def socket_name(group: str, index: int) -> bytes:
    """The abstract socket address of worker ``index`` of ``group``."""
    return f"\0sbc-{group}-{index}".encode()


class WorkerBus:
    """This worker's end of the bus: :meth:`on` registers a handler per kind, :meth:`send` and
    :meth:`broadcast` post frames. Handlers run on the event loop with (sender index, payload)."""

    def __init__(self, info: WorkerInfo) -> None:
        self.info = info
        self.index = info.index
        self.count = info.count
        self._handlers: dict[int, Handler] = {}
        self._names = [socket_name(info.group, i) for i in range(info.count)]
        self._sock: socket.socket | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.sent = 0
        self.received = 0
        self.dropped = 0  # frames a full or absent peer could not take
        self.rejected = 0  # frames too short or of an unknown kind

    def start(self) -> None:
        """Bind this worker's socket and start reading it (on the running loop)."""
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        try:
            sock.setblocking(False)
            for opt in (socket.SO_RCVBUF, socket.SO_SNDBUF):
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.SOL_SOCKET, opt, BUFFER_BYTES)
            sock.bind(self._names[self.index])
        except BaseException:
            sock.close()
            raise
        self._sock = sock
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(sock.fileno(), self._on_readable)

    def on(self, kind: int, handler: Handler) -> None:
        """Run ``handler(sender, payload)`` for every frame of ``kind``."""
        self._handlers[kind] = handler

    def send(self, to: int, kind: int, payload: bytes) -> bool:
        """Post one frame to worker ``to``; ``False`` (counted) when it could not be queued."""
        if self._sock is None or to == self.index:
            return False
        try:
            self._sock.sendto(bytes((kind, self.index)) + payload, self._names[to])
        except OSError as e:  # EAGAIN: its queue is full; ECONNREFUSED/ENOENT: it is restarting
            self.dropped += 1
            log.debug("bus: frame to worker %d dropped: %s", to, e)
            return False
        self.sent += 1
        return True

    def broadcast(self, kind: int, payload: bytes) -> int:
        """Post one frame to every other worker; returns how many took it."""
        return sum(self.send(i, kind, payload) for i in range(self.count) if i != self.index)

    def _on_readable(self) -> None:
        assert self._sock is not None
        for _ in range(READS_PER_TURN):
            try:
                frame = self._sock.recv(MAX_FRAME)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as e:
                log.debug("bus: receive error: %s", e)
                return
            handler = self._handlers.get(frame[0]) if len(frame) >= 2 else None
            if handler is None:
                self.rejected += 1
                continue
            self.received += 1
            try:
                handler(frame[1], frame[2:])
            except Exception:  # one bad frame never stops the bus
                log.exception("bus: handler for kind %d failed", frame[0])

    def close(self) -> None:
        """Stop reading and close the socket; idempotent."""
        if self._sock is None:
            return
        if self._loop is not None:
            self._loop.remove_reader(self._sock.fileno())
        self._sock.close()
        self._sock = None
