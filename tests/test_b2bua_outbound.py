"""B2BUA outbound calls (PBX -> SBC -> carriers): LCR, failover, timeouts, final answers."""

from __future__ import annotations

from routing.model import Gateway
from sbc.b2bua.engine import B2BUAConfig
from sbc.sip.message import Request, Response
from tests.b2bua_harness import (
    CARRIER,
    DIALLED,
    GW_A,
    GW_A2,
    GW_B,
    GW_SDP,
    PBX,
    PBX_SDP,
    Net,
    establish_outbound,
    reply,
    snapshot,
)


def _final(m) -> bool:
    return isinstance(m, Response) and m.status >= 200


def test_outbound_first_carrier_answers_with_tech_prefix_and_strip_plus() -> None:
    net = Net()
    c = establish_outbound(net)
    inv = c.b.invite
    # Carrier A: tech_prefix "77#", strip_plus.
    assert inv.uri == "sip:77#12125551234@127.0.0.4:5060"
    assert inv.body == PBX_SDP
    c.a.request("BYE")
    c.caller.take(200)
    c.b.respond(c.b.take_in_dialog("BYE"), 200)
    cdr = net.cdr()
    assert cdr.direction == "outbound"
    assert (cdr.caller, cdr.callee) == ("+14155550123", DIALLED)
    assert (cdr.customer, cdr.trunk, cdr.carrier, cdr.gateway) == ("acme", "pbx", "A", "127.0.0.4:5060")
    assert [(a.carrier, a.code) for a in cdr.attempts] == [("A", 200)]
    assert cdr.hangup_by == "caller"


def test_outbound_failover_503_to_next_carrier() -> None:
    net = Net()
    pbx = net.peer(PBX, "pbx")
    gw_a = net.peer(GW_A, "gwa")
    gw_b = net.peer(GW_B, "gwb")
    call = pbx.invite("12125551234", body=PBX_SDP)  # national form, normalised to +1...
    pbx.take(100)
    a = gw_a.take_invite()
    a.respond_invite(100)
    a.respond_invite(503)
    ack = gw_a.take("ACK")
    assert ack.cseq[0] == a.invite.cseq[0]
    b = gw_b.take_invite()
    assert b.invite.uri == "sip:+12125551234@127.0.0.5:5060"  # carrier B: no prefix, keeps +
    assert b.invite.call_id != a.invite.call_id
    assert not pbx.has(503) and not pbx.has(500)
    b.ringing()
    pbx.take(180)
    b.answer(GW_SDP)
    ok = pbx.take(200)
    assert ok.body == GW_SDP
    call.ack(ok)
    b.take_ack()
    b.request("BYE")
    gw_b.take(200)
    call.respond(call.take_in_dialog("BYE"), 200)
    cdr = net.cdr()
    assert [(x.carrier, x.gateway, x.code) for x in cdr.attempts] == [
        ("A", "127.0.0.4:5060", 503),
        ("B", "127.0.0.5:5060", 200),
    ]
    assert cdr.carrier == "B" and cdr.hangup_by == "callee"


def test_outbound_failover_between_gateways_of_one_carrier() -> None:
    snap = snapshot(
        carrier_a={
            "gateways": (Gateway("127.0.0.4", 5060, priority=1), Gateway("127.0.0.6", 5060, priority=2))
        }
    )
    net = Net(snap)
    pbx = net.peer(PBX, "pbx")
    g1 = net.peer(GW_A, "g1")
    g2 = net.peer(GW_A2, "g2")
    pbx.invite(DIALLED, body=PBX_SDP)
    g1.take_invite().respond_invite(500)
    second = g2.take_invite()
    assert second.invite.uri.startswith("sip:77#12125551234@127.0.0.6")
    second.respond_invite(503)
    net.peer(GW_B, "gwb").take_invite().respond_invite(502)
    final = pbx.take(_final)
    # RFC 3261 §16.7: the best of 500/503/502 (a 503 is never passed upstream).
    assert final.status in (500, 502)
    cdr = net.cdr()
    assert [a.code for a in cdr.attempts] == [500, 503, 502]
    assert cdr.disposition == "failed"


def test_outbound_carrier_limit_counts_the_call_once_across_its_gateways() -> None:
    """A carrier with max_calls=1 and two gateways: failing over to its second gateway is the
    same call, not a second one."""
    snap = snapshot(
        carrier_a={
            "gateways": (Gateway("127.0.0.4", 5060, priority=1), Gateway("127.0.0.6", 5060, priority=2)),
            "max_calls": 1,
        }
    )
    net = Net(snap)
    pbx = net.peer(PBX, "pbx")
    pbx.invite(DIALLED, body=PBX_SDP)
    net.peer(GW_A, "g1").take_invite().respond_invite(503)
    second = net.peer(GW_A2, "g2").take_invite()
    second.answer(GW_SDP)
    assert pbx.take(200)
    assert [a[2] for a in next(iter(net.b2bua.calls.values())).attempts] == [503, 200]


def test_outbound_carrier_limit_released_when_failing_over_to_another_carrier() -> None:
    snap = snapshot(carrier_a={"max_calls": 1})
    net = Net(snap)
    pbx = net.peer(PBX, "pbx")
    gw_a = net.peer(GW_A, "gwa")
    gw_b = net.peer(GW_B, "gwb")
    pbx.invite(DIALLED, body=PBX_SDP)
    gw_a.take_invite().respond_invite(503)
    b1 = gw_b.take_invite()
    b1.answer(GW_SDP)
    pbx.take(200)
    # The first call now sits on carrier B: carrier A takes a second call.
    pbx.invite(DIALLED, body=PBX_SDP)
    assert gw_a.has("INVITE")
    assert not gw_b.has("INVITE")


def test_no_route_gets_404_and_cdr() -> None:
    net = Net()
    pbx = net.peer(PBX, "pbx")
    call = pbx.invite("+447700900123", body=PBX_SDP)
    pbx.take(100)
    resp = pbx.take(_final)
    assert resp.status == 404
    call.ack(resp)
    cdr = net.cdr()
    assert cdr.disposition == "rejected" and cdr.attempts == ()


def test_undiallable_number_gets_484() -> None:
    net = Net()
    pbx = net.peer(PBX, "pbx")
    call = pbx.invite("abc", body=PBX_SDP)
    pbx.take(100)
    resp = pbx.take(_final)
    assert resp.status == 484
    call.ack(resp)


def test_gateway_never_answers_next_gateway_after_timeout_and_late_200_killed() -> None:
    net = Net(config=B2BUAConfig(no_response_timeout_s=3.0))
    pbx = net.peer(PBX, "pbx")
    gw_a = net.peer(GW_A, "gwa")
    gw_b = net.peer(GW_B, "gwb")
    call = pbx.invite(DIALLED, body=PBX_SDP)
    pbx.take(100)
    silent = gw_a.take_invite()
    net.advance(2.9)
    assert not gw_b.has("INVITE")
    assert len(gw_a.take_all("INVITE")) >= 2  # Timer A retransmissions meanwhile
    net.advance(0.2)
    b = gw_b.take_invite()
    gw_a.take_all("INVITE")
    # The abandoned gateway wakes up and answers: ACK it (new transaction, to its Contact)
    # and hang it up, without disturbing the live attempt.
    silent.answer(GW_SDP)
    ack = gw_a.take("ACK")
    assert ack.to_tag == silent.local_tag
    assert ack.uri == "sip:gwa@127.0.0.4:5060"
    assert ack.branch != silent.invite.branch  # the ACK of a 2xx is its own transaction
    bye = silent.take_in_dialog("BYE")
    silent.respond(bye, 200)
    assert not pbx.has(200)
    # The 200 is retransmitted: ACKed again, but only one BYE.
    silent.answer(GW_SDP)
    gw_a.take("ACK")
    assert not gw_a.has("BYE")

    b.answer(GW_SDP)
    ok = pbx.take(200)
    call.ack(ok)
    b.take_ack()
    call.request("BYE")
    b.respond(b.take_in_dialog("BYE"), 200)
    cdr = net.cdr()
    assert [(a.carrier, a.code) for a in cdr.attempts] == [("A", 408), ("B", 200)]
    assert cdr.disposition == "answered"


def test_gateway_silent_then_ringing_gets_cancel() -> None:
    """The attempt timed out while the INVITE was unanswered: the CANCEL waits for a provisional."""
    net = Net(config=B2BUAConfig(no_response_timeout_s=3.0))
    pbx = net.peer(PBX, "pbx")
    gw_a = net.peer(GW_A, "gwa")
    gw_b = net.peer(GW_B, "gwb")
    pbx.invite(DIALLED, body=PBX_SDP)
    silent = gw_a.take_invite()
    net.advance(3.1)
    gw_b.take_invite()
    gw_a.take_all("INVITE")
    assert not gw_a.has("CANCEL")
    silent.ringing()
    cancel = gw_a.take("CANCEL")
    assert cancel.branch == silent.invite.branch
    silent.respond(cancel, 200)
    silent.respond_invite(487)
    gw_a.take("ACK")
    assert not pbx.has(180) and not pbx.has(487)


def test_no_failover_after_486() -> None:
    net = Net()
    pbx = net.peer(PBX, "pbx")
    gw_a = net.peer(GW_A, "gwa")
    call = pbx.invite(DIALLED, body=PBX_SDP)
    a = gw_a.take_invite()
    a.ringing()
    pbx.take(180)
    a.respond_invite(486)
    busy = pbx.take(486)
    call.ack(busy)
    assert net.sent_to(GW_B) == []
    cdr = net.cdr()
    assert cdr.disposition == "busy" and cdr.sip_code == 486
    assert [a.code for a in cdr.attempts] == [486]


def test_no_failover_after_6xx() -> None:
    net = Net()
    pbx = net.peer(PBX, "pbx")
    call = pbx.invite(DIALLED, body=PBX_SDP)
    net.peer(GW_A, "gwa").take_invite().respond_invite(603)
    resp = pbx.take(_final)
    assert resp.status == 603
    call.ack(resp)
    assert net.sent_to(GW_B) == []
    assert net.cdr().disposition == "rejected"


def test_no_failover_once_the_caller_cancelled() -> None:
    net = Net()
    pbx = net.peer(PBX, "pbx")
    gw_a = net.peer(GW_A, "gwa")
    call = pbx.invite(DIALLED, body=PBX_SDP)
    pbx.take(100)
    a = gw_a.take_invite()
    a.ringing()
    pbx.take(180)
    call.cancel()
    assert pbx.take(lambda m: isinstance(m, Response) and m.cseq[1] == "CANCEL").status == 200
    resp = pbx.take(487)
    call.ack(resp)
    cancel = gw_a.take("CANCEL")
    a.respond(cancel, 200)
    a.respond_invite(503)  # the gateway answers the cancelled INVITE with a failover code
    gw_a.take("ACK")
    net.advance(10)
    assert net.sent_to(GW_B) == []
    pbx.quiet()
    cdr = net.cdr()
    assert cdr.disposition == "cancelled" and cdr.sip_code == 487


def test_all_gateways_time_out_caller_gets_408() -> None:
    net = Net(config=B2BUAConfig(no_response_timeout_s=2.0))
    pbx = net.peer(PBX, "pbx")
    call = pbx.invite(DIALLED, body=PBX_SDP)
    pbx.take(100)
    net.advance(5.0)
    resp = pbx.take(_final)
    assert resp.status == 408
    call.ack(resp)
    assert [a.code for a in net.cdr().attempts] == [408, 408]
    assert net.cdr().disposition == "no_answer"


def test_invite_from_a_carrier_gateway_is_treated_as_inbound() -> None:
    """Carrier gateways are inbound sources: an INVITE from GW_A goes the inbound way."""
    net = Net()
    gw = net.peer(GW_A, "gwa")
    call = gw.invite(DIALLED)
    gw.take(100)
    resp = gw.take(_final)
    assert resp.status == 404  # +1212... is not one of our DIDs
    call.ack(resp)
    assert net.sent_to(CARRIER) == []


def test_max_forwards_decremented() -> None:
    net = Net()
    pbx = net.peer(PBX, "pbx")
    pbx.invite(DIALLED, body=PBX_SDP)
    inv = net.peer(GW_A, "gwa").take_invite().invite
    assert isinstance(inv, Request)
    assert inv.get("Max-Forwards") == "69"


def test_carrier_max_cps_moves_the_second_call_to_the_next_carrier() -> None:
    net = Net(snapshot(carrier_a={"max_cps": 1}))
    pbx = net.peer(PBX, "pbx")
    gw_a = net.peer(GW_A, "gwa")
    gw_b = net.peer(GW_B, "gwb")
    pbx.invite(DIALLED, body=PBX_SDP)
    assert gw_a.take_all("INVITE") and not gw_b.has("INVITE")
    pbx.invite(DIALLED, body=PBX_SDP)
    assert not gw_a.has("INVITE")
    gw_b.take_invite().answer(GW_SDP)
    pbx.take(200)
    call = next(c for c in net.b2bua.calls.values() if c.carrier == "B")
    assert call.attempts[0] == ("A", "127.0.0.4:5060", 503, "carrier limit")


def test_route_time_window_is_wall_clock() -> None:
    """A route open 08:00-18:00 UTC, all its gateways gone: 503 (a route applies), not 404."""
    from routing.model import Route, RouteCarrier

    snap = snapshot(carrier_a={"gateways": ()}, carrier_b={"gateways": ()})
    snap = type(snap)(
        carriers=snap.carriers,
        customers=snap.customers,
        numbers=snap.numbers,
        routes=(Route("1", carriers=(RouteCarrier("A"),), time_window="08:00-18:00"),),
    )
    noon = 12 * 3600.0 + 20000 * 86400.0
    net = Net(snap, wall_offset=noon - 1000.0)
    pbx = net.peer(PBX, "pbx")
    call = pbx.invite(DIALLED, body=PBX_SDP)
    pbx.take(100)
    resp = pbx.take(_final)
    assert resp.status == 503
    call.ack(resp)


def test_cancelled_call_to_a_silent_gateway_tries_nothing_else() -> None:
    net = Net()
    pbx = net.peer(PBX, "pbx")
    gw_a = net.peer(GW_A, "gwa")
    call = pbx.invite(DIALLED, body=PBX_SDP)
    pbx.take(100)
    gw_a.take_invite()
    call.cancel()
    pbx.take(lambda m: isinstance(m, Response) and m.cseq[1] == "CANCEL")
    call.ack(pbx.take(487))
    net.advance(64 * 0.5 + 5)  # Timer B of the silent INVITE fires
    assert net.sent_to(GW_B) == []
    assert not gw_a.has("CANCEL")  # never a provisional: the CANCEL was never due
    pbx.quiet()
    assert len(net.cdrs) == 1 and net.cdrs[0].disposition == "cancelled"


def test_late_200_from_abandoned_gateway_after_call_answered_elsewhere() -> None:
    net = Net(config=B2BUAConfig(no_response_timeout_s=2.0))
    pbx = net.peer(PBX, "pbx")
    gw_a = net.peer(GW_A, "gwa")
    gw_b = net.peer(GW_B, "gwb")
    call = pbx.invite(DIALLED, body=PBX_SDP)
    silent = gw_a.take_invite()
    net.advance(2.1)
    b = gw_b.take_invite()
    b.answer(GW_SDP)
    call.ack(pbx.take(200))
    b.take_ack()
    gw_a.clear()
    silent.answer(GW_SDP)
    assert gw_a.take("ACK").to_tag == silent.local_tag
    silent.respond(silent.take_in_dialog("BYE"), 200)
    pbx.take_all(100)
    pbx.quiet()  # the caller's call is untouched
    gw_b.quiet()
    assert net.cdrs == []


def test_reliable_provisional_is_pracked_by_the_sbc() -> None:
    net = Net()
    pbx = net.peer(PBX, "pbx")
    gw_a = net.peer(GW_A, "gwa")
    pbx.invite(DIALLED, body=PBX_SDP)
    a = gw_a.take_invite()
    a.respond_invite(183, body=GW_SDP, headers=[("Require", "100rel"), ("RSeq", "1")])
    prack = gw_a.take("PRACK")
    assert prack.get("RAck") == f"1 {a.invite.cseq[0]} INVITE"
    assert prack.to_tag == a.local_tag
    a.respond(prack, 200)
    progress = pbx.take(183)
    assert progress.body == GW_SDP
    assert progress.get("Require") is None and progress.get("RSeq") is None


def test_gateway_2xx_with_malformed_record_route_is_dropped() -> None:
    net = Net()
    pbx = net.peer(PBX, "pbx")
    gw_a = net.peer(GW_A, "gwa")
    call = pbx.invite(DIALLED, body=PBX_SDP)
    a = gw_a.take_invite()
    a.respond_invite(200, body=GW_SDP, headers=[("Record-Route", '"unterminated <sip:x;lr>')])
    assert not pbx.has(200)
    a.answer(GW_SDP)
    ok = pbx.take(200)
    call.ack(ok)
    a.take_ack()


def test_second_fork_answering_is_acked_and_hung_up() -> None:
    net = Net()
    c = establish_outbound(net)
    fork = reply(
        c.b.invite, 200, to_tag="fork2", body=GW_SDP, headers=[("Contact", "<sip:fork2@127.0.0.4:5060>")]
    )
    c.callee.send(fork)
    ack = c.callee.take("ACK")
    assert ack.to_tag == "fork2" and ack.uri == "sip:fork2@127.0.0.4:5060"
    bye = c.callee.take("BYE")
    assert bye.to_tag == "fork2"
    c.callee.send(reply(bye, 200))
    c.caller.quiet()
    c.callee.quiet()
    # The answered dialog is untouched.
    c.a.request("BYE")
    c.b.respond(c.b.take_in_dialog("BYE"), 200)
    assert net.cdr().disposition == "answered"


def test_topology_hiding_pbx_to_carrier() -> None:
    net = Net()
    pbx = net.peer(PBX, "pbx")
    gw = net.peer(GW_A, "gwa")
    call = pbx.invite(
        DIALLED,
        body=PBX_SDP,
        headers=[("X-Pbx-Internal", "ext-201"), ("Record-Route", "<sip:127.0.0.3:5070;lr>")],
    )
    uas = gw.take_invite()
    uas.respond_invite(180, headers=[("Server", "GatewayOS 3"), ("X-Gw-Route", "trunk-7")])
    uas.respond_invite(200, body=GW_SDP, headers=[("Record-Route", "<sip:127.0.0.4;lr>")])
    call.ack(pbx.take(200))
    uas.take_ack()
    uas.request("BYE")
    call.respond(call.take_in_dialog("BYE"), 200)
    for sent in net.sent_to(GW_A):
        for mark in (b"127.0.0.3", b"ext-201", b"sip:pbx@", call.call_id.encode(), call.local_tag.encode()):
            assert mark not in sent.data, (mark, sent.data.decode())
    for sent in net.sent_to(PBX):
        for mark in (b"127.0.0.4", b"GatewayOS", b"trunk-7", uas.call_id.encode(), uas.local_tag.encode()):
            assert mark not in sent.data, (mark, sent.data.decode())


def test_outbound_fails_over_at_once_when_the_gateway_cannot_be_reached() -> None:
    """The I/O layer reports that the INVITE could not be sent (TCP refused, no such transport):
    the next carrier is tried at once, not after the no-response timeout."""
    net = Net()
    pbx = net.peer(PBX, "pbx")
    gw_b = net.peer(GW_B, "gwb")
    pbx.invite("12125551234", body=PBX_SDP)
    pbx.take(100)
    net.peer(GW_A, "gwa").take_invite()
    [call] = net.b2bua.calls.values()
    net.core.transport_error(call.b.invite_key, net.now)
    net.flush()
    b = gw_b.take_invite()  # no time has passed
    b.answer(GW_SDP)
    assert pbx.take(200)
    assert call.attempts[0][0] == "A" and call.attempts[0][2] == 503
    net.core.transport_error(("C", "z9hG4bKunknown", "INVITE"), net.now)  # a stale key: nothing happens
