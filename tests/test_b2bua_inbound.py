"""B2BUA inbound calls (carrier -> SBC -> customer PBX), driven sans-I/O with fake peers."""

from __future__ import annotations

import re

from rtp_relay_ext import RelayEngine
from sbc.media.manager import MediaManager
from sbc.sip.message import Request, Response
from tests.b2bua_harness import (
    CALLER,
    CARRIER,
    CARRIER_SDP,
    DID,
    DID_INVENTORY,
    DID_NO_TRUNK,
    PBX,
    PBX_SDP,
    SBC,
    Net,
    establish_inbound,
    new_branch,
    snapshot,
)


def test_inbound_call_flow_bye_from_carrier() -> None:
    net = Net()
    carrier = net.peer(CARRIER, "carrier")
    pbx = net.peer(PBX, "pbx")
    call = carrier.invite(DID)

    trying = carrier.take(100)
    assert trying.call_id == call.call_id
    uas = pbx.take_invite()
    inv = uas.invite
    assert inv.uri == f"sip:{DID}@127.0.0.3:5070"
    assert inv.ruri.user == DID
    assert inv.body == CARRIER_SDP
    assert inv.get("Content-Type") == "application/sdp"
    assert inv.call_id != call.call_id
    assert inv.top_via.startswith(f"SIP/2.0/UDP {SBC.host}:{SBC.port};branch=z9hG4bK")
    assert inv.get("Max-Forwards") == "69"
    assert CALLER in (inv.get("From") or "")

    uas.ringing()
    ringing = carrier.take(180)
    assert ringing.to_tag and ringing.to_tag != uas.local_tag
    assert not ringing.body
    uas.respond_invite(183, body=PBX_SDP)
    progress = carrier.take(183)
    assert progress.body == PBX_SDP
    assert progress.get("Content-Type") == "application/sdp"
    assert progress.to_tag == ringing.to_tag

    net.advance(2.0)
    uas.answer()
    ok = carrier.take(200)
    assert ok.body == PBX_SDP
    assert ok.to_tag == ringing.to_tag
    assert ok.get("Contact") == f"<sip:sbc@{SBC.host}:{SBC.port}>"
    call.ack(ok)
    ack = uas.take_ack()
    assert ack.cseq == (inv.cseq[0], "ACK")
    assert ack.uri == "sip:pbx@127.0.0.3:5070"  # the callee's Contact
    assert ack.to_tag == uas.local_tag
    carrier.quiet()
    pbx.quiet()

    net.advance(30.0)
    carrier.quiet()  # no 2xx retransmissions once ACKed
    pbx.quiet()
    bye = call.request("BYE")
    assert carrier.take(200).cseq == (bye.cseq[0], "BYE")
    pbx_bye = uas.take_in_dialog("BYE")
    assert pbx_bye.to_tag == uas.local_tag and pbx_bye.from_tag == inv.from_tag
    uas.respond(pbx_bye, 200)
    carrier.quiet()
    pbx.quiet()

    cdr = net.cdr()
    assert cdr.direction == "inbound"
    assert cdr.call_id == call.call_id
    assert (cdr.caller, cdr.callee) == (CALLER, DID)
    assert (cdr.customer, cdr.trunk, cdr.carrier) == ("acme", "pbx", "telco")
    assert cdr.disposition == "answered" and cdr.sip_code == 200
    assert cdr.hangup_by == "caller"
    assert cdr.duration_s == 30.0
    assert [(a.gateway, a.code) for a in cdr.attempts] == [("127.0.0.3:5070", 200)]
    assert net.b2bua.calls == {}


def test_inbound_bye_from_pbx() -> None:
    net = Net()
    c = establish_inbound(net)
    net.advance(5.0)
    bye = c.b.request("BYE")
    assert c.callee.take(200).cseq == (bye.cseq[0], "BYE")
    carrier_bye = c.a.take_in_dialog("BYE")
    assert carrier_bye.uri == "sip:carrier@127.0.0.2:5060"  # the carrier's Contact
    assert carrier_bye.to_tag == c.a.local_tag
    assert carrier_bye.from_tag == c.a.remote_tag
    assert carrier_bye.cseq[1] == "BYE"
    c.a.respond(carrier_bye, 200)
    cdr = net.cdr()
    assert cdr.hangup_by == "callee" and cdr.disposition == "answered"
    assert cdr.duration_s == 5.0


def test_bye_to_carrier_goes_to_its_contact_and_source() -> None:
    net = Net()
    c = establish_inbound(net)
    c.b.request("BYE")
    sent = net.sent_to(CARRIER)[-1]
    assert isinstance(sent.msg, Request) and sent.msg.method == "BYE"
    assert sent.msg.uri == "sip:carrier@127.0.0.2:5060"  # the carrier's Contact
    assert not c.callee.has("BYE")


_ADDR_RE = re.compile(rb"127\.0\.0\.([2-9])")


def test_topology_hiding_carrier_to_pbx() -> None:
    """Nothing the carrier put in its messages reaches the PBX, and nothing of the PBX's
    reaches the carrier (SDP aside: it is relayed as is until media anchoring exists)."""
    net = Net()
    carrier = net.peer(CARRIER, "carrier")
    pbx = net.peer(PBX, "pbx")
    secret_headers = [
        ("Record-Route", "<sip:edge1.carrier.example;lr>"),
        ("Record-Route", "<sip:127.0.0.2:5060;lr;ftag=abc>"),
        ("X-Carrier-Secret", "hunter2"),
        ("P-Asserted-Identity", "<sip:+14155550123@pai.carrier.example>"),
        ("Via", "SIP/2.0/UDP 10.9.8.7:5060;branch=z9hG4bKinnercarrierhop"),
        ("User-Agent", "CarrierSwitch 9.1"),
        ("P-Charging-Vector", "icid-value=carrier-icid-1"),
    ]
    call = carrier.invite(DID, headers=secret_headers)
    uas = pbx.take_invite()
    uas.ringing()
    uas.answer()
    ok = carrier.take(200)
    call.ack(ok)
    uas.take_ack()
    call.request("INFO", headers=[("X-Carrier-Secret", "hunter2")], body=b"")
    info = uas.take_in_dialog("INFO")
    uas.respond(info, 200, headers=[("X-Pbx-Secret", "s3cret")])
    call.request("BYE")
    bye = uas.take_in_dialog("BYE")
    uas.respond(bye, 200)

    inv_branch = call.invite_branch
    carrier_marks = [
        b"127.0.0.2",
        b"10.9.8.7",
        b"edge1.carrier.example",
        b"pai.carrier.example",
        b"hunter2",
        b"CarrierSwitch",
        b"carrier-icid",
        call.call_id.encode(),
        call.local_tag.encode(),
        inv_branch.encode(),
        b"sip:carrier@",
    ]
    to_pbx = net.sent_to(PBX)
    assert len(to_pbx) >= 4
    for sent in to_pbx:
        for mark in carrier_marks:
            assert mark not in sent.data, (mark, sent.data.decode())
        # The only loopback peers named towards the PBX are the SBC and the PBX itself.
        assert set(_ADDR_RE.findall(sent.data)) <= {b"3"}, sent.data.decode()

    pbx_marks = [
        b"127.0.0.3",
        b"5070",
        b"s3cret",
        uas.call_id.encode(),
        uas.local_tag.encode(),
        b"sip:pbx@",
    ]
    to_carrier = net.sent_to(CARRIER)
    assert len(to_carrier) >= 5
    for sent in to_carrier:
        for mark in pbx_marks:
            assert mark not in sent.data, (mark, sent.data.decode())
        assert set(_ADDR_RE.findall(sent.data)) <= {b"2"}, sent.data.decode()
        # The SBC's own tag stands in for the PBX's.
        if isinstance(sent.msg, Response) and sent.msg.status > 100:
            assert sent.msg.to_tag != uas.local_tag


def test_responses_to_carrier_keep_its_record_route() -> None:
    """RFC 3261 §12.1.1: the UAS copies Record-Route into its 2xx (the carrier's own side)."""
    net = Net()
    carrier = net.peer(CARRIER, "carrier")
    pbx = net.peer(PBX, "pbx")
    rr = "<sip:127.0.0.2:5060;lr>"
    call = carrier.invite(DID, headers=[("Record-Route", rr)])
    uas = pbx.take_invite()
    assert uas.invite.get("Record-Route") is None
    uas.answer()
    ok = carrier.take(200)
    assert ok.values("Record-Route") == [rr]
    call.ack(ok)
    uas.take_ack()
    uas.request("BYE")
    bye = call.take_in_dialog("BYE")
    assert bye.values("Route") == [rr]


def test_unassigned_number_gets_404() -> None:
    net = Net()
    carrier = net.peer(CARRIER, "carrier")
    pbx = net.peer(PBX, "pbx")
    call = carrier.invite(DID_INVENTORY)
    carrier.take(100)
    resp = carrier.take(404)
    assert resp.to_tag
    call.ack(resp)
    net.advance(40)
    carrier.quiet()  # ACKed: no retransmission of the 404
    pbx.quiet()
    # The carrier's attempt is billed and traceable: one CDR, refused with 404.
    [cdr] = net.cdrs
    assert (cdr.direction, cdr.carrier, cdr.sip_code, cdr.disposition) == ("inbound", "telco", 404, "rejected")
    assert cdr.end_reason == "Unassigned Number" and cdr.attempts == ()
    call2 = carrier.invite("+19998887777")
    carrier.take(100)
    call2.ack(carrier.take(404))


def test_number_without_trunk_is_refused() -> None:
    net = Net()
    carrier = net.peer(CARRIER, "carrier")
    pbx = net.peer(PBX, "pbx")
    carrier.invite(DID_NO_TRUNK)
    carrier.take(100)
    resp = carrier.take(lambda m: isinstance(m, Response) and m.status >= 300)
    assert resp.status == 480
    pbx.quiet()
    assert net.b2bua.calls == {}


def test_unknown_source_gets_403() -> None:
    net = Net()
    stranger = net.peer(type(CARRIER)("udp", "127.0.0.9", 5060), "stranger")
    call = stranger.invite(DID)
    stranger.take(100)
    call.ack(stranger.take(403))
    assert net.b2bua.calls == {}
    assert net.sent_to(PBX) == []


def test_invite_retransmission_is_absorbed() -> None:
    net = Net()
    carrier = net.peer(CARRIER, "carrier")
    pbx = net.peer(PBX, "pbx")
    call = carrier.invite(DID)
    carrier.take(100)
    carrier.send(call.invite_req)
    carrier.take(100)  # the transaction re-sends its last response
    pbx.take_invite()
    pbx.quiet()
    assert len(net.b2bua.calls) == 1


def test_pbx_target_failover_on_503() -> None:
    from routing.model import TrunkTarget

    targets = (TrunkTarget("sip:127.0.0.3:5070", priority=1), TrunkTarget("sip:127.0.0.7:5060", priority=2))
    net = Net(snapshot(targets=targets))
    carrier = net.peer(CARRIER, "carrier")
    pbx = net.peer(PBX, "pbx")
    pbx2 = net.peer(type(PBX)("udp", "127.0.0.7", 5060), "pbx2")
    call = carrier.invite(DID)
    first = pbx.take_invite()
    first.respond_invite(503)
    pbx.take("ACK")
    second = pbx2.take_invite()
    assert second.invite.uri == f"sip:{DID}@127.0.0.7:5060"
    second.answer()
    ok = carrier.take(200)
    call.ack(ok)
    second.take_ack()
    call.request("BYE")
    second.respond(second.take_in_dialog("BYE"), 200)
    cdr = net.cdr()
    assert [(a.gateway, a.code) for a in cdr.attempts] == [("127.0.0.3:5070", 503), ("127.0.0.7:5060", 200)]


def test_pbx_busy_is_relayed() -> None:
    net = Net()
    carrier = net.peer(CARRIER, "carrier")
    pbx = net.peer(PBX, "pbx")
    call = carrier.invite(DID)
    uas = pbx.take_invite()
    uas.ringing()
    uas.respond_invite(486)
    pbx.take("ACK")
    busy = carrier.take(486)
    call.ack(busy)
    cdr = net.cdr()
    assert cdr.disposition == "busy" and cdr.sip_code == 486 and cdr.hangup_by is None
    assert cdr.answer_time is None and cdr.duration_s == 0


def test_call_with_unparseable_ruri_user_refused_without_crash() -> None:
    net = Net()
    carrier = net.peer(CARRIER, "carrier")
    call = carrier.invite("not-a-number")
    carrier.take(100)
    resp = carrier.take(lambda m: isinstance(m, Response) and m.status >= 300)
    assert resp.status == 404
    call.ack(resp)


def test_ack_with_new_branch_each_time_after_2xx_retransmission() -> None:
    """The caller's ACK stops the SBC's 2xx retransmissions; an ACK retransmission is harmless."""
    net = Net()
    carrier = net.peer(CARRIER, "carrier")
    pbx = net.peer(PBX, "pbx")
    call = carrier.invite(DID)
    carrier.take(100)
    uas = pbx.take_invite()
    uas.answer()
    ok = carrier.take(200)
    net.advance(0.6)
    assert carrier.take(200).to_tag == ok.to_tag  # retransmitted at T1
    call.ack(ok)
    uas.take_ack()
    call.request("ACK", cseq=1, branch=new_branch())
    pbx.quiet()
    net.advance(10)
    carrier.quiet()


def test_display_name_with_quotes_is_escaped_towards_the_pbx() -> None:
    from sbc.b2bua.call import display_and_user

    net = Net()
    carrier = net.peer(CARRIER, "carrier")
    pbx = net.peer(PBX, "pbx")
    carrier.invite(DID, display='Al \\"The Pal\\" Smith')
    inv = pbx.take_invite().invite
    assert display_and_user(inv.get("From") or "") == ('Al "The Pal" Smith', CALLER)


def test_late_offer_answer_travels_in_the_ack() -> None:
    net = Net()
    carrier = net.peer(CARRIER, "carrier")
    pbx = net.peer(PBX, "pbx")
    call = carrier.invite(DID, body=b"")
    uas = pbx.take_invite()
    assert uas.invite.body == b"" and uas.invite.get("Content-Type") is None
    uas.answer(PBX_SDP)  # the offer
    ok = carrier.take(200)
    assert ok.body == PBX_SDP
    call.ack(ok, body=CARRIER_SDP)  # the answer
    ack = uas.take_ack()
    assert ack.body == CARRIER_SDP
    assert ack.get("Content-Type") == "application/sdp"


def test_a_full_relay_port_range_refuses_the_call_with_503_and_the_cdr_says_why() -> None:
    """The relay's range holds one call (4 ports): the next call's offer finds no ports. The
    caller gets 503 and the CDR names the cause, which an overload's stateless 503 (no CDR) and a
    carrier's 503 (in the attempts) do not."""
    engine = RelayEngine("127.0.0.1", 42300, 42303, quarantine=0.1)
    try:
        net = Net(media=MediaManager(engine, "127.0.0.1"))
        first = establish_inbound(net)
        assert first.b.invite.body != CARRIER_SDP  # anchored: the relay's address and ports
        carrier = first.caller
        call = carrier.invite(DID)
        carrier.take(100)
        refused = carrier.take(503)
        call.ack(refused)
        first.callee.quiet()  # nothing reached the PBX
        [cdr] = net.cdrs
        assert (cdr.sip_code, cdr.disposition, cdr.attempts) == (503, "failed", ())
        assert cdr.end_reason == "media refused: no relay ports left"
    finally:
        engine.close()
