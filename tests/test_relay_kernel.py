"""The relay's kernel fast path: latched RTP relayed by the BPF program, with the same
stats, DTMF, latching and timeout behaviour as the worker path, and clean hand-overs
between the two.  Skipped (with the reason) where the program cannot attach."""

from __future__ import annotations

import struct
import time
from collections.abc import Iterator

import pytest

from rtp_relay_ext import LEG_A, LEG_B, DtmfEvent, MediaTimeout, RelayEngine, RelayError
from tests import netns, test_relay_engine
from tests.test_relay_engine import (
    HOST,
    KERNEL_STATUS,
    RECV_TIMEOUT,
    Peer,
    port_range,
    rtp,
    wait_for,
)

peers = test_relay_engine.peers  # the same two UDP endpoints on 127.0.0.1 (a fixture)

pytestmark = pytest.mark.skipif(KERNEL_STATUS is not None, reason=f"kernel path: {KERNEL_STATUS}")


@pytest.fixture
def engine() -> Iterator[RelayEngine]:
    lo, hi = port_range()
    e = RelayEngine(HOST, lo, hi, quarantine=30.0, media_timeout=0, hold_timeout=0, kernel="on")
    assert e.kernel and "lo" in e.kernel_status
    yield e
    e.close()


def started_call(engine: RelayEngine, a: Peer, b: Peer, **alloc) -> tuple[int, int, int]:
    """A session whose two directions have latched and been handed to the kernel.

    One packet each way goes through the workers (they latch the sources); the next
    timeout scan installs both flows. Returns (sid, a_rtp, b_rtp)."""
    sid = engine.allocate(**alloc)
    (a_rtp, _), (b_rtp, _) = engine.ports(sid)
    engine.set_peer(sid, LEG_A, a.addr)
    engine.set_peer(sid, LEG_B, b.addr)
    a.send(rtp(0, 0), a_rtp)
    assert b.recv()[0] == rtp(0, 0)
    b.send(rtp(0, 0, ssrc=9), b_rtp)
    assert a.recv()[0] == rtp(0, 0, ssrc=9)
    assert wait_for(lambda: engine.stats(sid)["a_to_b"]["kernel"] and engine.stats(sid)["b_to_a"]["kernel"])
    return sid, a_rtp, b_rtp


def test_kernel_relays_latched_rtp_from_the_relay_ports(engine: RelayEngine, peers: tuple[Peer, Peer]) -> None:
    a, b = peers
    sid, a_rtp, b_rtp = started_call(engine, a, b)
    before = engine.counters()
    for seq in range(1, 31):
        a.send(rtp(seq, seq * 160), a_rtp)
        data, src = b.recv()
        assert data == rtp(seq, seq * 160) and src == (HOST, b_rtp)  # B sees only the relay
        b.send(rtp(seq, seq * 160, ssrc=9), b_rtp)
        data, src = a.recv()
        assert data == rtp(seq, seq * 160, ssrc=9) and src == (HOST, a_rtp)
    after = engine.counters()
    assert after["kernel_packets"] - before["kernel_packets"] == 60
    assert after["packets_out"] - before["packets_out"] == 60  # totals count both paths
    assert after["kernel_flows"] == 2
    st = engine.stats(sid)
    for way in ("a_to_b", "b_to_a"):
        assert st[way]["packets"] == 31 and st[way]["forwarded"] == 31
        assert st[way]["kernel_forwarded"] == 30
        assert st[way]["lost"] == 0 and st[way]["expected"] == 31
    final = engine.free(sid)
    assert final["a_to_b"]["packets"] == 31 and final["a_to_b"]["kernel_forwarded"] == 30
    assert engine.counters()["kernel_flows"] == 0
    a.send(rtp(99, 0), a_rtp)  # the freed port relays nothing any more
    assert b.nothing()


def test_loss_and_sequence_state_carry_across_hand_overs(engine: RelayEngine, peers: tuple[Peer, Peer]) -> None:
    """The kernel continues the workers' RFC 3550 state and gives it back: a gap in the
    kernel's stretch is loss, a duplicate is a duplicate, the run does not restart."""
    a, b = peers
    sid, a_rtp, _ = started_call(engine, a, b)
    for seq in (1, 2, 3, 8, 9, 9, 10):  # 4..7 lost, 9 duplicated
        a.send(rtp(seq, seq * 160), a_rtp)
        b.recv()
    st = engine.stats(sid)["a_to_b"]
    assert st["kernel"]
    assert (st["expected"], st["lost"], st["duplicates"], st["seq_resets"]) == (11, 4, 1, 0)
    assert st["extended_max_seq"] == 10
    final = engine.free(sid)["a_to_b"]
    assert (final["expected"], final["lost"], final["duplicates"]) == (11, 4, 1)


def test_dtmf_goes_to_the_worker_and_the_flow_comes_back(engine: RelayEngine, peers: tuple[Peer, Peer]) -> None:
    """Telephone-events are left to the worker (digit detection): the direction comes home
    with its stats, the digit is reported once, and after the back-off the kernel takes the
    direction again."""
    a, b = peers
    sid, a_rtp, _ = started_call(engine, a, b, dtmf_pt=101)
    for seq in range(1, 5):
        a.send(rtp(seq, seq * 160), a_rtp)
        b.recv()
    for i, (dur, end) in enumerate(((160, False), (320, True), (320, True), (320, True))):
        body = struct.pack("!BBH", 5, (0x80 if end else 0) | 10, dur)
        a.send(rtp(5 + i, 16000, pt=101, payload=body), a_rtp)
        assert b.recv()[0][1] == 101
    assert wait_for(lambda: engine.poll_events())  # the digit (test_dtmf_event_reported_once checks it)
    st = engine.stats(sid)["a_to_b"]
    assert not st["kernel"]
    assert st["dtmf_packets"] == 4 and st["lost"] == 0 and st["expected"] == 9
    assert wait_for(lambda: engine.stats(sid)["a_to_b"]["kernel"], timeout=3.0)
    a.send(rtp(9, 9 * 160), a_rtp)
    b.recv()
    st = engine.stats(sid)["a_to_b"]
    assert st["expected"] == 10 and st["lost"] == 0 and st["kernel_forwarded"] >= 5


def test_dtmf_event_reported_once(engine: RelayEngine, peers: tuple[Peer, Peer]) -> None:
    a, b = peers
    sid, a_rtp, _ = started_call(engine, a, b, dtmf_pt=101)
    for i, (dur, end) in enumerate(((160, False), (480, True), (480, True), (480, True))):
        body = struct.pack("!BBH", 11, (0x80 if end else 0) | 12, dur)
        a.send(rtp(1 + i, 32000, pt=101, payload=body), a_rtp)
        b.recv()
    events: list = []
    assert wait_for(lambda: events.extend(engine.poll_events()) or events)
    time.sleep(0.1)
    events.extend(engine.poll_events())
    assert events == [
        DtmfEvent(session_id=sid, leg=LEG_A, digit="#", event=11, duration_ms=60.0, volume=12, end_seen=True,
                  at=events[0].at)
    ]


def test_strangers_are_dropped_and_counted_while_the_kernel_relays(
    engine: RelayEngine, peers: tuple[Peer, Peer]
) -> None:
    a, b = peers
    sid, a_rtp, _ = started_call(engine, a, b)
    stranger = Peer()
    try:
        stranger.send(rtp(50, 0, ssrc=666), a_rtp)
        assert b.nothing()
    finally:
        stranger.close()
    st = engine.stats(sid)["a_to_b"]
    assert st["unknown_source"] == 1 and st["kernel"] and st["packets"] == 1


def test_rtcp_mux_on_the_rtp_port_goes_through_the_worker(engine: RelayEngine) -> None:
    a, b = Peer(), Peer()
    try:
        sid = engine.allocate()
        (a_rtp, _), (b_rtp, _) = engine.ports(sid)
        engine.set_peer(sid, LEG_A, a.addr, rtcp_mux=True)
        engine.set_peer(sid, LEG_B, b.addr, rtcp_mux=True)
        a.send(rtp(0, 0), a_rtp)
        b.recv()
        b.send(rtp(0, 0, ssrc=9), b_rtp)
        a.recv()
        assert wait_for(lambda: engine.stats(sid)["a_to_b"]["kernel"])
        sr = struct.pack("!BBHI", 0x80, 200, 6, 7) + bytes(20)  # RTCP sender report, muxed
        a.send(sr, a_rtp)
        assert b.recv()[0] == sr
        st = engine.stats(sid)["a_to_b"]
        assert st["rtcp_packets"] == 1 and st["kernel"]  # RTCP never takes the flow back
    finally:
        a.close()
        b.close()


def test_re_invite_moves_the_kernel_flow_to_the_new_address(engine: RelayEngine, peers: tuple[Peer, Peer]) -> None:
    a, b = peers
    sid, a_rtp, b_rtp = started_call(engine, a, b)
    c = Peer()
    try:
        engine.set_peer(sid, LEG_B, c.addr)  # B's media moved to C
        assert not engine.stats(sid)["a_to_b"]["kernel"]  # taken back at once
        a.send(rtp(1, 160), a_rtp)
        assert c.recv()[0] == rtp(1, 160) and b.nothing(0.1)
        c.send(rtp(1, 160, ssrc=3), b_rtp)
        assert a.recv()[0] == rtp(1, 160, ssrc=3)
        assert wait_for(lambda: engine.stats(sid)["a_to_b"]["kernel"] and engine.stats(sid)["b_to_a"]["kernel"])
        a.send(rtp(2, 320), a_rtp)
        assert c.recv()[0] == rtp(2, 320) and b.nothing(0.1)
        assert engine.stats(sid)["a_to_b"]["kernel_forwarded"] >= 1
    finally:
        c.close()


def test_media_flowing_in_the_kernel_keeps_the_call_alive(peers: tuple[Peer, Peer]) -> None:
    """The timeout scan reads the kernel's last-packet times: a call whose media only the
    kernel sees is not timed out, and is once that media stops."""
    a, b = peers
    lo, hi = port_range()
    with RelayEngine(HOST, lo, hi, media_timeout=0.5, hold_timeout=0, kernel="on") as e:
        sid, a_rtp, b_rtp = started_call(e, a, b)
        until = time.monotonic() + 1.2
        seq = 1
        while time.monotonic() < until:
            a.send(rtp(seq, seq * 160), a_rtp)
            b.recv()
            seq += 1
            time.sleep(0.02)
        assert e.stats(sid)["a_to_b"]["kernel_forwarded"] > 30
        assert [ev for ev in e.poll_events() if isinstance(ev, MediaTimeout)] == []
        got: list = []
        assert wait_for(lambda: got.extend(e.poll_events()) or got, timeout=RECV_TIMEOUT)
        assert isinstance(got[0], MediaTimeout) and got[0].session_id == sid


def test_stopping_the_engine_takes_every_flow_back(engine: RelayEngine, peers: tuple[Peer, Peer]) -> None:
    a, b = peers
    sid, a_rtp, _ = started_call(engine, a, b)
    engine.stop()
    assert engine.counters()["kernel_flows"] == 0
    a.send(rtp(1, 160), a_rtp)
    assert b.nothing()  # a stopped relay relays nothing
    engine.start()
    assert b.recv()[0] == rtp(1, 160)  # the queued packet, through the worker
    assert wait_for(lambda: engine.counters()["kernel_flows"] == 2)
    assert engine.stats(sid)["a_to_b"]["packets"] == 2


def test_kernel_modes() -> None:
    lo, hi = port_range()
    with RelayEngine(HOST, lo, hi, kernel="off", start=False) as e:
        assert not e.kernel and e.kernel_status == "off (asked for)"
    with pytest.raises(RelayError, match="IPv4 only"):
        RelayEngine("::1", lo, hi, kernel="on", start=False)
    with RelayEngine("::1", lo, hi, kernel="auto", start=False) as e:  # auto: falls back
        assert not e.kernel and "IPv4" in e.kernel_status
    with pytest.raises(ValueError):
        RelayEngine(HOST, lo, hi, kernel="maybe", start=False)


@pytest.mark.skipif(netns.available() is not None, reason=f"veth namespace: {netns.available()}")
def test_remote_peers_get_packets_out_of_the_interface() -> None:
    """Peers behind a real interface (a veth pair into a namespace this test made): the
    program redirects rewritten packets out of that interface, the kernel resolving the
    peer's link-layer address, and the peers see only the relay's address and ports."""
    with netns.peer_namespace() as ns:
        a, b = ns.udp_socket(), ns.udp_socket()
        for s in (a, b):
            s.settimeout(RECV_TIMEOUT)
        lo, hi = port_range()
        with RelayEngine(netns.HOST_IP, lo, hi, media_timeout=0, hold_timeout=0, kernel="on") as e:
            assert e.kernel_status == f"attached to {ns.host_if} ingress"
            sid = e.allocate()
            (a_rtp, _), (b_rtp, _) = e.ports(sid)
            e.set_peer(sid, LEG_A, a.getsockname())
            e.set_peer(sid, LEG_B, b.getsockname())
            relay_a, relay_b = (netns.HOST_IP, a_rtp), (netns.HOST_IP, b_rtp)
            a.sendto(rtp(0, 0), relay_a)
            assert b.recvfrom(2048) == (rtp(0, 0), relay_b)
            b.sendto(rtp(0, 0, ssrc=9), relay_b)
            assert a.recvfrom(2048) == (rtp(0, 0, ssrc=9), relay_a)
            assert wait_for(lambda: e.stats(sid)["a_to_b"]["kernel"] and e.stats(sid)["b_to_a"]["kernel"])
            for seq in range(1, 21):
                a.sendto(rtp(seq, seq * 160), relay_a)
                assert b.recvfrom(2048) == (rtp(seq, seq * 160), relay_b)
                b.sendto(rtp(seq, seq * 160, ssrc=9), relay_b)
                assert a.recvfrom(2048) == (rtp(seq, seq * 160, ssrc=9), relay_a)
            st = e.free(sid)
        a.close()
        b.close()
    for way in ("a_to_b", "b_to_a"):
        assert st[way]["packets"] == 21 and st[way]["kernel_forwarded"] == 20 and st[way]["lost"] == 0
