"""The UDP listener's queueing-delay signal on a real loopback socket."""

from __future__ import annotations

import asyncio
import socket

from sbc.config import ListenSpec
from sbc.transport.udp import bind_udp, start_udp


async def _listen(sock: socket.socket, got: list[bytes]):
    spec = ListenSpec("udp", "127.0.0.1", sock.getsockname()[1])
    return await start_udp(spec, lambda data, source: got.append(data), sock=sock)


async def test_datagrams_queued_before_listening_count_only_the_time_since() -> None:
    """A worker that starts on a socket already taking traffic (sbc run --workers N) reads a
    backlog that waited for the process, not for a busy loop: not overload."""
    # Another worker's listener: once any socket asks for receive timestamps the kernel stamps
    # every datagram on arrival, so the backlog below carries its arrival time.
    other = await _listen(bind_udp(ListenSpec("udp", "127.0.0.1", 0)), [])
    sock = bind_udp(ListenSpec("udp", "127.0.0.1", 0))
    peer = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        for i in range(5):
            peer.sendto(b"OPTIONS %d" % i, sock.getsockname())
        await asyncio.sleep(0.4)  # the backlog waits before anyone listens
        got: list[bytes] = []
        listener = await _listen(sock, got)
        for _ in range(100):
            if len(got) == 5:
                break
            await asyncio.sleep(0.01)
        assert len(got) == 5
        assert listener.take_queue_delay() < 0.3  # not the 0.4 s spent before listening
        # Once listening, a datagram left unread does count whole.
        listener.loop.remove_reader(sock.fileno())
        peer.sendto(b"OPTIONS late", sock.getsockname())
        await asyncio.sleep(0.3)
        listener.loop.add_reader(sock.fileno(), listener._on_readable)
        for _ in range(100):
            if len(got) == 6:
                break
            await asyncio.sleep(0.01)
        assert len(got) == 6
        assert listener.take_queue_delay() >= 0.25
        listener.close()
    finally:
        peer.close()
        other.close()
