"""Call flows at the edges of RFC 3261 an SBC meets in the field: redirects, ring timeouts,
lost ACKs of re-INVITE answers, and dialogs the far side has forgotten."""

from __future__ import annotations

from sbc.b2bua.engine import B2BUAConfig
from tests.b2bua_harness import (
    CARRIER,
    CARRIER_SDP,
    DIALLED,
    DID,
    GW_A,
    GW_B,
    PBX,
    PBX_SDP,
    T1,
    Net,
    establish_inbound,
    sdp,
)


def test_redirect_from_the_pbx_is_not_passed_on() -> None:
    """A 302 would hand the carrier the PBX's Contact: the caller gets 480, the CDR the 302."""
    net = Net()
    caller = net.peer(CARRIER, "carrier")
    call = caller.invite(DID)
    caller.take(100)
    uas = net.peer(PBX, "pbx").take_invite()
    uas.respond_invite(302, headers=[("Contact", "<sip:elsewhere@198.51.100.7>")])
    net.peer(PBX, "pbx").take("ACK")
    final = caller.take(480)
    assert "198.51.100.7" not in final.to_bytes().decode()
    call.ack(final)
    cdr = net.cdr()
    assert cdr.sip_code == 480 and [a.code for a in cdr.attempts] == [302]


def test_outbound_ring_timeout_ends_with_no_answer_without_ringing_another_carrier() -> None:
    net = Net(config=B2BUAConfig(ring_timeout_s=30.0))
    pbx = net.peer(PBX, "pbx")
    call = pbx.invite(DIALLED, body=PBX_SDP)
    pbx.take(100)
    uas = net.peer(GW_A, "gw").take_invite()
    uas.ringing()
    pbx.take(180)
    net.advance(31.0)
    cancel = net.peer(GW_A, "gw").take("CANCEL")
    assert cancel.call_id == uas.call_id
    final = pbx.take(480)
    call.ack(final)
    assert not net.peer(GW_B, "gwb").has("INVITE")  # carrier B never rang the callee again
    cdr = net.cdr()
    assert (cdr.disposition, cdr.sip_code) == ("no_answer", 480)


def test_outbound_silent_gateway_still_fails_over() -> None:
    net = Net(config=B2BUAConfig(no_response_timeout_s=2.0))
    pbx = net.peer(PBX, "pbx")
    pbx.invite(DIALLED, body=PBX_SDP)
    pbx.take(100)
    net.peer(GW_A, "gw").take_invite()  # never answers anything
    net.advance(2.5)
    assert net.peer(GW_B, "gwb").take_invite()


def test_reinvite_answer_retransmitted_until_acked() -> None:
    net = Net()
    c = establish_inbound(net)
    c.a.request("INVITE", body=CARRIER_SDP)
    re_inv = c.b.take_in_dialog("INVITE")
    c.b.respond(re_inv, 200, body=PBX_SDP, headers=[("Contact", c.callee.contact())])
    first = c.caller.take(200)
    net.advance(T1 + 0.01)  # the 200 to the caller was "lost": the SBC sends it again
    again = c.caller.take(200)
    assert again.to_bytes() == first.to_bytes()
    c.a.request("ACK", cseq=c.a.cseq)
    assert c.b.take_ack().cseq == (re_inv.cseq[0], "ACK")
    net.advance(10 * T1)
    assert not c.caller.has(200)  # ACKed: no more retransmissions
    # And the dialog takes the next re-INVITE (no 491).
    c.a.request("INVITE", body=CARRIER_SDP)
    assert c.b.take_in_dialog("INVITE")


def test_reinvite_answer_never_acked_ends_the_call_instead_of_491_for_ever() -> None:
    net = Net()
    c = establish_inbound(net)
    c.a.request("INVITE", body=sdp("192.0.2.10", 20000, "sendonly"))
    re_inv = c.b.take_in_dialog("INVITE")
    c.b.respond(re_inv, 200, body=PBX_SDP, headers=[("Contact", c.callee.contact())])
    net.advance(64 * T1 + 1)
    assert len(c.caller.take_all(200)) >= 5  # retransmitted, doubling up to T2
    # The SBC ACKed the PBX's 2xx itself, then ended the call on both sides.
    assert c.b.take_ack().cseq == (re_inv.cseq[0], "ACK")
    assert c.callee.take("BYE") and c.caller.take("BYE")
    cdr = net.cdr()
    assert (cdr.hangup_by, cdr.end_reason) == ("sbc", "no ACK for re-INVITE")


def test_481_to_a_relayed_request_ends_the_call() -> None:
    net = Net()
    c = establish_inbound(net)
    c.a.request("INFO", body=b"", headers=[("Content-Type", "application/dtmf-relay")])
    info = c.b.take_in_dialog("INFO")
    c.b.respond(info, 481)
    assert c.caller.take(481)
    assert c.callee.take("BYE") and c.caller.take("BYE")
    assert net.cdr().end_reason == "far side answered 481 in dialog"


def test_other_errors_to_relayed_requests_keep_the_call() -> None:
    net = Net()
    c = establish_inbound(net)
    c.a.request("INFO")
    info = c.b.take_in_dialog("INFO")
    c.b.respond(info, 415)
    assert c.caller.take(415)
    assert not c.callee.has("BYE") and net.cdrs == []


def _prack(c_call, resp) -> None:
    """PRACK a reliable provisional (RFC 3262 §7.2)."""
    c_call.learn(resp)
    c_call.request("PRACK", headers=[("RAck", f"{resp.get('RSeq')} {resp.cseq[0]} INVITE")])


def test_caller_requiring_100rel_gets_reliable_provisionals() -> None:
    net = Net()
    caller = net.peer(CARRIER, "carrier")
    call = caller.invite(DID, headers=[("Require", "100rel"), ("Supported", "100rel")])
    caller.take(100)
    uas = net.peer(PBX, "pbx").take_invite()
    uas.ringing()
    ringing = caller.take(180)
    assert ringing.get("Require") == "100rel" and ringing.get("RSeq") == "1"
    # Early media while the 180 is unacknowledged waits for the PRACK; plain ringing is dropped.
    uas.respond_invite(183, body=PBX_SDP)
    uas.ringing()
    assert not caller.has(183)
    net.advance(T1 + 0.01)
    assert caller.take(180).get("RSeq") == "1"  # retransmitted: no PRACK yet
    _prack(call, ringing)
    assert caller.take(200).cseq[1] == "PRACK"
    early = caller.take(183)
    assert early.get("RSeq") == "2" and early.body  # the queued one, now sent reliably
    _prack(call, early)
    caller.take(200)
    net.advance(10 * T1)
    assert not caller.has(183) and not caller.has(180)  # acknowledged: no retransmissions
    uas.answer()
    ok = caller.take(call.final_ok)
    call.ack(ok)
    assert net.peer(PBX, "pbx").take("ACK")


def test_caller_that_never_pracks_gets_500_and_the_callee_is_cancelled() -> None:
    net = Net()
    caller = net.peer(CARRIER, "carrier")
    caller.invite(DID, headers=[("Require", "100rel")])
    caller.take(100)
    uas = net.peer(PBX, "pbx").take_invite()
    uas.ringing()
    net.advance(64 * T1 + 1)
    assert len(caller.take_all(180)) >= 5
    assert caller.take(500)
    assert net.peer(PBX, "pbx").take("CANCEL")
    assert net.cdr().end_reason == "no PRACK from caller"


def test_caller_without_100rel_gets_plain_provisionals() -> None:
    net = Net()
    caller = net.peer(CARRIER, "carrier")
    caller.invite(DID, headers=[("Supported", "100rel")])
    caller.take(100)
    net.peer(PBX, "pbx").take_invite().ringing()
    ringing = caller.take(180)
    assert ringing.get("RSeq") is None and ringing.get("Require") is None
