"""SDP anchoring (pure) and the media manager over the real relay engine on loopback."""

from __future__ import annotations

import socket
import struct
import time

import pytest

from rtp_relay_ext import RelayEngine
from sbc.media.anchor import anchor, describe
from sbc.media.manager import CallMedia, MediaError, MediaManager
from sbc.sip.multipart import find_sdp, parse_multipart
from sbc.sip.sdp import SessionDescription

OFFER = (
    b"v=0\r\no=carrier 1 1 IN IP4 203.0.113.10\r\ns=-\r\nc=IN IP4 203.0.113.10\r\nt=0 0\r\n"
    b"m=audio 16384 RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:101 telephone-event/8000\r\n"
    b"a=fmtp:101 0-16\r\na=rtcp:16385 IN IP4 203.0.113.10\r\na=candidate:1 1 UDP 2130706431 203.0.113.10 16384 typ host\r\n"
    b"a=ice-ufrag:abcd\r\na=ice-pwd:secretsecretsecretsecret\r\na=sendrecv\r\n"
    b"m=video 0 RTP/AVP 31\r\n"
)


def test_describe_reads_where_media_goes() -> None:
    audio, video = describe(SessionDescription.parse(OFFER))
    assert (audio.address, audio.rtp_port, audio.rtcp_port) == ("203.0.113.10", 16384, 16385)
    assert audio.dtmf_pt == 101 and audio.clock_rate == 8000 and not audio.held
    assert video.declined and video.address is None


def test_anchor_hides_every_endpoint_address() -> None:
    sdp = SessionDescription.parse(OFFER)
    out = anchor(sdp, "198.51.100.1", [(30000, 30001), None])
    text = out.decode()
    assert "203.0.113.10" not in text
    assert "candidate" not in text and "ice-" not in text
    again = SessionDescription.parse(out)
    assert again.media[0].port == 30000 and again.media[0].rtcp()[0] == 30001
    assert again.media[1].port == 0
    assert again.origin.sess_version == 2
    assert again.media[0].rtpmap()["101"][0] == "telephone-event"


def test_anchor_keeps_hold_address_and_speaks_ipv6() -> None:
    held = OFFER.replace(b"c=IN IP4 203.0.113.10", b"c=IN IP4 0.0.0.0").replace(b"a=sendrecv", b"a=inactive")
    peers = describe(SessionDescription.parse(held))
    assert peers[0].address is None and peers[0].held
    out = anchor(SessionDescription.parse(OFFER), "2001:db8::1", [(30000, 30001), None]).decode()
    assert "c=IN IP6 2001:db8::1" in out and "IN IP4" not in out


def _rtp(seq: int) -> bytes:
    return struct.pack("!BBHII", 0x80, 0, seq, seq * 160, 0x1234) + b"\xff" * 160


@pytest.fixture
def engine():
    e = RelayEngine("127.0.0.1", 41000, 41199, quarantine=0.1)
    yield e
    e.close()


@pytest.mark.parametrize("deferred", [False, True], ids=["wake-at-once", "wake-deferred"])
def test_manager_relays_audio_both_ways_through_its_own_ports(engine, deferred: bool) -> None:
    caller = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    callee = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    for s in (caller, callee):
        s.bind(("127.0.0.1", 0))
        s.settimeout(2.0)
    manager = MediaManager(engine, "127.0.0.1", batch_wakes=deferred)
    media = CallMedia()
    offer = OFFER.replace(b"203.0.113.10", b"127.0.0.1").replace(
        b"16384", str(caller.getsockname()[1]).encode()
    )
    to_callee = SessionDescription.parse(manager.rewrite(media, "a", offer, owner="call-1"))
    if not deferred:
        assert engine.wake_owed() == 0  # the allocation woke its worker itself
    manager.wake_owed()  # what sbc run's flush does after each input
    answer = offer.replace(str(caller.getsockname()[1]).encode(), str(callee.getsockname()[1]).encode())
    to_caller = SessionDescription.parse(manager.rewrite(media, "b", answer, owner="call-1"))
    a_port, b_port = to_caller.media[0].port, to_callee.media[0].port
    assert a_port != b_port and {a_port, b_port} <= set(range(41000, 41200))
    assert manager.owner(media.sessions[0]) == "call-1"

    for seq in range(1, 21):
        caller.sendto(_rtp(seq), ("127.0.0.1", a_port))
        data, src = callee.recvfrom(2048)
        assert src == ("127.0.0.1", b_port) and data == _rtp(seq)  # from the relay, not the caller
        callee.sendto(_rtp(seq), ("127.0.0.1", b_port))
        data, src = caller.recvfrom(2048)
        assert src == ("127.0.0.1", a_port)
    time.sleep(0.05)
    final = manager.free(media)
    assert final["0"]["a_to_b"]["packets"] == 20 and final["0"]["b_to_a"]["packets"] == 20
    assert final["0"]["a_to_b"]["lost"] == 0
    assert manager.free(media) == {}  # freeing twice is harmless
    caller.close()
    callee.close()


def test_manager_batches_relay_wake_ups_until_wake_owed(engine) -> None:
    """Offers in one input leave their workers unwoken until the manager's wake_owed()."""
    manager = MediaManager(engine, "127.0.0.1", batch_wakes=True)
    first = CallMedia()
    manager.rewrite(first, "a", OFFER, owner=0)
    assert engine.wake_owed() >= 1  # left owed (asking the engine directly wakes it)
    calls = [CallMedia() for _ in range(3)]
    for i, media in enumerate(calls):
        manager.rewrite(media, "a", OFFER.replace(b"16384", str(20000 + 2 * i).encode()), owner=i)
    manager.wake_owed()
    assert engine.wake_owed() == 0  # the manager woke every worker owed one
    manager.wake_owed()  # nothing owed: harmless
    calls.append(first)
    for media in calls:
        manager.free(media)


def test_bad_sdp_is_a_488(engine) -> None:
    with pytest.raises(MediaError) as e:
        MediaManager(engine, "127.0.0.1").rewrite(CallMedia(), "a", b"not sdp at all", owner=None)
    assert e.value.status == 488


def test_out_of_file_descriptors_is_a_503(engine) -> None:  # type: ignore[no-untyped-def]
    """A relay that cannot open sockets (RLIMIT_NOFILE reached) refuses the call with 503, like an
    exhausted port range, instead of failing it with 500: once the pairs its keeper thread bound
    ahead of need are used up (those calls still get media)."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    held = []
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))
        with pytest.raises(MediaError) as e:
            while True:  # fill the table so the next session's 4 sockets cannot be opened
                try:
                    held.append(socket.socket(socket.AF_INET, socket.SOCK_DGRAM))
                except OSError:
                    break
            if held:
                held.pop().close()  # one fd free: the session still needs four
            manager = MediaManager(engine, "127.0.0.1")
            spare_sessions = engine.counters()["ports_spare"] // 4
            for _ in range(spare_sessions + 1):  # the last one finds no spare pair left
                manager.rewrite(CallMedia(), "a", OFFER, owner=None)
    finally:
        for s in held:
            s.close()
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    assert e.value.status == 503 and "sockets" in e.value.reason


def test_sip_i_multipart_invite_has_its_sdp_anchored(engine) -> None:  # type: ignore[no-untyped-def]
    """A SIP-I carrier sends SDP beside ISUP (multipart/mixed): the PBX gets the same two parts,
    the ISUP octet-exact and the SDP pointing at the relay (no carrier media address leaks)."""
    from tests.b2bua_harness import CARRIER, DID, PBX, Net

    isup = b"\x01\x00\x49\x00\x00\x03\x02\x00\x07\x04\x10\x00\x33\x63\x21\x43\x00\x00\x03"
    body = (
        b"--sip-i\r\nContent-Type: application/sdp\r\n\r\n" + OFFER + b"\r\n"
        b"--sip-i\r\nContent-Type: application/ISUP; version=itu-t92+\r\n"
        b"Content-Disposition: signal; handling=optional\r\n\r\n" + isup + b"\r\n--sip-i--\r\n"
    )
    content_type = "multipart/mixed; boundary=sip-i"
    net = Net(media=MediaManager(engine, "127.0.0.1"))
    carrier, pbx = net.peer(CARRIER, "carrier"), net.peer(PBX, "pbx")
    carrier.invite(DID, body=body, headers=[("Content-Type", content_type)])
    carrier.take(100)
    uas = pbx.take_invite()
    assert uas.invite.get("Content-Type") == content_type
    sdp_part, isup_part = parse_multipart(content_type, uas.invite.body)
    assert isup_part.body == isup and isup_part.header("Content-Disposition") == "signal; handling=optional"
    relayed = SessionDescription.parse(sdp_part.body)
    assert b"203.0.113.10" not in uas.invite.body  # the carrier's media address
    assert relayed.connection.address == "127.0.0.1"
    assert find_sdp(content_type, uas.invite.body) == sdp_part.body
