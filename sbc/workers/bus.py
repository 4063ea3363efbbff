"""Datagrams between the workers of one ``sbc run --workers N``.

Every pair of workers shares one connected Unix datagram socket pair, made by the supervisor
(:func:`socket_mesh`) and inherited by both (:attr:`sbc.workers.WorkerInfo.peers`). Connected
pairs, not one named socket per worker: the kernel limits the queue of an unconnected datagram
socket to ``net.unix.max_dgram_qlen`` frames (10 by default), far too few for a worker that
pauses for a moment; a connected pair is limited only by its buffer, in bytes. The supervisor
keeps its copies open, so frames for a worker that is restarting wait for it.

A frame is one byte of kind and the payload. Sends never block: when a pair's buffer is full the
frame is dropped and counted, as a UDP datagram would be (a SIP peer over UDP retransmits; the
cluster state is re-sent in full every refresh), so one stalled worker cannot stall the others.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Callable, Sequence

from . import WorkerInfo

log = logging.getLogger(__name__)

#: A SIP message that reached the wrong worker, handed to the one that owns its Call-ID
#: (payload: :func:`sbc.workers.forward.pack_message`).
KIND_SIP = 1
#: Bytes to write on a TCP connection another worker holds (the same payload layout).
KIND_TCP_SEND = 2
#: Cluster state between workers: limits and carrier health (:mod:`sbc.cluster.local`).
KIND_CLUSTER = 3

#: Frames read from one peer per readiness event before other callbacks get a turn.
READS_PER_TURN = 256
#: Socket buffers: a burst of handed-over messages must survive a worker's short stall.
BUFFER_BYTES = 4 * 1024 * 1024
#: Largest frame: a SIP message over TCP may be up to max_message_size (64 KiB by default).
MAX_FRAME = 256 * 1024

Handler = Callable[[int, bytes], None]


def socket_mesh(count: int) -> list[list[socket.socket | None]]:
    """One connected datagram socket pair per pair of workers: ``mesh[i][j]`` is worker i's end
    toward worker j (``None`` on the diagonal). Non-blocking, with large buffers."""
    mesh: list[list[socket.socket | None]] = [[None] * count for _ in range(count)]
    for i in range(count):
        for j in range(i + 1, count):
            a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
            for sock in (a, b):
                sock.setblocking(False)
                for opt in (socket.SO_RCVBUF, socket.SO_SNDBUF):
                    with contextlib.suppress(OSError):  # capped by the kernel, not fatal
                        sock.setsockopt(socket.SOL_SOCKET, opt, BUFFER_BYTES)
            mesh[i][j], mesh[j][i] = a, b
    return mesh


class WorkerBus:
    """This worker's ends of the mesh: :meth:`on` registers a handler per kind, :meth:`send` and
    :meth:`broadcast` post frames. Handlers run on the event loop with (sender index, payload).

    ``socks`` (index = peer) are the sockets to use; by default those of ``info.peers``.
    """

    def __init__(self, info: WorkerInfo, socks: Sequence[socket.socket | None] | None = None) -> None:
        self.info = info
        self.index = info.index
        self.count = info.count
        if socks is None:
            socks = [socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM, fileno=fd) if fd >= 0 else None
                     for fd in info.peers]  # fmt: skip
        if len(socks) != info.count or socks[info.index] is not None:
            raise ValueError(f"worker {info.index} of {info.count} needs one socket per other worker")
        self._socks = list(socks)
        self._handlers: dict[int, Handler] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self.sent = 0
        self.received = 0
        self.dropped = 0  # frames a full pair could not take
        self.rejected = 0  # empty frames and frames of an unknown kind

    def start(self) -> None:
        """Start reading (on the running loop); idempotent. Frames sent before wait in the
        sockets: a worker starts reading once it is ready for calls, so a message handed to it
        while it loads provisioning waits instead of finding nobody."""
        if self._loop is not None:
            return
        self._loop = asyncio.get_running_loop()
        for peer, sock in enumerate(self._socks):
            if sock is not None:
                sock.setblocking(False)
                self._loop.add_reader(sock.fileno(), self._on_readable, peer, sock)

    def on(self, kind: int, handler: Handler) -> None:
        """Run ``handler(sender, payload)`` for every frame of ``kind``."""
        self._handlers[kind] = handler

    def send(self, to: int, kind: int, payload: bytes) -> bool:
        """Post one frame to worker ``to``; ``False`` (counted) when it could not be queued."""
        sock = self._socks[to] if 0 <= to < self.count else None
        if sock is None:
            return False
        try:
            sock.send(bytes((kind,)) + payload)
        except OSError as e:  # EAGAIN: the pair's buffer is full
            self.dropped += 1
            log.debug("bus: frame to worker %d dropped: %s", to, e)
            return False
        self.sent += 1
        return True

    def broadcast(self, kind: int, payload: bytes) -> int:
        """Post one frame to every other worker; returns how many took it."""
        return sum(self.send(i, kind, payload) for i in range(self.count) if i != self.index)

    def _on_readable(self, peer: int, sock: socket.socket) -> None:
        for _ in range(READS_PER_TURN):
            try:
                frame = sock.recv(MAX_FRAME)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as e:
                log.debug("bus: receive error from worker %d: %s", peer, e)
                return
            handler = self._handlers.get(frame[0]) if frame else None
            if handler is None:
                self.rejected += 1
                continue
            self.received += 1
            try:
                handler(peer, frame[1:])
            except Exception:  # one bad frame never stops the bus
                log.exception("bus: handler for kind %d failed", frame[0])

    def close(self) -> None:
        """Stop reading and close this worker's sockets; idempotent."""
        for sock in self._socks:
            if sock is None or sock.fileno() < 0:
                continue
            if self._loop is not None:
                self._loop.remove_reader(sock.fileno())
            sock.close()
        self._loop = None
