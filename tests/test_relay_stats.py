"""The relay's stats and DTMF code fed crafted packet sequences, without sockets.

StreamStatsFeeder drives the same C functions the worker threads call per packet.
"""

from __future__ import annotations

import struct

import pytest

from rtp_relay_ext import StreamStatsFeeder, mos_g711

PTIME = 0.020  # 20 ms G.711 packets
SAMPLES = 160  # 8 kHz x 20 ms
SSRC = 0x11223344


def rtp(
    seq: int,
    ts: int,
    *,
    pt: int = 0,
    ssrc: int = SSRC,
    payload: bytes = b"\xd5" * SAMPLES,
    marker: bool = False,
) -> bytes:
    """Build an RTP v2 packet (RFC 3550 5.1) with no CSRCs or extension."""
    return (
        struct.pack("!BBHII", 0x80, (0x80 if marker else 0) | pt, seq & 0xFFFF, ts & 0xFFFFFFFF, ssrc)
        + payload
    )


def dtmf(
    seq: int, ts: int, event: int, duration: int, *, end: bool = False, volume: int = 10, pt: int = 101
) -> bytes:
    """RFC 4733 telephone-event packet."""
    body = struct.pack("!BBH", event, (0x80 if end else 0) | volume, duration)
    return rtp(seq, ts, pt=pt, payload=body)


def feed_stream(f: StreamStatsFeeder, seqs: list[int], *, start: float = 100.0) -> None:
    """Feed packets with the given sequence numbers, each arriving on its own 20 ms slot."""
    for k, seq in enumerate(seqs):
        f.feed(rtp(seq, seq * SAMPLES), start + k * PTIME)


def test_clean_stream_has_no_loss_and_no_jitter() -> None:
    f = StreamStatsFeeder()
    feed_stream(f, list(range(500)))
    r = f.report()
    assert r["packets"] == 500
    assert r["bytes"] == 500 * 172
    assert r["expected"] == 500
    assert r["lost"] == 0
    assert r["jitter_ms"] < 0.2
    assert r["mos"] > 4.3


def test_gaps_count_as_loss() -> None:
    f = StreamStatsFeeder()
    seqs = [s for s in range(1000) if s % 100 != 50]  # 10 lost
    for s in seqs:
        f.feed(rtp(s, s * SAMPLES), 100.0 + s * PTIME)
    r = f.report()
    assert r["expected"] == 1000
    assert r["lost"] == 10
    assert r["loss_fraction"] == pytest.approx(0.01)
    assert r["out_of_order"] == 0
    assert r["mos"] < mos_g711(0.0, 0.0)


def test_reordered_packet_is_out_of_order_not_lost() -> None:
    f = StreamStatsFeeder()
    feed_stream(f, [0, 1, 2, 4, 3, 5, 6])
    r = f.report()
    assert r["out_of_order"] == 1
    assert r["lost"] == 0
    assert r["duplicates"] == 0
    assert r["expected"] == 7


def test_duplicate_detected_and_not_counted_as_received() -> None:
    f = StreamStatsFeeder()
    feed_stream(f, [0, 1, 2, 2, 3, 1, 4])
    r = f.report()
    assert r["duplicates"] == 2
    assert r["packets"] == 7  # every packet relayed is counted as traffic
    assert r["lost"] == 0  # duplicates do not mask loss
    assert r["out_of_order"] == 0


def test_duplicate_masks_no_loss_elsewhere() -> None:
    f = StreamStatsFeeder()
    feed_stream(f, [0, 1, 1, 3, 4])  # 2 lost, 1 duplicated
    assert f.report()["lost"] == 1


def test_sequence_wrap_around_extends_sequence_number() -> None:
    f = StreamStatsFeeder()
    seqs = [(65500 + k) & 0xFFFF for k in range(100)]
    seqs.remove(3)  # one loss just after the wrap
    feed_stream(f, seqs)
    r = f.report()
    assert r["extended_max_seq"] == 65536 + ((65500 + 99) & 0xFFFF)
    assert r["expected"] == 100
    assert r["lost"] == 1
    assert r["out_of_order"] == 0


def test_reorder_across_wrap() -> None:
    f = StreamStatsFeeder()
    feed_stream(f, [65534, 65535, 1, 0, 2])
    r = f.report()
    assert r["out_of_order"] == 1
    assert r["lost"] == 0
    assert r["expected"] == 5


def test_large_jump_is_restart_after_two_sequential_packets() -> None:
    f = StreamStatsFeeder()
    feed_stream(f, [0, 1, 2, 30000, 30001, 30002])
    r = f.report()
    assert r["seq_resets"] == 1
    assert r["lost"] == 0  # the first jump packet is not counted, the restart is not loss
    assert r["packets"] == 6


def test_ssrc_change_keeps_history() -> None:
    f = StreamStatsFeeder()
    for s in (0, 1, 3):  # one lost in the first source
        f.feed(rtp(s, s * SAMPLES), 100 + s * PTIME)
    for k, s in enumerate((5000, 5001, 5002)):
        f.feed(rtp(s, s * SAMPLES, ssrc=0xABCDEF), 101 + k * PTIME)
    r = f.report()
    assert r["seq_resets"] == 1
    assert r["ssrc"] == 0xABCDEF
    assert r["expected"] == 4 + 3
    assert r["lost"] == 1


def test_jitter_follows_rfc3550_estimator() -> None:
    f = StreamStatsFeeder()
    # Alternate arrivals 5 ms early/late: |D| is 10 ms on every packet after the first,
    # so J converges to 10 ms (J += (|D| - J)/16).
    for s in range(400):
        offset = 0.005 if s % 2 else -0.005
        f.feed(rtp(s, s * SAMPLES), 100.0 + s * PTIME + offset)
    assert f.report()["jitter_ms"] == pytest.approx(10.0, abs=0.2)


def test_jitter_uses_payload_clock() -> None:
    f = StreamStatsFeeder(clock_rate=48000)
    for s in range(400):
        offset = 0.002 if s % 2 else 0.0
        f.feed(rtp(s, s * 960, pt=111), 100.0 + s * PTIME + offset)
    assert f.report()["jitter_ms"] == pytest.approx(2.0, abs=0.1)


def test_non_rtp_is_counted_apart() -> None:
    f = StreamStatsFeeder()
    kind, _ = f.feed(b"\x00\x01\x00\x00" + b"\x21\x12\xa4\x42" + b"\x00" * 12, 1.0)  # STUN
    assert kind == "not_rtp"
    kind, _ = f.feed(b"\x80", 1.0)
    assert kind == "not_rtp"
    assert f.report()["non_rtp"] == 2
    assert f.report()["packets"] == 0


def test_rtcp_mux_packets_are_not_media() -> None:
    f = StreamStatsFeeder(rtcp_mux=True)
    sr = struct.pack("!BBHI", 0x80, 200, 6, SSRC) + b"\x00" * 20
    assert f.feed(sr, 1.0)[0] == "rtcp"
    feed_stream(f, [0, 1])
    r = f.report()
    assert r["rtcp_packets"] == 1
    assert r["packets"] == 2


def test_rtcp_type_without_mux_is_media() -> None:
    # PT 72 (= 200 & 0x7f with marker) is legal RTP when not multiplexing.
    f = StreamStatsFeeder(rtcp_mux=False)
    sr = struct.pack("!BBHI", 0x80, 200, 6, SSRC) + b"\x00" * 20
    assert f.feed(sr, 1.0)[0] == "rtp"


def test_dtmf_reported_once_despite_three_end_packets() -> None:
    f = StreamStatsFeeder(dtmf_pt=101)
    seq = 10
    ts = 8000
    events = []
    for dur in (160, 320, 480, 640):
        events += f.feed(dtmf(seq, ts, 5, dur), 100 + seq * PTIME)[1]
        seq += 1
    for _ in range(3):  # RFC 4733 2.5.1.4: end packet sent three times
        kind, ev = f.feed(dtmf(seq, ts, 5, 800, end=True), 100 + seq * PTIME)
        assert kind == "dtmf"
        events += ev
        seq += 1
    assert events == [("5", 100.0, 10, True)]
    assert f.report()["dtmf_packets"] == 7
    assert f.report()["lost"] == 0


def test_dtmf_digit_mapping_and_sequence_of_digits() -> None:
    f = StreamStatsFeeder(dtmf_pt=96)
    seq = 0
    got = []
    for n, event in enumerate((1, 10, 11, 12, 0)):
        ts = 1000 + n * 4000
        for dur in (160, 320):
            got += f.feed(dtmf(seq, ts, event, dur, pt=96), 1 + seq * PTIME)[1]
            seq += 1
        for _ in range(3):
            got += f.feed(dtmf(seq, ts, event, 400, end=True, pt=96), 1 + seq * PTIME)[1]
            seq += 1
    assert [g[0] for g in got] == ["1", "*", "#", "A", "0"]
    assert all(g[1] == 50.0 for g in got)


def test_dtmf_with_all_end_packets_lost_is_reported_when_next_event_starts() -> None:
    f = StreamStatsFeeder()
    got = []
    got += f.feed(dtmf(0, 1000, 7, 160), 1.00)[1]
    got += f.feed(dtmf(1, 1000, 7, 320), 1.02)[1]
    got += f.feed(dtmf(2, 5000, 8, 160), 1.50)[1]  # new event, no end seen for 7
    assert got == [("7", 40.0, 10, False)]
    got = f.feed(dtmf(3, 5000, 8, 240, end=True), 1.52)[1]
    assert got == [("8", 30.0, 10, True)]


def test_late_end_packet_of_old_event_is_ignored() -> None:
    f = StreamStatsFeeder()
    f.feed(dtmf(0, 1000, 1, 160, end=True), 1.0)
    f.feed(dtmf(1, 5000, 2, 160, end=True), 1.1)
    # a retransmitted end of the first event arrives late, with a new seq
    assert f.feed(dtmf(2, 1000, 1, 160, end=True), 1.2)[1] == []


def test_dtmf_payload_type_not_configured_is_plain_media() -> None:
    f = StreamStatsFeeder(dtmf_pt=None)
    kind, ev = f.feed(dtmf(0, 0, 1, 160, end=True), 1.0)
    assert kind == "rtp"
    assert ev == []


def test_dtmf_does_not_disturb_jitter() -> None:
    f = StreamStatsFeeder()
    seq = 0
    for k in range(200):
        f.feed(rtp(seq, k * SAMPLES), 100 + k * PTIME)
        seq += 1
    # event packets keep the start timestamp while arrival advances
    for k in range(10):
        f.feed(dtmf(seq, 200 * SAMPLES, 3, 160 * (k + 1), end=k == 9), 104 + k * PTIME)
        seq += 1
    assert f.report()["jitter_ms"] < 0.2


def test_mos_formula_points() -> None:
    # R = 93.2 - Id(d) - Ie_eff(Ppl) with d = 40 ms: Id = 0.96, Ie_eff = 0 -> R = 92.24
    r = 92.24
    expect = 1 + 0.035 * r + r * (r - 60) * (100 - r) * 7e-6
    assert mos_g711(0.0, 0.0) == pytest.approx(expect)
    # 1 % loss: Ie_eff = 95 * 1 / (1 + 25.1)
    r = 93.2 - 0.96 - 95 / 26.1
    assert mos_g711(0.01, 0.0) == pytest.approx(1 + 0.035 * r + r * (r - 60) * (100 - r) * 7e-6)
    # jitter adds 2 x jitter of delay, and past 177.3 ms the delay slope steepens
    assert mos_g711(0.0, 100.0) < mos_g711(0.0, 50.0) < mos_g711(0.0, 0.0)
    assert mos_g711(1.0, 0.0) < 1.6
    assert mos_g711(0.0, 0.0) <= 4.5
