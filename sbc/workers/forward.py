"""Frames that move SIP between workers: a message for another worker's call, and bytes for a
TCP connection another worker holds.

A worker diverts a received message whose Call-ID another worker owns
(:meth:`sbc.core.SipCore.divert`) as a :data:`~sbc.workers.bus.KIND_SIP` frame; the owner
handles it as if it had read it itself, from the same source address. Its answer for a UDP
peer leaves the owner's own socket, bound to the same address and port; for a TCP peer it must
go back over the connection the message came on, which only the receiving worker holds: a
:data:`~sbc.workers.bus.KIND_TCP_SEND` frame (the same layout) takes it there. A TCP
connection's id names its worker (:func:`sbc.transport.tcp.conn_worker`).
"""

from __future__ import annotations

import struct

from ..sip.events import Address

# transport code, port, conn id (0 = none), host length; then host and the message.
_HEAD = struct.Struct("!BHQB")
_TRANSPORTS = ("udp", "tcp", "tls")


class FrameError(ValueError):
    """A frame that is not what :func:`pack_message` makes."""


def pack_message(data: bytes, addr: Address) -> bytes:
    """A SIP message ``data`` and the address it came from (or goes to), as one frame payload."""
    host = addr.host.encode()
    return (
        _HEAD.pack(_TRANSPORTS.index(addr.transport), addr.port, addr.conn_id or 0, len(host)) + host + data
    )


def unpack_message(payload: bytes) -> tuple[bytes, Address]:
    """The inverse of :func:`pack_message`; raises :class:`FrameError` for anything else."""
    if len(payload) < _HEAD.size:
        raise FrameError("short frame")
    transport, port, conn, host_len = _HEAD.unpack_from(payload)
    start = _HEAD.size + host_len
    if transport >= len(_TRANSPORTS) or len(payload) < start:
        raise FrameError("bad frame head")
    host = payload[_HEAD.size : start].decode(errors="replace")
    return payload[start:], Address(_TRANSPORTS[transport], host, port, conn or None)
