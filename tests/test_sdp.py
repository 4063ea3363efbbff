"""Tests for sbc.sip.sdp: real-world offers, anchoring helpers, round trips and bad input."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sbc.sip.errors import SIPParseError
from sbc.sip.sdp import (
    MAX_SDP_BYTES,
    MAX_SDP_LINES,
    Connection,
    MediaDescription,
    Origin,
    SessionDescription,
)

TORTURE = Path("/work/shared/sip-torture")


def torture_body(name: str) -> bytes:
    """The body of a torture-test message: everything after the first CRLFCRLF."""
    return (TORTURE / name).read_bytes().split(b"\r\n\r\n", 1)[1]


def sdp(*lines: str) -> bytes:
    """Join lines with CRLF, ending in CRLF, as a SIP stack sends SDP."""
    return ("\r\n".join(lines) + "\r\n").encode()


G711_OFFER = sdp(
    "v=0",
    "o=- 3912345678 3912345678 IN IP4 192.0.2.10",
    "s=Asterisk",
    "c=IN IP4 192.0.2.10",
    "t=0 0",
    "m=audio 10000 RTP/AVP 0 8 101",
    "a=rtpmap:0 PCMU/8000",
    "a=rtpmap:8 PCMA/8000",
    "a=rtpmap:101 telephone-event/8000",
    "a=fmtp:101 0-16",
    "a=ptime:20",
    "a=maxptime:150",
    "a=sendrecv",
)

G729_OFFER = sdp(
    "v=0",
    "o=CiscoSystemsSIP-GW-UserAgent 4214 6548 IN IP4 198.51.100.7",
    "s=SIP Call",
    "c=IN IP4 198.51.100.7",
    "t=0 0",
    "m=audio 17204 RTP/AVP 18 101",
    "c=IN IP4 198.51.100.7",
    "a=fmtp:18 annexb=no",
    "a=rtpmap:101 telephone-event/8000",
    "a=fmtp:101 0-15",
    "a=ptime:20",
)

WEBRTC_OFFER = sdp(
    "v=0",
    "o=- 4611731400430051336 2 IN IP4 127.0.0.1",
    "s=-",
    "t=0 0",
    "a=group:BUNDLE 0 1",
    "a=msid-semantic: WMS stream",
    "m=audio 9 UDP/TLS/RTP/SAVPF 111 0",
    "c=IN IP4 203.0.113.5",
    "a=rtcp:9 IN IP4 0.0.0.0",
    "a=candidate:1 1 udp 2122260223 10.0.0.5 54400 typ host generation 0",
    "a=candidate:2 1 udp 1686052607 203.0.113.5 54400 typ srflx raddr 10.0.0.5 rport 54400",
    "a=ice-ufrag:F7gI",
    "a=ice-pwd:x9cml/YzichV2+XlhiMu8g",
    "a=fingerprint:sha-256 D2:FA:0E:C3:22:59:5E:14:95:69:92:3D:13:B4:84:24:2C:C2:A2:C0:3E:FD",
    "a=setup:actpass",
    "a=mid:0",
    "a=sendrecv",
    "a=rtcp-mux",
    "a=rtpmap:111 opus/48000/2",
    "a=rtcp-fb:111 transport-cc",
    "a=fmtp:111 minptime=10;useinbandfec=1",
    "m=video 9 UDP/TLS/RTP/SAVPF 96 97",
    "c=IN IP4 203.0.113.5",
    "b=AS:2500",
    "a=mid:1",
    "a=recvonly",
    "a=rtcp-mux",
    "a=rtpmap:96 VP8/90000",
    "a=rtcp-fb:96 goog-remb",
    "a=rtcp-fb:96 ccm fir",
    "a=rtcp-fb:96 nack",
    "a=rtcp-fb:96 nack pli",
    "a=rtpmap:97 rtx/90000",
    "a=fmtp:97 apt=96",
)


# Real-world offers.


def test_g711_offer_fields() -> None:
    sd = SessionDescription.parse(G711_OFFER)
    assert sd.version == 0
    assert sd.origin == Origin("-", "3912345678", 3912345678, "IN", "IP4", "192.0.2.10")
    assert sd.session_name == "Asterisk"
    assert sd.connection == Connection("IN", "IP4", "192.0.2.10")
    assert sd.times == ["t=0 0"]
    (audio,) = sd.media
    assert (audio.media, audio.port, audio.port_count, audio.proto) == ("audio", 10000, None, "RTP/AVP")
    assert audio.fmts == ["0", "8", "101"]
    assert audio.attributes[0] == ("rtpmap", "0 PCMU/8000")
    assert audio.attributes[-1] == ("sendrecv", None)
    assert audio.rtpmap() == {
        "0": ("PCMU", 8000, None),
        "8": ("PCMA", 8000, None),
        "101": ("telephone-event", 8000, None),
    }
    assert audio.attribute_values("fmtp") == ["101 0-16"]
    assert audio.direction(sd) == "sendrecv"
    assert not audio.is_held(sd)
    assert not audio.declined
    assert not audio.rtcp_mux
    assert audio.rtcp() is None
    assert audio.effective_connection(sd) == Connection("IN", "IP4", "192.0.2.10")
    assert sd.to_bytes() == G711_OFFER


def test_g729_static_payload_without_rtpmap_and_media_level_c() -> None:
    sd = SessionDescription.parse(G729_OFFER)
    audio = sd.media[0]
    assert audio.connections == [Connection("IN", "IP4", "198.51.100.7")]
    table = audio.rtpmap()
    assert table["18"] == ("G729", 8000, None)  # from the RFC 3551 static table
    assert table["101"] == ("telephone-event", 8000, None)
    assert sd.to_bytes() == G729_OFFER


def test_webrtc_offer_opus_video_rtcp_fb_mux_ice() -> None:
    sd = SessionDescription.parse(WEBRTC_OFFER)
    assert sd.connection is None
    assert sd.attributes[0] == ("group", "BUNDLE 0 1")
    assert sd.attributes[1] == ("msid-semantic", " WMS stream")  # value kept raw, space included
    audio, video = sd.media
    assert audio.proto == "UDP/TLS/RTP/SAVPF"
    assert audio.rtpmap() == {"111": ("opus", 48000, "2"), "0": ("PCMU", 8000, None)}
    assert audio.attribute_values("fmtp") == ["111 minptime=10;useinbandfec=1"]
    assert audio.rtcp_mux and video.rtcp_mux
    assert audio.rtcp() == (9, Connection("IN", "IP4", "0.0.0.0"))
    assert len(audio.attribute_values("candidate")) == 2
    assert audio.effective_connection(sd) == Connection("IN", "IP4", "203.0.113.5")
    assert video.bandwidths == ["AS:2500"]
    assert video.direction(sd) == "recvonly"
    assert video.attribute_values("rtcp-fb") == ["96 goog-remb", "96 ccm fir", "96 nack", "96 nack pli"]
    assert video.rtpmap()["97"] == ("rtx", 90000, None)
    assert sd.to_bytes() == WEBRTC_OFFER


def test_rfc5118_ipv6_in_sdp() -> None:
    body = torture_body("rfc5118/ipv6-in-sdp.dat")
    sd = SessionDescription.parse(body)
    assert sd.origin.addrtype == "IP6" and sd.origin.address == "2001:db8::20"
    assert sd.connection == Connection("IN", "IP6", "2001:db8::20")
    assert sd.times == ["t=3338481189 3370017201"]
    assert [(m.media, m.port) for m in sd.media] == [("audio", 6000), ("video", 6024)]
    assert sd.media[0].rtpmap() == {"2": ("G726-32", 8000, None)}
    assert sd.media[1].rtpmap() == {"107": ("H263-1998", 90000, None)}
    assert sd.to_bytes() == body


def test_rfc5118_multiple_ip_families_in_sdp() -> None:
    body = torture_body("rfc5118/mult-ip-in-sdp.dat")
    sd = SessionDescription.parse(body)
    assert sd.session_name == ""  # "s=" with nothing after it is kept as-is
    assert sd.origin.address == "host.example.com"  # o= may carry an FQDN
    assert sd.connection is None
    audio, video = sd.media
    assert audio.effective_connection(sd) == Connection("IN", "IP4", "192.0.2.1")
    assert video.effective_connection(sd) == Connection("IN", "IP6", "2001:db8::1")
    assert sd.to_bytes() == body


def test_rfc4475_sdp01_bad_rtpmap_is_skipped_not_fatal() -> None:
    sd = SessionDescription.parse(torture_body("rfc4475/sdp01.dat"))
    assert sd.media[0].fmts == ["0", "12"]
    assert sd.media[0].rtpmap() == {"0": ("PCMU", 8000, None), "12": ("QCELP", 8000, None)}
    # "a=rtpmap:31 LPC" has no clock rate: skipped, the static H261 entry applies.
    assert sd.media[1].rtpmap() == {"31": ("H261", 90000, None)}


def test_lf_line_ends_and_blank_lines_accepted_crlf_written() -> None:
    text = G711_OFFER.decode().replace("\r\n", "\n") + "\n\n"
    sd = SessionDescription.parse(text)
    assert sd == SessionDescription.parse(G711_OFFER)
    assert sd.to_bytes() == G711_OFFER


def test_missing_s_and_t_are_accepted_and_filled_in() -> None:
    sd = SessionDescription.parse(
        sdp("v=0", "o=- 1 1 IN IP4 192.0.2.1", "c=IN IP4 192.0.2.1", "m=audio 4000 RTP/AVP 0")
    )
    assert sd.session_name == "-"
    assert sd.times == ["t=0 0"]
    assert sd.to_bytes().startswith(
        b"v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\n"
    )


def test_out_of_order_session_lines_written_in_rfc_order() -> None:
    body = sdp(
        "v=0",
        "o=- 1 1 IN IP4 192.0.2.1",
        "s=-",
        "t=0 0",
        "a=tool:x",
        "c=IN IP4 192.0.2.1",
        "b=CT:128",
        "m=audio 4000 RTP/AVP 0",
        "a=ptime:20",
        "b=AS:64",
        "i=voice",
    )
    out = SessionDescription.parse(body).to_bytes().decode().split("\r\n")
    assert out == [
        "v=0",
        "o=- 1 1 IN IP4 192.0.2.1",
        "s=-",
        "c=IN IP4 192.0.2.1",
        "b=CT:128",
        "t=0 0",
        "a=tool:x",
        "m=audio 4000 RTP/AVP 0",
        "i=voice",
        "b=AS:64",
        "a=ptime:20",
        "",
    ]


def test_all_line_types_and_unknown_lines_are_kept() -> None:
    body = sdp(
        "v=0",
        "o=alice 2890844526 2890842807 IN IP4 10.47.16.5",
        "s=SDP Seminar",
        "i=A Seminar on the session description protocol",
        "u=http://www.example.com/seminars/sdp.pdf",
        "e=alice@example.com (Alice Smith)",
        "p=+1 617 555-6011",
        "c=IN IP4 224.2.17.12/127",
        "b=CT:1000",
        "t=2873397496 2873404696",
        "r=604800 3600 0 90000",
        "t=2873397500 2873404700",
        "z=2882844526 -1h 2898848070 0",
        "k=prompt",
        "a=recvonly",
        "y=0110000001",
        "m=audio 49170/2 RTP/AVP 0",
        "i=main audio",
        "c=IN IP4 224.2.17.12/127/3",
        "c=IN IP4 224.2.18.12/127",
        "k=clear:secret",
        "a=rtpmap:0 PCMU/8000",
        "f=unknown media-level line",
        "m=video 51372 RTP/AVP 99",
        "c=IN IP6 FF15::101/3",
        "a=rtpmap:99 h263-1998/90000",
    )
    sd = SessionDescription.parse(body)
    assert sd.info == "A Seminar on the session description protocol"
    assert sd.uri == "http://www.example.com/seminars/sdp.pdf"
    assert sd.emails == ["alice@example.com (Alice Smith)"]
    assert sd.phones == ["+1 617 555-6011"]
    assert sd.connection == Connection("IN", "IP4", "224.2.17.12", ttl="127")
    assert sd.bandwidths == ["CT:1000"]
    assert sd.times == ["t=2873397496 2873404696", "r=604800 3600 0 90000", "t=2873397500 2873404700"]
    assert sd.timezones == ["2882844526 -1h 2898848070 0"]
    assert sd.key == "prompt"
    assert sd.unknown == ["y=0110000001"]
    audio, video = sd.media
    assert audio.port == 49170 and audio.port_count == 2
    assert audio.info == "main audio"
    assert audio.connections[0] == Connection("IN", "IP4", "224.2.17.12", ttl="127", count="3")
    assert audio.key == "clear:secret"
    assert audio.unknown == ["f=unknown media-level line"]
    assert video.connections == [Connection("IN", "IP6", "FF15::101", count="3")]
    # Session direction applies to media without its own.
    assert audio.direction(sd) == "recvonly" and audio.direction() == "sendrecv"
    assert sd.to_bytes() == body


def test_fqdn_connection_address_is_accepted() -> None:
    sd = SessionDescription.parse(
        sdp("v=0", "o=- 1 1 IN IP4 pbx.example.com", "s=-", "c=IN IP4 pbx.example.com", "t=0 0")
    )
    assert sd.connection == Connection("IN", "IP4", "pbx.example.com")


# Hold, decline, direction.


@pytest.mark.parametrize(
    ("media_lines", "held", "direction"),
    [
        (["c=IN IP4 192.0.2.1", "a=sendonly"], True, "sendonly"),
        (["c=IN IP4 192.0.2.1", "a=inactive"], True, "inactive"),
        (["c=IN IP4 192.0.2.1", "a=recvonly"], False, "recvonly"),
        (["c=IN IP4 0.0.0.0"], True, "sendrecv"),  # RFC 2543 hold
        (["c=IN IP6 ::"], True, "sendrecv"),
        (["c=IN IP4 192.0.2.1"], False, "sendrecv"),
    ],
)
def test_hold_detection(media_lines: list[str], held: bool, direction: str) -> None:
    sd = SessionDescription.parse(
        sdp("v=0", "o=- 1 1 IN IP4 192.0.2.1", "s=-", "t=0 0", "m=audio 4000 RTP/AVP 0", *media_lines)
    )
    assert sd.media[0].is_held(sd) is held
    assert sd.media[0].direction(sd) == direction


def test_session_level_hold_via_session_attribute_and_address() -> None:
    sd = SessionDescription.parse(
        sdp(
            "v=0",
            "o=- 1 1 IN IP4 0.0.0.0",
            "s=-",
            "c=IN IP4 0.0.0.0",
            "t=0 0",
            "a=inactive",
            "m=audio 4000 RTP/AVP 0",
        )
    )
    assert sd.direction == "inactive"
    assert sd.media[0].is_held(sd)
    assert not sd.media[0].is_held()  # without the session it cannot know


def test_port_zero_is_declined_not_held() -> None:
    sd = SessionDescription.parse(
        sdp(
            "v=0",
            "o=- 1 1 IN IP4 192.0.2.1",
            "s=-",
            "c=IN IP4 192.0.2.1",
            "t=0 0",
            "m=video 0 RTP/AVP 31",
            "a=inactive",
            "m=audio 0 RTP/AVP",
        )
    )
    video, audio = sd.media
    assert video.declined and not video.is_held(sd)
    assert audio.declined and audio.fmts == []
    live = MediaDescription("audio", 5000, "RTP/AVP", ["0"], port_count=2)
    live.decline()
    assert live.declined and live.port_count is None and live.fmts == ["0"]


def test_set_direction_replaces_in_place_and_drops_duplicates() -> None:
    media = MediaDescription(
        "audio",
        4000,
        "RTP/AVP",
        ["0"],
        attributes=[("ptime", "20"), ("sendonly", None), ("x", "1"), ("inactive", None)],
    )
    media.set_direction("sendrecv")
    assert media.attributes == [("ptime", "20"), ("sendrecv", None), ("x", "1")]
    bare = MediaDescription("audio", 4000, "RTP/AVP", ["0"], attributes=[("ptime", "20")])
    bare.set_direction("inactive")
    assert bare.attributes == [("ptime", "20"), ("inactive", None)]
    assert bare.direction() == "inactive"
    with pytest.raises(ValueError):
        bare.set_direction("hold")


# Anchoring helpers.


def test_set_address_ipv4_rewrites_origin_session_media_and_rtcp() -> None:
    sd = SessionDescription.parse(WEBRTC_OFFER)
    sd.set_address("198.51.100.1")
    assert (sd.origin.addrtype, sd.origin.address) == ("IP4", "198.51.100.1")
    # No session c= and media all had their own: none is added.
    assert sd.connection is None
    for media in sd.media:
        assert media.connections == [Connection("IN", "IP4", "198.51.100.1")]
    assert sd.media[0].rtcp() == (9, Connection("IN", "IP4", "198.51.100.1"))
    reparsed = SessionDescription.parse(sd.to_bytes())
    assert reparsed == sd
    assert b"203.0.113.5" not in sd.to_bytes().split(b"a=candidate")[0]


def test_set_address_ipv6_switches_addrtype_and_drops_multicast_suffix() -> None:
    sd = SessionDescription.parse(torture_body("rfc5118/mult-ip-in-sdp.dat"))
    sd.set_address("2001:db8::99")
    assert sd.origin.addrtype == "IP6" and sd.origin.address == "2001:db8::99"
    assert [m.connections for m in sd.media] == [[Connection("IN", "IP6", "2001:db8::99")]] * 2
    multicast = SessionDescription.parse(
        sdp(
            "v=0",
            "o=- 1 1 IN IP4 192.0.2.1",
            "s=-",
            "c=IN IP4 224.2.1.1/127/2",
            "t=0 0",
            "m=audio 4000 RTP/AVP 0",
        )
    )
    multicast.set_address("192.0.2.50")
    assert multicast.connection == Connection("IN", "IP4", "192.0.2.50")


def test_set_address_keeps_hold_address_and_adds_missing_session_c() -> None:
    sd = SessionDescription.parse(
        sdp(
            "v=0",
            "o=- 1 1 IN IP4 10.0.0.1",
            "s=-",
            "t=0 0",
            "m=audio 4000 RTP/AVP 0",
            "c=IN IP4 0.0.0.0",
            "m=video 4002 RTP/AVP 31",
        )
    )
    sd.set_address("192.0.2.50")
    assert sd.media[0].connections == [Connection("IN", "IP4", "0.0.0.0")]
    assert sd.connection == Connection("IN", "IP4", "192.0.2.50")  # the video stream needs one
    assert sd.media[1].effective_connection(sd) == Connection("IN", "IP4", "192.0.2.50")
    with pytest.raises(ValueError):
        sd.set_address("relay.example.com")


def test_bump_version_and_remove_attributes() -> None:
    sd = SessionDescription.parse(WEBRTC_OFFER)
    sd.bump_version()
    assert sd.origin.sess_version == 3
    assert b"o=- 4611731400430051336 3 IN IP4" in sd.to_bytes()
    removed = sd.remove_attributes(["candidate", "ice-ufrag", "ice-pwd", "group"])
    assert removed == 5
    assert sd.attribute_values("group") == []
    assert sd.media[0].attribute_values("candidate") == []
    assert sd.media[0].remove_attributes({"rtcp-mux"}) == 1 and not sd.media[0].rtcp_mux
    assert sd.media[0].remove_attributes({"nothing"}) == 0


def test_anchoring_a_port_rewrite_keeps_everything_else() -> None:
    sd = SessionDescription.parse(G711_OFFER)
    sd.set_address("203.0.113.200")
    sd.media[0].port = 30000
    sd.bump_version()
    assert sd.to_bytes() == G711_OFFER.replace(b"192.0.2.10", b"203.0.113.200").replace(
        b"10000", b"30000"
    ).replace(b"3912345678 3912345678", b"3912345678 3912345679")


def test_rtcp_attribute_port_only_and_bad() -> None:
    media = MediaDescription("audio", 4000, "RTP/AVP", ["0"], attributes=[("rtcp", "4001")])
    assert media.rtcp() == (4001, None)
    media.attributes = [("rtcp", "x")]
    with pytest.raises(SIPParseError, match="a=rtcp port"):
        media.rtcp()
    media.attributes = [("rtcp", "4001 IN IP4 999.1.1.1")]
    with pytest.raises(SIPParseError, match="invalid IPv4"):
        media.rtcp()


def test_to_bytes_refuses_line_break_in_a_field() -> None:
    sd = SessionDescription.parse(G711_OFFER)
    sd.media[0].attributes.append(("x", "1\r\nc=IN IP4 6.6.6.6"))
    with pytest.raises(ValueError, match="line break"):
        sd.to_bytes()


# Bad input.

BASE = ["v=0", "o=- 1 1 IN IP4 192.0.2.1", "s=-", "t=0 0"]


@pytest.mark.parametrize(
    ("lines", "reason", "status"),
    [
        (["o=- 1 1 IN IP4 192.0.2.1", "v=0", "s=-"], "must begin with a v= line", 400),
        (["v=1", "o=- 1 1 IN IP4 192.0.2.1"], "unsupported SDP version", 400),
        (["v=0", "s=-", "t=0 0"], "no o= line", 400),
        ([*BASE, "o=- 1 1 IN IP4 192.0.2.1"], "duplicate o=", 400),
        ([*BASE, "v=0"], "duplicate v=", 400),
        ([*BASE, "s=again"], "duplicate s=", 400),
        (["v=0", "o=- 1 1 IN IP4"], "malformed o= line", 400),
        (["v=0", "o=- 1 x IN IP4 192.0.2.1"], "non-numeric o= sess-version", 400),
        ([*BASE, "m=audio abc RTP/AVP 0"], "non-numeric m= port", 400),
        ([*BASE, "m=audio 70000 RTP/AVP 0"], "m= port 70000 out of range", 400),
        ([*BASE, "m=audio -1 RTP/AVP 0"], "non-numeric m= port", 400),
        ([*BASE, "m=audio 4000/0 RTP/AVP 0"], "invalid m= port count", 400),
        ([*BASE, "m=audio 4000"], "malformed m= line", 400),
        ([*BASE, "c=IN IP4"], "malformed c= line", 400),
        ([*BASE, "c=IN IP4 192.0.2.1 extra"], "malformed c= line", 400),
        ([*BASE, "c=IN IP4 192.0.2.1/x"], "non-numeric ttl", 400),
        ([*BASE, "c=IN IP6 ff15::1/1/2"], "too many", 400),
        ([*BASE, "c=IN IP4 256.1.1.1"], "invalid IPv4 address", 400),
        ([*BASE, "c=IN IP4 192.0.2"], "invalid IPv4 address", 400),
        ([*BASE, "c=IN IP6 2001:db8:::1"], "invalid IPv6 address", 400),
        ([*BASE, "c=IN IP6 192.0.2.1"], "not an IP6 address", 400),
        ([*BASE, "c=IN IP4 2001:db8::1"], "not an IP4 address", 400),
        ([*BASE, "c=IN IP4 bad_host!"], "invalid address", 400),
        ([*BASE, "c=ATM NSAP 47.0005"], "unsupported c= network type", 488),
        ([*BASE, "c=IN IPX 1.2.3.4"], "unsupported c= address type", 488),
        ([*BASE, "c=IN IP4 192.0.2.1", "c=IN IP4 192.0.2.2"], "duplicate session-level c=", 400),
        ([*BASE, "m=audio 4000 RTP/AVP 0", "t=0 0"], "not allowed in a media section", 400),
        (
            [*BASE, "m=audio 4000 RTP/AVP 0", "o=- 1 1 IN IP4 192.0.2.1"],
            "not allowed in a media section",
            400,
        ),
        (["v=0", "o=- 1 1 IN IP4 192.0.2.1", "r=1 1 0"], "r= line before any t=", 400),
        ([*BASE, "b=AS64"], "malformed b= line", 400),
        ([*BASE, "a="], "empty attribute name", 400),
        ([*BASE, "a=:x"], "empty attribute name", 400),
        ([*BASE, "A=foo"], "malformed SDP line", 400),
        ([*BASE, "ab=foo"], "malformed SDP line", 400),
        ([*BASE, "a"], "malformed SDP line", 400),
        ([*BASE, "v =0"], "malformed SDP line", 400),
        ([*BASE, "i=one", "i=two"], "duplicate session-level i=", 400),
        ([*BASE, "m=audio 4000 RTP/AVP 0", "i=a", "i=b"], "duplicate media-level i=", 400),
    ],
)
def test_bad_sdp_is_refused_with_a_precise_reason(lines: list[str], reason: str, status: int) -> None:
    with pytest.raises(SIPParseError, match=reason) as caught:
        SessionDescription.parse(sdp(*lines))
    assert caught.value.status == status


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "empty SDP body"),
        (b"\r\n\r\n", "empty SDP body"),
        (b"v=0\ro=- 1 1 IN IP4 192.0.2.1\r\n", "bare CR"),
        (b"v=0\r\no=- 1 1 IN IP4 192.0.2.1\x00\r\n", "NUL"),
        (b"hello world", "must begin with a v= line"),
    ],
)
def test_bad_raw_bodies(data: bytes, reason: str) -> None:
    with pytest.raises(SIPParseError, match=reason):
        SessionDescription.parse(data)


def test_too_many_lines_and_too_many_bytes() -> None:
    at_limit = sdp(*BASE, *["a=x"] * (MAX_SDP_LINES - len(BASE)))
    assert len(SessionDescription.parse(at_limit).attributes) == MAX_SDP_LINES - len(BASE)
    with pytest.raises(SIPParseError, match="more than 1024 lines"):
        SessionDescription.parse(sdp(*BASE, *["a=x"] * (MAX_SDP_LINES - len(BASE) + 1)))
    with pytest.raises(SIPParseError, match="longer than"):
        SessionDescription.parse(sdp(*BASE, "a=" + "x" * MAX_SDP_BYTES))


def test_non_utf8_bytes_survive_a_round_trip() -> None:
    body = sdp(*BASE).replace(b"s=-", b"s=caf\xe9")
    sd = SessionDescription.parse(body)
    assert sd.to_bytes() == body


# Round-trip properties.

_token = st.text(alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJ0123456789-_.+/", min_size=1, max_size=12)
_text = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\r\n\x00"), max_size=30
)
_ipv4 = st.ip_addresses(v=4).map(str)
_ipv6 = st.ip_addresses(v=6).map(str)
_digits = st.integers(min_value=0, max_value=255).map(str)
_connection = st.one_of(
    st.builds(Connection, st.just("IN"), st.just("IP4"), _ipv4),
    st.builds(Connection, st.just("IN"), st.just("IP6"), _ipv6),
    st.builds(Connection, st.just("IN"), st.just("IP4"), _ipv4, _digits, st.one_of(st.none(), _digits)),
    st.builds(Connection, st.just("IN"), st.just("IP6"), _ipv6, st.none(), _digits),
)
_attr_name = st.text(alphabet="abcdefghijklmnopqrstuvwxyz-", min_size=1, max_size=12)
_attribute = st.tuples(_attr_name, st.one_of(st.none(), _text))
_bandwidth = st.builds(lambda t, v: f"{t}:{v}", st.sampled_from(["AS", "CT", "TIAS"]), st.integers(0, 10**6))
_unknown = st.builds(lambda c, v: f"{c}={v}", st.sampled_from("dfghjlnqwxy"), _text)
_media = st.builds(
    MediaDescription,
    media=st.sampled_from(["audio", "video", "application", "text", "image"]),
    port=st.integers(0, 65535),
    proto=st.sampled_from(["RTP/AVP", "RTP/SAVP", "UDP/TLS/RTP/SAVPF", "udptl"]),
    fmts=st.lists(_token, max_size=5),
    port_count=st.one_of(st.none(), st.integers(1, 8)),
    info=st.one_of(st.none(), _text),
    connections=st.lists(_connection, max_size=2),
    bandwidths=st.lists(_bandwidth, max_size=2),
    key=st.one_of(st.none(), _text),
    attributes=st.lists(_attribute, max_size=6),
    unknown=st.lists(_unknown, max_size=2),
)
_session = st.builds(
    SessionDescription,
    origin=st.builds(
        Origin,
        _token,
        st.integers(0, 2**64).map(str),
        st.integers(0, 2**64),
        st.just("IN"),
        st.just("IP4"),
        _token,
    ),
    session_name=_text,
    info=st.one_of(st.none(), _text),
    uri=st.one_of(st.none(), _text),
    emails=st.lists(_text, max_size=2),
    phones=st.lists(_text, max_size=2),
    connection=st.one_of(st.none(), _connection),
    bandwidths=st.lists(_bandwidth, max_size=2),
    times=st.lists(
        st.builds(lambda a, b: f"t={a} {b}", st.integers(0, 2**32), st.integers(0, 2**32)),
        min_size=1,
        max_size=2,
    ),
    timezones=st.lists(_text, max_size=1),
    key=st.one_of(st.none(), _text),
    attributes=st.lists(_attribute, max_size=6),
    media=st.lists(_media, max_size=4),
    unknown=st.lists(_unknown, max_size=2),
)


@given(_session)
def test_round_trip_of_any_model(sd: SessionDescription) -> None:
    data = sd.to_bytes()
    assert SessionDescription.parse(data) == sd
    assert SessionDescription.parse(data).to_bytes() == data


@given(st.binary(max_size=300))
def test_arbitrary_bytes_either_parse_or_raise_sip_parse_error(data: bytes) -> None:
    try:
        sd = SessionDescription.parse(b"v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\n" + data)
    except SIPParseError:
        return
    assert SessionDescription.parse(sd.to_bytes()) == sd
