"""stamp_via: received and rport on the top Via of a request from the network (RFC 3261
§18.2.1, RFC 3581 §4), and nothing touched when the Via is already right."""

from __future__ import annotations

import pytest

from sbc.sip.checks import stamp_via
from sbc.sip.message import Request, parse_message


def invite(via: str) -> Request:
    msg = parse_message(
        (
            f"INVITE sip:+14155550100@198.51.100.20 SIP/2.0\r\nVia: {via}\r\n"
            "Via: SIP/2.0/UDP 192.0.2.99;branch=z9hG4bKinner\r\nMax-Forwards: 70\r\n"
            "From: <sip:alice@203.0.113.10>;tag=a\r\nTo: <sip:+14155550100@198.51.100.20>\r\n"
            "Call-ID: stamp@203.0.113.10\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n"
        ).encode()
    )
    assert isinstance(msg, Request)
    return msg


def vias(req: Request) -> list[str]:
    return [v for n, v in req.headers if n == "Via"]


@pytest.mark.parametrize(
    ("via", "source", "force", "top"),
    [
        # sent-by is the source and no rport: left as it is
        ("SIP/2.0/UDP 203.0.113.10:5060;branch=z9hG4bKa", "203.0.113.10", False, None),
        # sent-by is another address (NAT): received
        ("SIP/2.0/UDP 10.0.0.5:5060;branch=z9hG4bKa", "203.0.113.10", False,
         "SIP/2.0/UDP 10.0.0.5:5060;branch=z9hG4bKa;received=203.0.113.10"),
        # rport asked for: filled, and received added even though sent-by matches
        ("SIP/2.0/UDP 203.0.113.10:5060;branch=z9hG4bKa;rport", "203.0.113.10", False,
         "SIP/2.0/UDP 203.0.113.10:5060;branch=z9hG4bKa;rport=40000;received=203.0.113.10"),
        # force_rport: as if asked for, rport written before received
        ("SIP/2.0/UDP 10.0.0.5:5060;branch=z9hG4bKa", "203.0.113.10", True,
         "SIP/2.0/UDP 10.0.0.5:5060;branch=z9hG4bKa;rport=40000;received=203.0.113.10"),
        # already stamped: left as it is
        ("SIP/2.0/UDP 10.0.0.5:5060;branch=z9hG4bKa;rport=40000;received=203.0.113.10", "203.0.113.10",
         True, None),
    ],
)
def test_stamp_via(via: str, source: str, force: bool, top: str | None) -> None:
    req = invite(via)
    before = vias(req)
    stamp_via(req, source, 40000, force_rport=force)
    after = vias(req)
    if top is None:
        assert after[0] is before[0]  # not even rewritten
    else:
        assert after[0] == top
        assert req.top_via == top  # the request's own view follows
    assert after[1:] == before[1:]  # the inner Vias stay


def test_the_shared_parse_of_the_received_via_stays_as_received() -> None:
    via = "SIP/2.0/UDP 10.0.0.5:5060;branch=z9hG4bKa;rport"
    first, second = invite(via), invite(via)
    stamp_via(first, "203.0.113.10", 40000)
    assert vias(second)[0] == via
    stamp_via(second, "198.51.100.7", 41000)
    assert vias(second)[0] == "SIP/2.0/UDP 10.0.0.5:5060;branch=z9hG4bKa;rport=41000;received=198.51.100.7"
