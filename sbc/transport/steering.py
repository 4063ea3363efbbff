"""Which worker a SIP call belongs to when several workers share one UDP port.

The kernel steers each datagram to a worker with the BPF program in ``steer.bpf.c``:
``FNV-1a-32(Call-ID) % N``. This module is the same rule in Python, so that a worker can
(a) know where a call's datagrams go and (b) choose Call-IDs for the calls it originates whose
responses and in-dialog requests come back to it, and the thin wiring that puts the program on
a group of sockets. Nothing here needs root except ``steer_sockets``.
"""

from __future__ import annotations

import socket
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from sbc.transport._steer import Steering

from sbc.transport._udpio import fnv1a_32_trimmed

try:
    from sbc.transport import _steer
except ImportError:  # built only where clang and libbpf exist (setup.py)
    _steer = None

FNV_BASIS = 0x811C9DC5
FNV_PRIME = 0x01000193
# call_id_for_worker gives up after this many draws: with a fair hash the chance that a random
# Call-ID misses a given worker of N is (1 - 1/N), so 10,000 draws fail only for a broken `make`.
MAX_DRAWS = 10_000


def steering_available() -> bool:
    """True if the steering extension was built (clang and libbpf were present at build time).

    Loading the program can still fail at run time (no root / CAP_BPF, old kernel);
    ``Steering()`` raises ``OSError`` then.
    """
    return _steer is not None


def fnv1a_32(data: bytes) -> int:
    """32-bit FNV-1a of ``data``, the hash the BPF program computes."""
    h = FNV_BASIS
    for b in data:
        h = ((h ^ b) * FNV_PRIME) & 0xFFFFFFFF
    return h


def worker_for_call_id(call_id: str | bytes, n: int) -> int:
    """The worker index (0..n-1) the kernel delivers datagrams with this Call-ID to.

    A ``str`` is hashed as its UTF-8 bytes (what goes on the wire); blanks around it are
    ignored, as the BPF program trims them from the header value. The hash is
    :func:`fnv1a_32` computed in C: every message a worker receives is checked with it.
    """
    if n < 1:
        raise ValueError("n must be at least 1")
    raw = call_id.encode() if isinstance(call_id, str) else call_id
    return fnv1a_32_trimmed(raw) % n


def call_id_for_worker(index: int, n: int, make: Callable[[], str]) -> str:
    """A Call-ID from ``make`` that steers to worker ``index`` of ``n``.

    Draws until one fits (on average n draws), so the Call-IDs keep ``make``'s randomness and
    format; raises ``RuntimeError`` if ``MAX_DRAWS`` draws all miss.
    """
    if not 0 <= index < n:
        raise ValueError(f"worker {index} out of range for {n} workers")
    for _ in range(MAX_DRAWS):
        call_id = make()
        if worker_for_call_id(call_id, n) == index:
            return call_id
    raise RuntimeError(f"no Call-ID for worker {index} of {n} in {MAX_DRAWS} draws")


class Placement:
    """Which worker of how many this process is, for the identifiers it makes. A standalone
    SBC is worker 0 of 1: anything it makes is its own."""

    __slots__ = ("count", "index")

    def __init__(self, index: int = 0, count: int = 1) -> None:
        self.place(index, count)

    def place(self, index: int, count: int) -> None:
        """Become worker ``index`` of ``count``; ValueError when it is out of range."""
        if not 0 <= index < count:
            raise ValueError(f"worker {index} out of range for {count} workers")
        self.index = index
        self.count = count

    def make(self, make: Callable[[], str]) -> str:
        """An identifier from ``make`` that steers to this worker (``make()`` itself alone)."""
        return make() if self.count == 1 else call_id_for_worker(self.index, self.count, make)


#: This process's place: set once by a worker at start (``sbc.app.SbcApp``), read by everything
#: that makes Call-IDs for calls and probes this process sends, so their answers come back here.
PLACEMENT = Placement()


def place_this_process(index: int, count: int) -> None:
    """Make this process worker ``index`` of ``count`` for :data:`PLACEMENT`'s users."""
    PLACEMENT.place(index, count)


def steer_sockets(socks: Sequence[socket.socket]) -> Steering:
    """Load the steering program for ``socks`` (worker i's socket at i) and attach it.

    The sockets must be UDP, bound to the same address and port with SO_REUSEPORT. The
    returned ``Steering`` owns the program; the kernel keeps steering while the sockets live.
    """
    if _steer is None:
        raise RuntimeError("SIP steering not built (needs clang and libbpf at build time)")
    if not socks:
        raise ValueError("no sockets to steer")
    steering = _steer.Steering(len(socks))
    try:
        for index, sock in enumerate(socks):
            steering.set_worker(index, sock.fileno())
        steering.attach(socks[0].fileno())
    except BaseException:
        steering.close()
        raise
    return steering
