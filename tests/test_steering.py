"""SIP call steering across workers sharing a UDP port (sbc/transport/steer.bpf.c, steering.py).

The pure tests pin the hash the kernel and Python must agree on. The socket tests load the real
BPF program and send from ONE client address: the kernel's own reuseport hash would put all of
it on one socket, so every datagram that lands where ``worker_for_call_id`` says was steered by
the Call-ID, and the ones without a Call-ID show where the kernel's fallback lands.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import os
import secrets
import selectors
import socket
from collections.abc import Iterator

import pytest

from sbc.transport import steering
from sbc.transport.steering import call_id_for_worker, fnv1a_32, worker_for_call_id

# --- the hash -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "expected"),
    [(b"", 0x811C9DC5), (b"a", 0xE40C292C), (b"foobar", 0xBF9CF968)],  # FNV reference vectors
)
def test_fnv1a_reference_vectors(data: bytes, expected: int) -> None:
    assert fnv1a_32(data) == expected


def test_worker_for_call_id_str_equals_bytes_and_is_the_hash_mod_n() -> None:
    for _ in range(200):
        cid = f"{secrets.token_hex(8)}@10.0.0.1"
        for n in range(1, 6):
            w = worker_for_call_id(cid, n)
            assert w == worker_for_call_id(cid.encode(), n) == fnv1a_32(cid.encode()) % n
            assert 0 <= w < n
    assert worker_for_call_id("é-ü@x", 7) == fnv1a_32("é-ü@x".encode()) % 7


def test_n1_is_always_worker_0_and_blanks_are_trimmed() -> None:
    assert {worker_for_call_id(secrets.token_hex(6), 1) for _ in range(100)} == {0}
    assert worker_for_call_id(" \tabc@h \t", 1000) == worker_for_call_id("abc@h", 1000)
    with pytest.raises(ValueError):
        worker_for_call_id("x", 0)


@pytest.mark.parametrize("n", [2, 3, 4])
def test_call_id_for_worker_every_index(n: int) -> None:
    for index in range(n):
        for _ in range(20):
            cid = call_id_for_worker(index, n, lambda: f"{secrets.token_hex(10)}@sbc")
            assert worker_for_call_id(cid, n) == index
            assert cid.endswith("@sbc")  # the draw keeps make()'s format


def test_call_id_for_worker_rejects_bad_index_and_gives_up() -> None:
    with pytest.raises(ValueError):
        call_id_for_worker(3, 3, lambda: "x")
    fixed = "always-the-same"
    other = (worker_for_call_id(fixed, 2) + 1) % 2
    with pytest.raises(RuntimeError):
        call_id_for_worker(other, 2, lambda: fixed)


# --- the kernel -------------------------------------------------------------------------------


@functools.cache
def _skip_reason() -> str | None:
    """Why the kernel tests cannot run here, or None (loads the program once to find out)."""
    if not steering.steering_available():
        return "sbc.transport._steer not built (needs clang and libbpf at build time)"
    if os.geteuid() != 0:
        return "loading BPF programs needs root"
    try:
        steering._steer.Steering(1).close()
    except OSError as e:
        return f"loading the BPF program failed here ({os.strerror(e.errno or 0)}): no CAP_BPF or no kernel support"
    return None


kernel = pytest.mark.skipif(_skip_reason() is not None, reason=_skip_reason() or "")


@contextlib.contextmanager
def _steered(n: int) -> Iterator[list[socket.socket]]:
    """A steered group of n sockets (see _group); the steering and the sockets are closed after."""
    socks = _group(n)
    try:
        steer = steering.steer_sockets(socks)
        try:
            yield socks
        finally:
            steer.close()
    finally:
        for sock in socks:
            sock.close()


def _group(n: int) -> list[socket.socket]:
    """n UDP sockets with SO_REUSEPORT on one free 127.0.0.1 port, in worker order."""
    socks: list[socket.socket] = []
    port = 0
    for _ in range(n):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        s.bind(("127.0.0.1", port))
        port = s.getsockname()[1]
        s.setblocking(False)
        socks.append(s)
    return socks


@pytest.fixture
def client() -> Iterator[socket.socket]:
    c = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    c.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 20)
    c.bind(("127.0.0.1", 0))
    yield c
    c.close()


def _exchange(client: socket.socket, socks: list[socket.socket], datagrams: list[bytes]) -> dict[bytes, int]:
    """Send each datagram (unique bytes) to the group; map each to the index that received it."""
    dest = socks[0].getsockname()
    got: dict[bytes, int] = {}
    sel = selectors.DefaultSelector()
    for i, s in enumerate(socks):
        sel.register(s, selectors.EVENT_READ, i)
    try:
        for batch in _batches(datagrams):
            for d in batch:
                client.sendto(d, dest)
            _drain(sel, got, want=len(got) + len(batch))
    finally:
        sel.close()
    assert set(got) == set(datagrams), "a datagram was lost"
    return got


def _batches(items: list[bytes]) -> Iterator[list[bytes]]:
    """Batches small enough for the receive buffers (itertools.batched is 3.12+)."""
    for i in range(0, len(items), 50):
        yield items[i : i + 50]


def _drain(sel: selectors.BaseSelector, got: dict[bytes, int], want: int) -> None:
    while len(got) < want:
        events = sel.select(timeout=2.0)
        if not events:
            return
        for key, _ in events:
            sock = key.fileobj
            assert isinstance(sock, socket.socket)
            while True:
                try:
                    data = sock.recv(65536)
                except BlockingIOError:
                    break
                assert data not in got, "datagram delivered twice"
                got[data] = key.data


def _request(call_id_line: str, body: str = "", extra: str = "") -> bytes:
    """An INVITE whose headers include ``call_id_line`` verbatim (and a unique branch)."""
    head = (
        "INVITE sip:+15551234567@sbc.example SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 10.0.0.9:5060;branch=z9hG4bK{secrets.token_hex(8)}\r\n"
        "From: <sip:a@example.com>;tag=1\r\nTo: <sip:b@example.com>\r\n"
        f"{extra}{call_id_line}"
        "CSeq: 1 INVITE\r\n"
        f"Content-Length: {len(body.encode())}\r\n\r\n"
    )
    return (head + body).encode()


def _response(call_id: str) -> bytes:
    return (
        "SIP/2.0 200 OK\r\n"
        f"Via: SIP/2.0/UDP 10.0.0.9:5060;branch=z9hG4bK{secrets.token_hex(8)}\r\n"
        f"Call-ID: {call_id}\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n"
    ).encode()


def _cid() -> str:
    return f"{secrets.token_hex(12)}@10.0.0.9"


@kernel
@pytest.mark.parametrize("n", [2, 3])
def test_kernel_steers_every_call_id_form(client: socket.socket, n: int) -> None:
    with _steered(n) as socks:
        expected: dict[bytes, int] = {}
        # Plain requests and responses with random Call-IDs.
        for _ in range(120):
            cid = _cid()
            expected[_request(f"Call-ID: {cid}\r\n")] = worker_for_call_id(cid, n)
            expected[_response(cid)] = worker_for_call_id(cid, n)
        # Header-name forms and blanks; each with its own Call-ID.
        forms = [
            "i: {}\r\n",
            "I:{}\r\n",
            "call-id: {}\r\n",
            "CALL-ID: {}\r\n",
            "cAlL-iD:{}\r\n",
            "Call-ID \t : {}\r\n",
            "i  :{}\r\n",
            "Call-ID:   \t{} \t \r\n",
            "Call-ID: {}\n",  # bare LF line end
        ]
        for form, _ in itertools.product(forms, range(8)):
            cid = _cid()
            expected[_request(form.format(cid))] = worker_for_call_id(cid, n)
        # Look-alikes before the real header must not be taken for it.
        for _ in range(20):
            cid = _cid()
            decoys = f"Subject: Call-ID: {_cid()}\r\nX-Call-ID: {_cid()}\r\nCall-Info: <x>\r\nis: {_cid()}\r\n"
            expected[_request(f"Call-ID: {cid}\r\n", extra=decoys)] = worker_for_call_id(cid, n)
        # Call-ID as the last header before the body; and a body that names another Call-ID.
        for _ in range(20):
            cid = _cid()
            last = (
                f"INVITE sip:x@y SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK{secrets.token_hex(6)}\r\n"
                f"CSeq: 1 INVITE\r\nCall-ID: {cid}\r\n\r\nv=0\r\n"
            ).encode()
            expected[last] = worker_for_call_id(cid, n)
            body = f"v=0\r\nCall-ID: {_cid()}\r\ni: {_cid()}\r\n"
            expected[_request(f"Call-ID: {cid}\r\n", body=body)] = worker_for_call_id(cid, n)
        # A non-ASCII value is hashed as its UTF-8 bytes on both sides.
        cid = f"ünï-{secrets.token_hex(4)}@h"
        expected[_request(f"Call-ID: {cid}\r\n")] = worker_for_call_id(cid, n)

        got = _exchange(client, socks, list(expected))
        wrong = [d[:80] for d, w in expected.items() if got[d] != w]
        assert not wrong, f"{len(wrong)} datagrams on the wrong worker, e.g. {wrong[:3]}"
        assert set(got.values()) == set(range(n)), "some worker got nothing"


@kernel
@pytest.mark.parametrize("n", [2, 3])
def test_kernel_falls_back_without_a_call_id_and_loses_nothing(client: socket.socket, n: int) -> None:
    with _steered(n) as socks:
        no_cid = [_request("", extra=f"X-Seq: {i}\r\n") for i in range(5)]
        # Only the head counts: a Call-ID after the blank line is body text.
        body_only = [_request("", body=f"Call-ID: {_cid()}\r\n") for _ in range(30)]
        garbage = [secrets.token_bytes(300), b"\x00" * 64 + secrets.token_bytes(8), b"i:" + os.urandom(16)]
        empty_value = [_request("Call-ID:   \r\n", extra=f"X-Seq: e{i}\r\n") for i in range(3)]
        cid = _cid()
        big = _request(f"Call-ID: {cid}\r\n", body="v" * 60_000)
        # The Call-ID beyond the first 2,048 payload bytes is not looked for: the fallback.
        late = _request(f"Call-ID: {_cid()}\r\n", extra=f"X-Pad: {'p' * 2100}\r\n", body="b" * 57_000)
        # The largest UDP/IPv4 payload, 65,507 bytes, with a Call-ID: steered.
        max_cid = _cid()
        head_len = len(_request(f"Call-ID: {max_cid}\r\n", body="m" * 60_000)) - 60_000
        largest = _request(f"Call-ID: {max_cid}\r\n", body="m" * (65_507 - head_len))
        assert len(big) > 60_000 and len(late) > 59_000 and len(largest) == 65_507
        got = _exchange(client, socks, [*no_cid, *body_only, *garbage, *empty_value, big, late, largest])

        # One client 4-tuple: the kernel's fallback hash picks the same socket every time.
        fallback = {got[d] for d in no_cid}
        assert len(fallback) == 1
        for d in [*body_only, *garbage, *empty_value, late]:
            assert got[d] in fallback, d[:60]
        assert got[big] == worker_for_call_id(cid, n)
        assert got[largest] == worker_for_call_id(max_cid, n)


@kernel
def test_steering_outlives_close_and_empty_datagram_arrives(client: socket.socket) -> None:
    socks = _group(2)
    steering.steer_sockets(socks).close()  # the attached sockets keep the program
    try:
        cids = [_cid() for _ in range(40)]
        got = _exchange(client, socks, [_request(f"i: {c}\r\n") for c in cids])
        assert [got[_request_key(got, c)] for c in cids] == [worker_for_call_id(c, 2) for c in cids]
        client.sendto(b"", socks[0].getsockname())
        sel = selectors.DefaultSelector()
        for i, s in enumerate(socks):
            sel.register(s, selectors.EVENT_READ, i)
        assert sel.select(timeout=2.0), "the empty datagram was lost"
        sel.close()
    finally:
        for s in socks:
            s.close()


def _request_key(got: dict[bytes, int], call_id: str) -> bytes:
    return next(d for d in got if f"i: {call_id}\r\n".encode() in d)


def test_steering_api_errors() -> None:
    if not steering.steering_available():
        with pytest.raises(RuntimeError):
            steering.steer_sockets([])
        return
    with pytest.raises(ValueError):
        steering.steer_sockets([])
    if _skip_reason() is None:
        st = steering._steer.Steering(2)
        with pytest.raises(IndexError):
            st.set_worker(2, 0)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as unbound, pytest.raises(OSError):
            st.set_worker(0, unbound.fileno())  # not in a reuseport group
        st.close()
        st.close()
        with pytest.raises(ValueError):
            st.attach(0)
