"""A network namespace joined to this one by a veth pair, for tests of paths that loopback
cannot show (packets leaving through a real interface).

Addresses come from TEST-NET-2 (RFC 5737) and exist only on the pair this test made: the host
side is HOST_IP, the namespace side PEER_IP (TEST-NET-1 is this VM's own network; a host
that already routes the block makes available() say so rather than collide). Sockets "in" the namespace are made by switching
the calling thread into it for the socket() call (setns affects one thread; a socket stays in
the namespace it was created in). Needs root; everything is removed on exit.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import socket
import subprocess
from collections.abc import Iterator

HOST_IP = "198.51.100.1"
PEER_IP = "198.51.100.2"
NET = "198.51.100.0/24"
PREFIX = 24
CLONE_NEWNET = 0x40000000  # <sched.h>

_libc = ctypes.CDLL(None, use_errno=True)


def available() -> str | None:
    """None if a veth namespace can be made here, else why not."""
    if os.geteuid() != 0:
        return "needs root"
    if not shutil.which("ip"):
        return "no ip command (iproute2)"
    routes = subprocess.run(["ip", "-4", "route", "show", "table", "all"], capture_output=True, text=True)
    if NET.rsplit(".", 1)[0] + "." in routes.stdout:
        return f"this host already routes {NET}"
    return None


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True)


def _setns(fd: int) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


class PeerNamespace:
    """The namespace: its name, the host-side interface, and a way to make sockets in it."""

    def __init__(self, name: str, host_if: str) -> None:
        self.name = name
        self.host_if = host_if

    def udp_socket(self, port: int = 0) -> socket.socket:
        """A UDP socket bound to PEER_IP:port inside the namespace."""
        here = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
        there = os.open(f"/run/netns/{self.name}", os.O_RDONLY)
        try:
            _setns(there)
            try:
                s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            finally:
                _setns(here)
        finally:
            os.close(here)
            os.close(there)
        s.bind((PEER_IP, port))
        return s


@contextlib.contextmanager
def peer_namespace() -> Iterator[PeerNamespace]:
    """Make the namespace and veth pair, yield it, tear both down."""
    tag = f"{os.getpid() % 100000}"
    name, host_if, peer_if = f"sbct{tag}", f"sbch{tag}", f"sbcp{tag}"
    _ip("netns", "add", name)
    try:
        _ip("link", "add", host_if, "type", "veth", "peer", "name", peer_if)
        _ip("link", "set", peer_if, "netns", name)
        _ip("addr", "add", f"{HOST_IP}/{PREFIX}", "dev", host_if)
        _ip("link", "set", host_if, "up")
        _ip("-n", name, "addr", "add", f"{PEER_IP}/{PREFIX}", "dev", peer_if)
        _ip("-n", name, "link", "set", peer_if, "up")
        _ip("-n", name, "link", "set", "lo", "up")
        yield PeerNamespace(name, host_if)
    finally:
        subprocess.run(["ip", "link", "del", host_if], capture_output=True, check=False)
        subprocess.run(["ip", "netns", "del", name], capture_output=True, check=False)
