"""The relay engine with real UDP sockets on 127.0.0.1 as the two peers."""

from __future__ import annotations

import gc
import itertools
import os
import select
import socket
import struct
import time
from collections.abc import Iterator

import pytest

from rtp_relay_ext import (
    KERNEL_ENV,
    LEG_A,
    LEG_B,
    TIMING_BOUNDS_US,
    DtmfEvent,
    MediaTimeout,
    PoolExhausted,
    RelayEngine,
    RelayError,
    SessionNotFound,
    io_uring_available,
    io_uring_status,
    now,
)

HOST = "127.0.0.1"
RECV_TIMEOUT = 2.0  # generous for a loaded 2-core CI machine
# Each test gets its own port block so quarantined ports of one test never meet another.
PORT_BLOCK = 64
_blocks = itertools.count(0)
PORT_BASE = 41000


def rtp(seq: int, ts: int = 0, *, pt: int = 0, ssrc: int = 7, payload: bytes = b"\xd5" * 160) -> bytes:
    return struct.pack("!BBHII", 0x80, pt, seq & 0xFFFF, ts & 0xFFFFFFFF, ssrc) + payload


class Peer:
    """A UDP endpoint standing in for a phone or gateway."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((HOST, 0))
        self.sock.settimeout(RECV_TIMEOUT)

    @property
    def addr(self) -> tuple[str, int]:
        return self.sock.getsockname()

    def send(self, data: bytes, port: int) -> None:
        self.sock.sendto(data, (HOST, port))

    def recv(self) -> tuple[bytes, tuple[str, int]]:
        return self.sock.recvfrom(4096)

    def nothing(self, wait: float = 0.3) -> bool:
        """True if no datagram arrives within `wait` seconds."""
        r, _, _ = select.select([self.sock], [], [], wait)
        return not r

    def close(self) -> None:
        self.sock.close()


def port_range() -> tuple[int, int]:
    base = PORT_BASE + next(_blocks) * PORT_BLOCK
    return base, base + PORT_BLOCK - 1


def _kernel_status() -> str | None:
    """None if the kernel fast path can attach here, else why not."""
    lo, hi = port_range()
    with RelayEngine(HOST, lo, hi, start=False, kernel="auto") as e:
        return None if e.kernel else e.kernel_status


KERNEL_STATUS = _kernel_status()
_no_uring = pytest.mark.skipif(not io_uring_available(), reason=f"io_uring: {io_uring_status()}")
_no_kernel = pytest.mark.skipif(KERNEL_STATUS is not None, reason=f"kernel path: {KERNEL_STATUS}")

# Every behaviour test runs on both I/O backends, each with the kernel fast path off
# (every packet through the workers) and on (latched RTP relayed by the BPF program);
# what the build or the kernel does not offer is skipped with the reason.
BACKENDS = [
    pytest.param(("epoll", "off"), id="epoll"),
    pytest.param(("io_uring", "off"), id="io_uring", marks=_no_uring),
    pytest.param(("epoll", "on"), id="epoll-kernel", marks=_no_kernel),
    pytest.param(("io_uring", "on"), id="io_uring-kernel", marks=[_no_uring, _no_kernel]),
]


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """The I/O backend's name; the kernel mode reaches every engine the test makes through
    RTP_RELAY_KERNEL."""
    name, kernel = request.param
    monkeypatch.setenv(KERNEL_ENV, kernel)
    return name


@pytest.fixture
def kernel(backend: str) -> bool:
    """True when this run of the test has the kernel fast path on."""
    return os.environ[KERNEL_ENV] == "on"


@pytest.fixture
def engine(backend: str) -> Iterator[RelayEngine]:
    lo, hi = port_range()
    e = RelayEngine(HOST, lo, hi, quarantine=30.0, media_timeout=0, hold_timeout=0, backend=backend)
    assert e.backend == backend
    yield e
    e.close()


@pytest.fixture
def peers() -> Iterator[tuple[Peer, Peer]]:
    a, b = Peer(), Peer()
    yield a, b
    a.close()
    b.close()


def wait_for(cond, timeout: float = RECV_TIMEOUT) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.01)
    return cond()


def connected(engine: RelayEngine, a: Peer, b: Peer) -> tuple[int, int, int]:
    """A new session with leg A pointed at ``a`` and leg B at ``b``: (id, A's RTP port, B's)."""
    sid = engine.allocate()
    (a_rtp, _), (b_rtp, _) = engine.ports(sid)
    engine.set_peer(sid, LEG_A, a.addr)
    engine.set_peer(sid, LEG_B, b.addr)
    return sid, a_rtp, b_rtp


def test_both_directions_relayed_from_relay_ports(engine: RelayEngine, peers: tuple[Peer, Peer]) -> None:
    a, b = peers
    sid, a_rtp, b_rtp = connected(engine, a, b)
    for seq in range(20):
        a.send(rtp(seq, seq * 160), a_rtp)
        data, src = b.recv()
        assert data == rtp(seq, seq * 160)
        assert src == (HOST, b_rtp)  # B sees the relay's B port, never A's address
        b.send(rtp(seq, seq * 160, ssrc=9), b_rtp)
        data, src = a.recv()
        assert data == rtp(seq, seq * 160, ssrc=9)
        assert src == (HOST, a_rtp)
    info = engine.stats(sid)
    assert info["a_to_b"]["packets"] == 20
    assert info["a_to_b"]["forwarded"] == 20
    assert info["b_to_a"]["packets"] == 20
    assert info["a_to_b"]["lost"] == 0
    assert info["a_to_b"]["latched_rtp"] == a.addr
    assert engine.counters()["packets_out"] == 40


def test_free_with_stats_only_returns_the_stream_statistics(engine: RelayEngine, peers: tuple[Peer, Peer]) -> None:
    """free(stats_only=True) gives each direction's statistics as stats() does, without the
    addresses and timers: what a CDR keeps."""
    a, b = peers
    sid, a_rtp, _ = connected(engine, a, b)
    for seq in range(5):
        a.send(rtp(seq, seq * 160), a_rtp)
        b.recv()
    assert wait_for(lambda: engine.stats(sid)["a_to_b"]["forwarded"] == 5)
    full = engine.stats(sid)
    final = engine.free(sid, stats_only=True)
    assert set(final) == {"a_to_b", "b_to_a"}
    for direction in ("a_to_b", "b_to_a"):
        stats = final[direction]
        assert "latched_rtp" not in stats and "rtp_port" not in stats
        for key in ("packets", "bytes", "lost", "jitter_ms", "mos", "dtmf_packets", "forwarded",
                    "kernel_forwarded"):  # fmt: skip
            assert stats[key] == full[direction][key], (direction, key)
    assert final["a_to_b"]["packets"] == 5 and final["b_to_a"]["packets"] == 0
    with pytest.raises(SessionNotFound):
        engine.free(sid, stats_only=True)


def test_ports_are_even_odd_pairs_in_range(engine: RelayEngine) -> None:
    sid = engine.allocate()
    for rtp_port, rtcp_port in engine.ports(sid):
        assert rtp_port % 2 == 0
        assert rtcp_port == rtp_port + 1
        assert engine.port_min <= rtp_port < rtcp_port <= engine.port_max


def test_latches_to_real_source_behind_nat(engine: RelayEngine, peers: tuple[Peer, Peer]) -> None:
    a, b = peers
    nat = Peer()  # A's packets really come from here (a NAT mapping), not the SDP address
    try:
        sid = engine.allocate()
        (a_rtp, _), (b_rtp, _) = engine.ports(sid)
        engine.set_peer(sid, LEG_A, a.addr)
        engine.set_peer(sid, LEG_B, b.addr)
        nat.send(rtp(1), a_rtp)
        assert b.recv()[0] == rtp(1)
        b.send(rtp(1, ssrc=9), b_rtp)
        assert nat.recv()[0] == rtp(1, ssrc=9)  # returned to the learned address
        assert a.nothing()
        assert engine.stats(sid)["a_to_b"]["latched_rtp"] == nat.addr
    finally:
        nat.close()


def test_unknown_source_after_latch_dropped_and_counted(
    engine: RelayEngine, peers: tuple[Peer, Peer]
) -> None:
    a, b = peers
    intruder = Peer()
    try:
        sid = engine.allocate()
        (a_rtp, _), _ = engine.ports(sid)
        engine.set_peer(sid, LEG_A, a.addr)
        engine.set_peer(sid, LEG_B, b.addr)
        a.send(rtp(1), a_rtp)
        b.recv()
        for seq in range(5):
            intruder.send(rtp(100 + seq), a_rtp)
        assert b.nothing()
        assert wait_for(lambda: engine.stats(sid)["a_to_b"]["unknown_source"] == 5)
        assert engine.stats(sid)["a_to_b"]["packets"] == 1
    finally:
        intruder.close()


def test_strict_mode_accepts_only_signalled_address(engine: RelayEngine, peers: tuple[Peer, Peer]) -> None:
    a, b = peers
    other = Peer()
    try:
        sid = engine.allocate()
        (a_rtp, _), _ = engine.ports(sid)
        engine.set_peer(sid, LEG_A, a.addr, strict=True)
        engine.set_peer(sid, LEG_B, b.addr)
        other.send(rtp(1), a_rtp)  # would latch in symmetric mode
        assert b.nothing()
        a.send(rtp(2), a_rtp)
        assert b.recv()[0] == rtp(2)
        st = engine.stats(sid)["a_to_b"]
        assert st["unknown_source"] == 1
        assert st["strict"] is True
    finally:
        other.close()


def test_no_destination_until_other_leg_known(engine: RelayEngine, peers: tuple[Peer, Peer]) -> None:
    a, b = peers
    sid = engine.allocate()
    (a_rtp, _), (b_rtp, _) = engine.ports(sid)
    engine.set_peer(sid, LEG_A, a.addr)
    a.send(rtp(1), a_rtp)
    assert wait_for(lambda: engine.stats(sid)["a_to_b"]["no_destination"] == 1)
    engine.set_peer(sid, LEG_B, b.addr)
    a.send(rtp(2), a_rtp)
    assert b.recv()[0] == rtp(2)


def test_reinvite_moves_peer(engine: RelayEngine, peers: tuple[Peer, Peer]) -> None:
    a, b = peers
    c = Peer()  # B re-INVITEs to a new media address
    try:
        sid = engine.allocate()
        (a_rtp, _), (b_rtp, _) = engine.ports(sid)
        engine.set_peer(sid, LEG_A, a.addr)
        engine.set_peer(sid, LEG_B, b.addr)
        b.send(rtp(1), b_rtp)
        a.recv()
        a.send(rtp(1), a_rtp)
        assert b.recv()[0] == rtp(1)

        engine.set_peer(sid, LEG_B, c.addr)
        a.send(rtp(2), a_rtp)  # before C sends anything: goes to the new signalled address
        assert c.recv()[0] == rtp(2)
        assert b.nothing()
        c.send(rtp(50, ssrc=3), b_rtp)
        assert a.recv()[0] == rtp(50, ssrc=3)
        b.send(rtp(2), b_rtp)  # the old address is no longer the latched source
        assert a.nothing()
        st = engine.stats(sid)["b_to_a"]
        assert st["latched_rtp"] == c.addr
        assert st["unknown_source"] == 1
    finally:
        c.close()


def test_rtcp_relayed_between_rtcp_ports(engine: RelayEngine) -> None:
    a_rtp_sock, b_rtp_sock = Peer(), Peer()
    # RTCP peers on explicit addresses (SDP a=rtcp)
    a_rtcp_sock, b_rtcp_sock = Peer(), Peer()
    try:
        sid = engine.allocate()
        (_, a_rtcp), (_, b_rtcp) = engine.ports(sid)
        engine.set_peer(sid, LEG_A, a_rtp_sock.addr, a_rtcp_sock.addr)
        engine.set_peer(sid, LEG_B, b_rtp_sock.addr, b_rtcp_sock.addr)
        sr = struct.pack("!BBHI", 0x80, 200, 6, 7) + b"\x00" * 20
        a_rtcp_sock.send(sr, a_rtcp)
        data, src = b_rtcp_sock.recv()
        assert data == sr
        assert src == (HOST, b_rtcp)
        assert engine.stats(sid)["a_to_b"]["rtcp_packets"] == 1
        assert engine.stats(sid)["a_to_b"]["signalled_rtcp"] == a_rtcp_sock.addr
    finally:
        for p in (a_rtp_sock, b_rtp_sock, a_rtcp_sock, b_rtcp_sock):
            p.close()


def test_rtcp_mux_on_one_side(engine: RelayEngine, peers: tuple[Peer, Peer]) -> None:
    a, b = peers  # A multiplexes (RFC 5761), B uses separate RTCP on port + 1
    b_rtcp = Peer()
    try:
        sid = engine.allocate()
        (a_rtp, _), (b_rtp_port, b_rtcp_port) = engine.ports(sid)
        engine.set_peer(sid, LEG_A, a.addr, rtcp_mux=True)
        engine.set_peer(sid, LEG_B, b.addr, b_rtcp.addr)
        sr = struct.pack("!BBHI", 0x80, 200, 6, 7) + b"\x00" * 20
        a.send(sr, a_rtp)  # RTCP on A's RTP port
        data, src = b_rtcp.recv()
        assert (data, src) == (sr, (HOST, b_rtcp_port))
        rr = struct.pack("!BBHI", 0x80, 201, 1, 9)
        b_rtcp.send(rr, b_rtcp_port)  # B's RTCP comes back muxed on A's RTP flow
        data, src = a.recv()
        assert (data, src) == (rr, (HOST, a_rtp))
        a.send(rtp(1), a_rtp)
        assert b.recv()[0] == rtp(1)
        st = engine.stats(sid)["a_to_b"]
        assert st["rtcp_packets"] == 1
        assert st["packets"] == 1
    finally:
        b_rtcp.close()


def test_loss_counted_on_live_stream(engine: RelayEngine, peers: tuple[Peer, Peer]) -> None:
    a, b = peers
    sid = engine.allocate()
    (a_rtp, _), _ = engine.ports(sid)
    engine.set_peer(sid, LEG_A, a.addr)
    engine.set_peer(sid, LEG_B, b.addr)
    sent = [s for s in range(50) if s not in (10, 11, 30)]
    for s in sent:
        a.send(rtp(s, s * 160), a_rtp)
        b.recv()
    st = engine.stats(sid)["a_to_b"]
    assert st["lost"] == 3
    assert st["expected"] == 50
    assert 1.0 < st["mos"] < 4.4


def test_dtmf_reported_once_as_event(engine: RelayEngine, peers: tuple[Peer, Peer]) -> None:
    a, b = peers
    sid = engine.allocate(dtmf_pt=101)
    (a_rtp, _), _ = engine.ports(sid)
    engine.set_peer(sid, LEG_A, a.addr)
    engine.set_peer(sid, LEG_B, b.addr)
    for seq, (dur, end) in enumerate(((160, False), (320, False), (480, True), (480, True), (480, True))):
        body = struct.pack("!BBH", 9, (0x80 if end else 0) | 12, dur)
        a.send(rtp(seq, 16000, pt=101, payload=body), a_rtp)
        b.recv()  # passed through to the other side
    r, _, _ = select.select([engine.events_fd], [], [], RECV_TIMEOUT)
    assert r, "eventfd did not become readable"
    events = engine.poll_events()
    assert events == [
        DtmfEvent(
            session_id=sid,
            leg=LEG_A,
            digit="9",
            event=9,
            duration_ms=60.0,
            volume=12,
            end_seen=True,
            at=events[0].at,
        )
    ]
    assert engine.poll_events() == []


def test_media_timeout_reported_once(backend: str) -> None:
    lo, hi = port_range()
    with RelayEngine(HOST, lo, hi, media_timeout=0.3, hold_timeout=0, backend=backend) as e:
        quiet = e.allocate()
        held = e.allocate(hold_timeout=30.0)
        e.set_hold(held, True)
        deadline = time.monotonic() + 3.0
        got: list = []
        while time.monotonic() < deadline and not got:
            select.select([e.events_fd], [], [], 0.2)
            got += e.poll_events()
        assert len(got) == 1
        ev = got[0]
        assert isinstance(ev, MediaTimeout)
        assert ev.session_id == quiet
        assert ev.idle >= 0.3
        assert not ev.held
        time.sleep(0.3)
        assert e.poll_events() == []  # once, not every scan


def test_held_session_uses_hold_timeout(backend: str) -> None:
    lo, hi = port_range()
    with RelayEngine(HOST, lo, hi, media_timeout=30.0, hold_timeout=0.2, backend=backend) as e:
        sid = e.allocate()
        time.sleep(0.4)
        assert e.poll_events() == []
        e.set_hold(sid, True)
        assert wait_for(lambda: any(isinstance(x, MediaTimeout) and x.held for x in e.poll_events()))


def test_restart_idle_counts_the_timeout_afresh(backend: str) -> None:
    """A call that rang silently past the timeout, then answered: the clock restarts at the
    answer, and a timeout already reported is reported again if the silence goes on."""
    lo, hi = port_range()
    with RelayEngine(HOST, lo, hi, media_timeout=0.3, hold_timeout=0, backend=backend) as e:
        sid = e.allocate()
        assert wait_for(lambda: any(isinstance(x, MediaTimeout) for x in e.poll_events()))
        answered = time.monotonic()
        e.restart_idle(sid)
        mark = now()
        assert e.sessions_idle_since(mark - 0.1) == []  # active as of the restart
        assert wait_for(lambda: any(isinstance(x, MediaTimeout) for x in e.poll_events()))
        assert time.monotonic() - answered >= 0.3
        e.free(sid)
        with pytest.raises(SessionNotFound):
            e.restart_idle(sid)


def test_hold_change_restarts_the_idle_clock(backend: str) -> None:
    """Resumed after a silent hold longer than the active timeout: not timed out at once."""
    lo, hi = port_range()
    with RelayEngine(HOST, lo, hi, media_timeout=0.4, hold_timeout=30.0, backend=backend) as e:
        sid = e.allocate()
        e.set_hold(sid, True)
        time.sleep(0.6)
        assert e.poll_events() == []
        resumed = time.monotonic()
        e.set_hold(sid, False)
        time.sleep(0.2)
        assert e.poll_events() == []  # 0.8 s silent in all, but only 0.2 s since the resume
        assert wait_for(lambda: any(isinstance(x, MediaTimeout) and not x.held for x in e.poll_events()))
        assert time.monotonic() - resumed >= 0.4


def test_sessions_idle_since(engine: RelayEngine, peers: tuple[Peer, Peer]) -> None:
    a, b = peers
    idle = engine.allocate()
    busy = engine.allocate()
    (a_rtp, _), _ = engine.ports(busy)
    engine.set_peer(busy, LEG_A, a.addr)
    engine.set_peer(busy, LEG_B, b.addr)
    time.sleep(0.05)
    mark = now()
    a.send(rtp(1), a_rtp)
    b.recv()
    assert engine.sessions_idle_since(mark) == [idle]
    assert abs(now() - time.monotonic()) < 0.01  # same clock as time.monotonic()


def test_freed_ports_quarantined(backend: str) -> None:
    lo = PORT_BASE + next(_blocks) * PORT_BLOCK
    hi = lo + 11  # exactly 6 port pairs: 3 sessions
    with RelayEngine(HOST, lo, hi, quarantine=0.5, backend=backend) as e:
        s1 = e.allocate()
        first_ports = set(e.ports(s1))
        e.free(s1)
        s2 = e.allocate()
        assert set(e.ports(s2)).isdisjoint(first_ports)  # fresh pairs preferred
        s3 = e.allocate()
        e.free(s2)
        with pytest.raises(PoolExhausted):
            e.allocate()  # s1's and s2's pairs are still in quarantine
        time.sleep(0.6)
        s4 = e.allocate()
        assert set(e.ports(s4)) == first_ports  # oldest released first
        assert e.counters()["sessions"] == 2
        e.free(s3)
        e.free(s4)


def test_freed_session_id_is_dead(engine: RelayEngine) -> None:
    sid = engine.allocate()
    final = engine.free(sid)
    assert final["a_to_b"]["packets"] == 0
    with pytest.raises(SessionNotFound):
        engine.stats(sid)
    with pytest.raises(SessionNotFound):
        engine.free(sid)
    again = engine.allocate()  # may reuse the slot, never the id
    assert again != sid
    with pytest.raises(SessionNotFound):
        engine.set_peer(sid, LEG_A, ("127.0.0.1", 4000))


def test_bad_arguments_rejected(engine: RelayEngine) -> None:
    sid = engine.allocate()
    with pytest.raises(ValueError):
        engine.set_peer(sid, 2, (HOST, 4000))
    with pytest.raises(ValueError):
        engine.set_peer(sid, LEG_A, ("not-an-ip", 4000))
    with pytest.raises(ValueError):
        engine.set_peer(sid, LEG_A, (HOST, 0))
    with pytest.raises(ValueError):
        RelayEngine(HOST, 5000, 5002)  # fewer than two port pairs


def test_two_workers_share_sessions(peers: tuple[Peer, Peer], backend: str) -> None:
    a, b = peers
    lo, hi = port_range()
    with RelayEngine(HOST, lo, hi, workers=2, quarantine=0, backend=backend) as e:
        assert len([t for t in e.worker_tids() if t]) == 2
        sids = [e.allocate() for _ in range(4)]
        for n, sid in enumerate(sids):
            (a_rtp, _), _ = e.ports(sid)
            e.set_peer(sid, LEG_A, a.addr)
            e.set_peer(sid, LEG_B, b.addr)
            a.send(rtp(n), a_rtp)
            assert b.recv()[0] == rtp(n)
        for sid in sids:
            e.free(sid)
        assert e.counters()["sessions"] == 0


def _bindable(port: int) -> bool:
    """True if ``port`` on HOST can be bound now (EADDRINUSE while a pending receive keeps a
    freed socket open)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.bind((HOST, port))
        except OSError:
            return False
        return True


def test_free_releases_the_ports_promptly(engine: RelayEngine, peers: tuple[Peer, Peer]) -> None:
    """free() closes the sockets (io_uring: the worker cancels the receives, then closes, on its
    next round, within 100 ms even when idle: long before the quarantine lets the ports be reused)."""
    a, b = peers
    sid = engine.allocate()
    (a_rtp, a_rtcp), (b_rtp, b_rtcp) = engine.ports(sid)
    engine.set_peer(sid, LEG_A, a.addr)
    engine.set_peer(sid, LEG_B, b.addr)
    a.send(rtp(1), a_rtp)
    assert b.recv()[0] == rtp(1)
    engine.free(sid)
    freed = time.monotonic()

    for port in (a_rtp, a_rtcp, b_rtp, b_rtcp):
        assert wait_for(lambda port=port: _bindable(port), timeout=1.0), port
    assert time.monotonic() - freed < 0.5


def _churn_then_hang_up(e: RelayEngine, sids: list[int], ports: list[int]) -> float:
    """Free ``sids`` one by one with an allocation after each of the first 130 (calls ending and
    starting), then free the rest at once; collect their ports; return the slowest free()."""
    slowest = 0.0
    churn = 130
    i = 0
    while i < len(sids):  # grows by one for each of the first `churn` frees
        ports.extend(p for pair in e.ports(sids[i]) for p in pair)
        started = time.monotonic()
        e.free(sids[i])
        slowest = max(slowest, time.monotonic() - started)
        if i < churn:
            sids.append(e.allocate())
        i += 1
    return slowest


def test_freeing_many_sessions_never_blocks_on_an_idle_worker(backend: str) -> None:
    """Calls ending and starting (free, allocate, free, ...) and then a mass hang-up never make
    free() wait, although free() no longer wakes an idle io_uring worker: the next allocation's
    wake-up or a half-full close queue (32 sessions) does, so the queue never fills. (A version
    where each suppressed the other's wake-up blocked free() for the idle worker's 100 ms.)
    Every socket is closed soon after."""
    blocks = [port_range() for _ in range(16)]  # consecutive: 1,024 ports, 256 sessions
    lo, hi = blocks[0][0], blocks[-1][1]
    with RelayEngine(HOST, lo, hi, workers=1, quarantine=30.0, media_timeout=0, hold_timeout=0,
                     backend=backend) as e:  # fmt: skip
        sids = [e.allocate() for _ in range(120)]
        time.sleep(0.2)  # the worker armed them all and went idle
        ports: list[int] = []
        gc.disable()  # a collection of the test process's heap inside free() is not free() waiting
        try:
            slowest = _churn_then_hang_up(e, sids, ports)
        finally:
            gc.enable()
        assert slowest < 0.05, slowest
        assert len(sids) == 250 and len(set(ports)) == 4 * 250

        assert wait_for(lambda: all(_bindable(p) for p in ports), timeout=1.0)
        assert e.counters()["sessions"] == 0


def test_burst_on_one_socket_relayed_in_order(engine: RelayEngine, peers: tuple[Peer, Peer]) -> None:
    """More datagrams than one receive batch queued on one socket all arrive, in order."""
    a, b = peers
    sid = engine.allocate()
    (a_rtp, _), _ = engine.ports(sid)
    engine.set_peer(sid, LEG_A, a.addr)
    engine.set_peer(sid, LEG_B, b.addr)
    burst = 200  # > RR_RECV_BATCH (32) and > the multishot retry budget
    for seq in range(burst):
        a.send(rtp(seq, seq * 160), a_rtp)
    got = [b.recv()[0] for _ in range(burst)]
    assert got == [rtp(seq, seq * 160) for seq in range(burst)]
    assert wait_for(lambda: engine.stats(sid)["a_to_b"]["forwarded"] == burst)


def test_oversized_datagram_dropped_as_truncated(engine: RelayEngine, peers: tuple[Peer, Peer]) -> None:
    a, b = peers
    sid = engine.allocate()
    (a_rtp, _), _ = engine.ports(sid)
    engine.set_peer(sid, LEG_A, a.addr)
    engine.set_peer(sid, LEG_B, b.addr)
    a.send(rtp(1, payload=b"\x00" * 3000), a_rtp)  # larger than RR_MAX_PACKET (2048)
    a.send(rtp(2), a_rtp)
    assert b.recv()[0] == rtp(2)
    info = engine.stats(sid)["a_to_b"]
    assert info["truncated"] == 1
    assert info["forwarded"] == 1


def test_stop_and_start_keep_sessions(engine: RelayEngine, peers: tuple[Peer, Peer]) -> None:
    """Stopped workers leave the sockets open; restarted ones relay them again."""
    a, b = peers
    sid = engine.allocate()
    (a_rtp, _), _ = engine.ports(sid)
    engine.set_peer(sid, LEG_A, a.addr)
    engine.set_peer(sid, LEG_B, b.addr)
    a.send(rtp(1), a_rtp)
    assert b.recv()[0] == rtp(1)
    engine.stop()
    a.send(rtp(2), a_rtp)  # queues in the kernel meanwhile
    assert b.nothing(0.1)
    late = engine.allocate()  # allocated while stopped: armed when the workers start
    (late_a, _), _ = engine.ports(late)
    engine.set_peer(late, LEG_A, a.addr)
    engine.set_peer(late, LEG_B, b.addr)
    engine.start()
    assert b.recv()[0] == rtp(2)
    a.send(rtp(3), late_a)
    assert b.recv()[0] == rtp(3)
    engine.free(sid)  # after a restart the new ring owns the receives
    engine.free(late)


def test_many_sessions_allocated_and_freed_while_relaying(peers: tuple[Peer, Peer], backend: str) -> None:
    """Churn next to a live call with ports reused at once (no quarantine): the live
    call loses nothing and the few free pairs are bound again and again."""
    a, b = peers
    lo, hi = port_range()
    with RelayEngine(HOST, lo, hi, quarantine=0, media_timeout=0, hold_timeout=0, backend=backend) as e:
        live = e.allocate()
        (a_rtp, _), _ = e.ports(live)
        e.set_peer(live, LEG_A, a.addr)
        e.set_peer(live, LEG_B, b.addr)
        uses: dict[int, int] = {}
        for seq in range(40):
            sids = [e.allocate() for _ in range(3)]
            for sid in sids:
                for rtp_port, _ in e.ports(sid):
                    uses[rtp_port] = uses.get(rtp_port, 0) + 1
            a.send(rtp(seq, seq * 160), a_rtp)
            for sid in sids:
                e.free(sid)
            assert b.recv()[0] == rtp(seq, seq * 160)
        assert e.stats(live)["a_to_b"]["lost"] == 0
        assert e.counters()["sessions"] == 1
        assert min(uses.values()) >= 5  # 240 pair allocations over 30 free pairs: each reused


def test_timing_counters_cover_every_round(engine: RelayEngine, peers: tuple[Peer, Peer]) -> None:
    a, b = peers
    sid = engine.allocate()
    (a_rtp, _), _ = engine.ports(sid)
    engine.set_peer(sid, LEG_A, a.addr)
    engine.set_peer(sid, LEG_B, b.addr)
    for seq in range(20):
        a.send(rtp(seq), a_rtp)
        b.recv()
    c = engine.counters()
    assert len(c["late_naps"]) == len(c["round_work"]) == len(c["round_stall"]) == len(TIMING_BOUNDS_US) + 1
    assert sum(c["round_work"]) == sum(c["round_stall"]) >= 1  # rounds that moved packets were timed
    assert c["packets_in"] == c["packets_out"] == 20
    assert c["recv_errors"] == 0


def test_backend_choice(monkeypatch: pytest.MonkeyPatch) -> None:
    lo, hi = port_range()
    with RelayEngine(HOST, lo, hi, backend="epoll") as e:
        assert e.backend == "epoll"
    monkeypatch.setenv("RTP_RELAY_BACKEND", "epoll")
    with RelayEngine(HOST, lo, hi) as e:
        assert e.backend == "epoll"
    monkeypatch.delenv("RTP_RELAY_BACKEND")
    with RelayEngine(HOST, lo, hi) as e:  # auto: io_uring where it can run
        assert e.backend == ("io_uring" if io_uring_available() else "epoll")
    with pytest.raises(ValueError):
        RelayEngine(HOST, lo, hi, backend="kqueue")
    if not io_uring_available():
        with pytest.raises(RelayError):
            RelayEngine(HOST, lo, hi, backend="io_uring")


def test_worker_pinned_when_asked(backend: str) -> None:
    lo, hi = port_range()
    with RelayEngine(HOST, lo, hi, backend=backend, worker_cpus=[0]) as e:
        assert e.counters()["pinned_workers"] == 1
        tid = e.worker_tids()[0]
        assert os.sched_getaffinity(tid) == {0}
    with pytest.raises(ValueError):
        RelayEngine(HOST, lo, hi, backend=backend, worker_cpus=[-1])


def test_allocations_take_pairs_bound_ahead_by_the_keeper(engine: RelayEngine) -> None:
    """The keeper thread binds spare pairs ahead of need, so allocate() does no socket calls on
    the signalling thread; the pairs still come in FIFO order from the bottom of the range."""
    assert wait_for(lambda: engine.counters()["ports_spare"] > 0)
    before = engine.counters()
    assert before["ports_free"] == before["ports_total"]  # spare ports still count as free
    sids = [engine.allocate() for _ in range(4)]
    ports = sorted(p for sid in sids for leg in engine.ports(sid) for p in leg)
    lo = engine.port_min + engine.port_min % 2
    assert ports == list(range(lo, lo + 16))  # the first 8 pairs, each RTP even, RTCP odd
    after = engine.counters()
    assert after["spare_hits"] - before["spare_hits"] == 4
    assert after["spare_misses"] == before["spare_misses"]
    assert after["ports_free"] == after["ports_total"] - 16
    for sid in sids:
        engine.free(sid)


def test_stray_datagram_on_a_spare_port_is_dropped_not_latched(
    engine: RelayEngine, peers: tuple[Peer, Peer]
) -> None:
    """A datagram that reaches a pre-bound spare port before any call owns it (a late stream of
    the port's previous call, a scan) is drained at allocation: symmetric latching then learns
    the real peer's address, not the stray's."""
    a, b = peers
    assert wait_for(lambda: engine.counters()["ports_spare"] >= 4)
    lo = engine.port_min + engine.port_min % 2
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as stray:
        stray.bind((HOST, 0))
        stray.sendto(rtp(99), (HOST, lo))  # leg A's RTP port of the next session
        time.sleep(0.05)
        sid = engine.allocate()
        (a_rtp, _), _ = engine.ports(sid)
        assert a_rtp == lo
        assert engine.counters()["spare_drained"] == 1
        engine.set_peer(sid, LEG_B, b.addr)
        a.send(rtp(1), a_rtp)  # first packet after allocation: latches a
        assert b.recv()[0] == rtp(1)
        stray.sendto(rtp(2), (HOST, a_rtp))  # now a stranger: dropped and counted
        assert b.nothing()
    stats = engine.stats(sid)["a_to_b"]
    assert stats["latched_rtp"] == a.addr and stats["unknown_source"] == 1


def test_allocate_binds_its_own_pairs_without_a_running_keeper(backend: str) -> None:
    """An engine that is not started has no keeper: allocate() binds the sockets itself."""
    lo, hi = port_range()
    e = RelayEngine(HOST, lo, hi, quarantine=30.0, backend=backend, start=False)
    try:
        sid = e.allocate()
        c = e.counters()
        assert c["spare_misses"] == 1 and c["spare_hits"] == 0 and c["ports_spare"] == 0
        assert e.ports(sid)[0][0] == lo
        e.free(sid)
    finally:
        e.close()


@_no_uring
def test_a_warm_io_uring_worker_arms_new_sessions_at_its_nap_unwoken(peers: tuple[Peer, Peer]) -> None:
    """Under call load an io_uring worker naps (at most 10 ms) instead of sleeping, so an
    allocation writes no wake-up and its sockets still relay: their first datagram waits in
    the socket until the nap ends. Two seconds after its last control work the worker sleeps
    again, and the next allocation wakes it at once."""
    a, b = peers
    lo, hi = port_range()
    with RelayEngine(HOST, lo, hi, quarantine=0.0, media_timeout=0, hold_timeout=0, workers=1,
                     backend="io_uring") as e:  # fmt: skip
        e.free(e.allocate())  # control work: the worker is warm from its next round on
        assert wait_for(lambda: e.counters()["wakeups"] >= 2)
        time.sleep(0.05)
        before = e.counters()
        sids = [e.allocate() for _ in range(5)]
        after = e.counters()
        assert after["control_wakes"] == before["control_wakes"]
        assert after["control_naps"] == before["control_naps"] + 5
        for seq, sid in enumerate(sids):
            (a_rtp, _), (b_rtp, _) = e.ports(sid)
            e.set_peer(sid, LEG_A, a.addr)
            e.set_peer(sid, LEG_B, b.addr)
            t0 = time.monotonic()
            a.send(rtp(seq), a_rtp)
            data, src = b.recv()
            assert data == rtp(seq) and src == (HOST, b_rtp)
            assert time.monotonic() - t0 < 0.5
        for sid in sids:
            e.free(sid)
        time.sleep(2.3)  # past the warm window (the frees were its last control work)
        cold = e.counters()["control_wakes"]
        sid = e.allocate()
        assert e.counters()["control_wakes"] == cold + 1  # a sleeping worker is woken at once
        e.free(sid)


def test_deferred_wake_ups_arm_new_sessions_once_per_worker(peers: tuple[Peer, Peer], backend: str) -> None:
    """allocate(defer_wake=True) leaves the worker asleep; one wake_owed() wakes each worker
    once for all of them, and every new session then relays at once."""
    a, b = peers
    lo, hi = port_range()
    with RelayEngine(HOST, lo, hi, quarantine=30.0, media_timeout=0, hold_timeout=0, backend=backend) as e:
        sids = [e.allocate(defer_wake=True) for _ in range(4)]
        woken = e.wake_owed()
        # epoll adds sockets from the caller's thread: nothing to wake. io_uring: one worker
        # (unless its periodic round took the queue first, which leaves nothing owed).
        assert woken == 0 if backend == "epoll" else woken in (0, 1)
        assert e.wake_owed() == 0
        for seq, sid in enumerate(sids):
            (a_rtp, _), (b_rtp, _) = e.ports(sid)
            e.set_peer(sid, LEG_A, a.addr)
            e.set_peer(sid, LEG_B, b.addr)
            a.send(rtp(seq), a_rtp)
            data, src = b.recv()
            assert data == rtp(seq) and src == (HOST, b_rtp)
        for sid in sids:
            e.free(sid)
