"""SDP anchoring, pure: read where a side wants its media, write SDP that points at the relay.

An offer or answer from one side of a call tells the relay where that side receives RTP; the
copy given to the other side must name only the relay's address and ports, so the endpoints never
learn each other's media addresses (topology hiding for media, and what makes NAT'd endpoints
work with latching). ICE attributes are removed: the relay is the only candidate.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..sip.sdp import Connection, MediaDescription, SessionDescription

# Attributes that describe the endpoint's own transport candidates; meaningless (and leaking)
# once media is anchored (RFC 8839 ICE attributes).
ICE_ATTRIBUTES = frozenset(
    {"candidate", "ice-ufrag", "ice-pwd", "ice-options", "end-of-candidates", "remote-candidates"}
)
# RFC 4733 telephone-event's usual dynamic payload type when the SDP does not name one.
DEFAULT_DTMF_PT = 101
# RFC 3551: G.711 and most narrowband codecs run an 8 kHz RTP clock.
DEFAULT_CLOCK_RATE = 8000


@dataclass(frozen=True)
class StreamPeer:
    """Where one side receives one media stream (one m= line), as its SDP says.

    ``address`` is None for a declined stream (port 0) or an unspecified address (0.0.0.0 or ::,
    the RFC 2543 hold convention): the relay then keeps its previous peer and latches.
    ``held`` says this side puts the other on hold (sendonly, inactive, unspecified address);
    ``quiet`` says the stream may carry no RTP at all for a long time because of this SDP: held,
    or recvonly (the usual answer to a hold: the side that answers it sends nothing).
    """

    index: int
    media: str
    address: str | None
    rtp_port: int
    rtcp_port: int | None
    rtcp_mux: bool
    clock_rate: int
    dtmf_pt: int | None
    held: bool
    quiet: bool = False

    @property
    def declined(self) -> bool:
        return self.rtp_port == 0


def describe(sdp: SessionDescription) -> list[StreamPeer]:
    """Every m= line of ``sdp`` as a :class:`StreamPeer`, in order."""
    name: str
    rtpmap: dict
    m: MediaDescription
    conn: Connection
    out: list = []
    for i, m in enumerate(sdp.media):
        conn = m.effective_connection(sdp)
        address = conn.address if conn is not None else None
        if address in ("0.0.0.0", "::"):
            address = None
        rtcp = m.rtcp()
        rtcp_port = rtcp[0] if rtcp is not None else (m.port + 1 if m.port else None)
        rtpmap = m.rtpmap()
        clock_rate = DEFAULT_CLOCK_RATE
        dtmf_pt: int | None = None
        for pt, (name, rate, _channels) in rtpmap.items():
            if name.lower() == "telephone-event" and rate == DEFAULT_CLOCK_RATE:
                dtmf_pt = int(pt)
        if m.fmts and m.fmts[0] in rtpmap:
            clock_rate = rtpmap[m.fmts[0]][1]
        held = m.is_held(sdp)
        # Positional (index, media, address, rtp_port, rtcp_port, rtcp_mux, clock_rate, dtmf_pt,
        # held, quiet): a keyword call costs argument parsing by name.
        out.append(
            StreamPeer(
                i,
                m.media,
                None if m.port == 0 else address,
                m.port,
                rtcp_port,
                m.rtcp_mux,
                clock_rate,
                dtmf_pt,
                held,
                m.port != 0 and (held or m.direction(sdp) == "recvonly"),
            )
        )
    return out


def anchor(sdp: SessionDescription, relay_ip: str, ports: list) -> bytes:
    """``sdp`` rewritten to send the other side's media to the relay; returns the new body.

    ``ports[i]`` is the relay's (RTP, RTCP) pair facing the side that will receive this SDP, or
    None for a stream the relay does not carry (it is declined: port 0). Connection lines and the
    origin address become ``relay_ip`` (an unspecified hold address is kept), ``a=rtcp`` follows
    the relay's RTCP port, ICE attributes go, and the origin version is bumped (RFC 3264 §8).
    Modifies ``sdp`` in place.
    """
    m: MediaDescription
    for m, pair in zip(sdp.media, ports, strict=True):
        if pair is None or m.port == 0:
            m.decline()
            continue
        rtp, rtcp = pair
        m.port = rtp
        if m.attribute_values("rtcp"):  # a method call, not any(...): a cpdef function holds no generator
            m.attributes = [
                ("rtcp", str(rtcp if not m.rtcp_mux else rtp)) if name == "rtcp" else (name, value)
                for name, value in m.attributes
            ]
    sdp.remove_attributes(ICE_ATTRIBUTES)
    sdp.set_address(relay_ip)
    sdp.bump_version()
    return sdp.to_bytes()
