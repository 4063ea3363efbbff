"""Ports for the SBCs, SIPp instances and peers that tests and benchmarks start on loopback.

Binding port 0 and passing the number on is a race: the port is free only until that socket
closes, and the kernel's next ephemeral bind (any process's client socket) or a running SBC's
relay pre-binding spare pairs in its RTP range can take it before the intended owner binds it.
CI saw exactly that: an SBC's relay took the SIP port it was started with ("cannot start:
[Errno 98] Address already in use").  So ports come from a range the kernel never picks
ephemerally (below ``net.ipv4.ip_local_port_range``, 32768-60999 by default) and below the
SBC's default RTP range (20000-39999): 10000-19999, walked by a per-process counter that starts
at an offset derived from the pid (two runs at once seldom meet), each port checked free before
it is handed out.
"""

from __future__ import annotations

import os
import socket

#: Where handed-out ports live: outside the ephemeral range and every SBC's default RTP range.
FIRST, LAST = 10000, 19999
_SPAN = LAST - FIRST + 1
_cursor = (os.getpid() * 7919) % _SPAN  # offset of the next port to hand out


def _family(ip: str) -> int:
    return socket.AF_INET6 if ":" in ip else socket.AF_INET


def _all_free(ip: str, ports: range, kinds: tuple[int, ...]) -> bool:
    """True if every port in ``ports`` can be bound on ``ip`` with every socket kind in ``kinds``."""
    socks: list[socket.socket] = []
    try:
        for port in ports:
            for kind in kinds:
                s = socket.socket(_family(ip), kind)
                socks.append(s)
                s.bind((ip, port))
        return True
    except OSError:
        return False
    finally:
        for s in socks:
            s.close()


def _take(ip: str, count: int, kinds: tuple[int, ...]) -> int:
    """The next port P (a multiple of ``count``) with P..P+count-1 free on ``ip``.  One cursor
    for every size, so a port is handed out once per lap of the range whatever asked for it."""
    global _cursor
    for _ in range(_SPAN // count):
        offset = -(-_cursor // count) * count % _SPAN  # rounded up to a multiple of count
        _cursor = offset + count
        if offset + count <= _SPAN and _all_free(ip, range(FIRST + offset, FIRST + offset + count), kinds):
            return FIRST + offset
    raise RuntimeError(f"no free port in {FIRST}-{LAST} on {ip}")


def free_port(ip: str = "127.0.0.1") -> int:
    """A port free on ``ip`` (IPv4 or IPv6) for both UDP and TCP, which nobody else is handed."""
    return _take(ip, 1, (socket.SOCK_DGRAM, socket.SOCK_STREAM))


def free_media_port(ip: str = "127.0.0.1") -> int:
    """An even port P with P..P+3 free for UDP on ``ip``: SIPp's -mp binds P (audio) and P+2
    (video), and RTCP would use the odd ones."""
    return _take(ip, 4, (socket.SOCK_DGRAM,))
