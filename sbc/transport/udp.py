"""SIP over UDP: one asyncio datagram endpoint per listener."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Callable

from ..config import ListenSpec
from ..sip.events import Address

log = logging.getLogger(__name__)

# A SIP datagram larger than this cannot be valid on UDP (RFC 3261 §18.1.1 keeps UDP messages
# under the path MTU; 65535 is the IP maximum), and the kernel never delivers more.
MAX_DATAGRAM = 65535
# Socket buffers: a burst of 1,500 INVITEs/s with retransmissions needs far more than the
# kernel's default 208 KiB; the kernel caps this at net.core.rmem_max (see deploy/).
SOCKET_BUFFER_BYTES = 4 * 1024 * 1024

OnMessage = Callable[[bytes, Address], None]


class UdpListener(asyncio.DatagramProtocol):
    """Receives datagrams for the SIP core and sends what it asks to send."""

    def __init__(self, spec: ListenSpec, on_message: OnMessage) -> None:
        self.spec = spec
        self.on_message = on_message
        self.transport: asyncio.DatagramTransport | None = None
        self.local: tuple[str, int] = (spec.host, spec.port)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        sock: socket.socket = transport.get_extra_info("socket")
        for opt in (socket.SO_RCVBUF, socket.SO_SNDBUF):
            with contextlib.suppress(OSError):  # capped by the kernel, not fatal
                sock.setsockopt(socket.SOL_SOCKET, opt, SOCKET_BUFFER_BYTES)
        self.local = sock.getsockname()[:2]

    def datagram_received(self, data: bytes, addr: tuple) -> None:
        try:
            self.on_message(data, Address("udp", addr[0], addr[1], None))
        except Exception:  # one bad datagram never stops the listener
            log.exception("unhandled error processing a datagram from %s", addr)

    def error_received(self, exc: Exception) -> None:
        # ICMP port unreachable and friends: the transaction layer's timers deal with it.
        log.debug("udp error on %s: %s", self.spec, exc)

    def send(self, data: bytes, host: str, port: int) -> None:
        """Send one datagram; never raises (a closed socket is logged)."""
        if self.transport is not None:
            self.transport.sendto(data, (host, port))


async def start_udp(spec: ListenSpec, on_message: OnMessage) -> UdpListener:
    """Bind a UDP listener for ``spec``. Raises OSError when the address cannot be bound."""
    loop = asyncio.get_running_loop()
    family = socket.AF_INET6 if ":" in spec.host else socket.AF_INET
    _, proto = await loop.create_datagram_endpoint(
        lambda: UdpListener(spec, on_message), local_addr=(spec.host, spec.port), family=family
    )
    return proto
