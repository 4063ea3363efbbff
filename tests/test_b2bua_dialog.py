"""B2BUA call life: CANCEL, re-INVITE, in-dialog relays, 2xx/ACK timing, call duration."""

from __future__ import annotations

from sbc.b2bua.engine import B2BUAConfig
from sbc.sip.message import Request, Response
from tests.b2bua_harness import (
    CARRIER,
    CARRIER_SDP,
    DID,
    GW_SDP,
    PBX,
    PBX_SDP,
    T1,
    Net,
    establish_inbound,
    establish_outbound,
    new_branch,
    sdp,
)


def _cancel_ok(m) -> bool:
    return isinstance(m, Response) and m.cseq[1] == "CANCEL"


# -- CANCEL ---------------------------------------------------------------------------------------


def test_cancel_after_ringing() -> None:
    net = Net()
    carrier = net.peer(CARRIER, "carrier")
    pbx = net.peer(PBX, "pbx")
    call = carrier.invite(DID)
    carrier.take(100)
    uas = pbx.take_invite()
    uas.ringing()
    carrier.take(180)
    call.cancel()
    assert carrier.take(_cancel_ok).status == 200
    resp = carrier.take(487)
    assert resp.cseq == (1, "INVITE")
    call.ack(resp)
    cancel = pbx.take("CANCEL")
    assert cancel.branch == uas.invite.branch and cancel.cseq == (uas.invite.cseq[0], "CANCEL")
    uas.respond(cancel, 200)
    uas.respond_invite(487)
    pbx.take("ACK")
    net.advance(40)
    carrier.quiet()
    pbx.quiet()
    cdr = net.cdr()
    assert cdr.disposition == "cancelled" and cdr.sip_code == 487 and cdr.hangup_by == "caller"
    assert net.b2bua.calls == {}


def test_cancel_before_callee_provisional_waits_for_it() -> None:
    net = Net()
    carrier = net.peer(CARRIER, "carrier")
    pbx = net.peer(PBX, "pbx")
    call = carrier.invite(DID)
    carrier.take(100)
    uas = pbx.take_invite()
    call.cancel()
    carrier.take(_cancel_ok)
    call.ack(carrier.take(487))
    assert not pbx.has("CANCEL")  # RFC 3261 §9.1: not before a provisional
    uas.respond_invite(100)
    cancel = pbx.take("CANCEL")
    uas.respond(cancel, 200)
    uas.respond_invite(487)
    pbx.take("ACK")
    assert net.cdr().disposition == "cancelled"


def test_200_racing_the_cancel_is_acked_and_hung_up() -> None:
    net = Net()
    carrier = net.peer(CARRIER, "carrier")
    pbx = net.peer(PBX, "pbx")
    call = carrier.invite(DID)
    carrier.take(100)
    uas = pbx.take_invite()
    uas.ringing()
    carrier.take(180)
    call.cancel()
    carrier.take(_cancel_ok)
    call.ack(carrier.take(487))
    pbx.take("CANCEL")
    # The PBX answered before it saw the CANCEL.
    uas.answer()
    ack = pbx.take("ACK")
    assert ack.to_tag == uas.local_tag
    bye = uas.take_in_dialog("BYE")
    uas.respond(bye, 200)
    net.advance(40)
    assert not carrier.has(200)
    assert not carrier.has("BYE")
    cdr = net.cdr()
    assert cdr.disposition == "cancelled" and cdr.sip_code == 487 and cdr.answer_time is None


def test_cancel_after_answer_does_nothing() -> None:
    net = Net()
    c = establish_inbound(net)
    c.a.cancel()
    assert c.caller.take(_cancel_ok).status in (200, 481)
    c.callee.quiet()
    assert net.cdrs == []


def test_bye_from_caller_in_early_dialog_ends_the_attempt() -> None:
    """RFC 3261 §15: a caller may BYE an early dialog; the INVITE still needs its final answer."""
    net = Net()
    carrier = net.peer(CARRIER, "carrier")
    pbx = net.peer(PBX, "pbx")
    call = carrier.invite(DID)
    carrier.take(100)
    uas = pbx.take_invite()
    uas.ringing()
    call.learn(carrier.take(180))
    call.request("BYE")
    assert carrier.take(lambda m: isinstance(m, Response) and m.cseq[1] == "BYE").status == 200
    call.ack(carrier.take(487))
    cancel = pbx.take("CANCEL")
    uas.respond(cancel, 200)
    uas.respond_invite(487)
    pbx.take("ACK")
    assert net.cdr().disposition == "cancelled"


# -- re-INVITE, INFO, UPDATE, OPTIONS -------------------------------------------------------------


def test_reinvite_hold_and_resume_from_caller() -> None:
    net = Net()
    c = establish_inbound(net)
    hold = sdp("192.0.2.10", 20000, "sendonly")
    c.a.request("INVITE", body=hold)
    re_inv = c.b.take_in_dialog("INVITE")
    assert re_inv.body == hold
    assert re_inv.cseq[0] == c.b.invite.cseq[0] + 1
    held = sdp("198.51.100.20", 30000, "recvonly")
    c.b.respond(re_inv, 200, body=held, headers=[("Contact", c.callee.contact())])
    ok = c.caller.take(200)
    assert ok.body == held and ok.cseq[1] == "INVITE"
    c.a.request("ACK", cseq=c.a.cseq)
    ack = c.b.take_ack()
    assert ack.cseq == (re_inv.cseq[0], "ACK")
    # resume
    c.a.request("INVITE", body=CARRIER_SDP)
    re2 = c.b.take_in_dialog("INVITE")
    assert re2.body == CARRIER_SDP
    c.b.respond(re2, 200, body=PBX_SDP, headers=[("Contact", c.callee.contact())])
    c.a.request("ACK", cseq=c.a.cseq)
    assert c.caller.take(200).body == PBX_SDP
    assert c.b.take_ack().cseq == (re2.cseq[0], "ACK")
    c.caller.quiet()
    c.callee.quiet()
    # The call still ends normally.
    c.a.request("BYE")
    c.b.respond(c.b.take_in_dialog("BYE"), 200)
    assert net.cdr().disposition == "answered"


def test_reinvite_hold_from_callee() -> None:
    net = Net()
    c = establish_outbound(net)
    hold = sdp("203.0.113.30", 40000, "sendonly")
    c.b.request("INVITE", body=hold)
    re_inv = c.a.take_in_dialog("INVITE")
    assert re_inv.body == hold
    assert re_inv.uri == "sip:pbx@127.0.0.3:5070"
    c.a.respond(
        re_inv,
        200,
        body=sdp("198.51.100.20", 30000, "recvonly"),
        headers=[("Contact", "<sip:pbx@127.0.0.3:5070>")],
    )
    ok = c.callee.take(200)
    assert b"recvonly" in ok.body
    c.b.request("ACK", cseq=c.b.cseq)
    ack = c.a.take_ack()
    assert ack.cseq == (re_inv.cseq[0], "ACK")


def test_reinvite_rejected_by_far_side_is_relayed() -> None:
    net = Net()
    c = establish_inbound(net)
    c.a.request("INVITE", body=CARRIER_SDP)
    re_inv = c.b.take_in_dialog("INVITE")
    c.b.respond(re_inv, 488)
    c.callee.take("ACK")  # hop-by-hop ACK of the non-2xx
    resp = c.caller.take(488)
    assert resp.cseq[1] == "INVITE"
    # A new re-INVITE may follow.
    c.a.request("INVITE", body=CARRIER_SDP)
    assert c.b.take_in_dialog("INVITE")


def cancel_reinvite(peer, re_invite: Request) -> None:  # type: ignore[no-untyped-def]
    """Send the CANCEL of an in-dialog re-INVITE (its Via, tags, Call-ID and CSeq number)."""
    headers = [(n, re_invite.get(n)) for n in ("Via", "From", "To", "Call-ID")]
    peer.send(Request("CANCEL", re_invite.uri, [*headers, ("CSeq", f"{re_invite.cseq[0]} CANCEL")]))


def test_cancelled_reinvite_is_cancelled_on_the_far_side() -> None:
    """The caller CANCELs its re-INVITE: the relayed one is CANCELled once the callee has sent a
    provisional, the callee's 487 comes back as the caller's 487, and the call stays up."""
    net = Net()
    c = establish_inbound(net)
    re_out = c.a.request("INVITE", body=CARRIER_SDP)
    re_inv = c.b.take_in_dialog("INVITE")
    c.b.respond(re_inv, 100)
    cancel_reinvite(c.caller, re_out)
    assert c.caller.take(_cancel_ok).status == 200
    relayed = c.callee.take("CANCEL")
    assert relayed.branch == re_inv.branch and relayed.cseq == (re_inv.cseq[0], "CANCEL")
    assert relayed.call_id == re_inv.call_id != re_out.call_id  # the callee's dialog, not the caller's
    c.b.respond(relayed, 200)
    c.b.respond(re_inv, 487)
    c.callee.take("ACK")
    assert c.caller.take(487).cseq == (re_out.cseq[0], "INVITE")
    # The call is up and takes a new re-INVITE.
    c.a.request("INVITE", body=CARRIER_SDP)
    assert c.b.take_in_dialog("INVITE")
    assert net.b2bua.calls


def test_cancel_after_the_reinvite_was_answered_changes_nothing() -> None:
    net = Net()
    c = establish_inbound(net)
    re_out = c.a.request("INVITE", body=CARRIER_SDP)
    re_inv = c.b.take_in_dialog("INVITE")
    c.b.respond(re_inv, 200, body=PBX_SDP, headers=[("Contact", c.callee.contact())])
    assert c.caller.take(200)
    cancel_reinvite(c.caller, re_out)
    assert c.caller.take(_cancel_ok).status == 200
    assert not [m for m in c.callee.inbox if isinstance(m, Request) and m.method == "CANCEL"]


def test_reinvite_while_one_is_pending_gets_491() -> None:
    net = Net()
    c = establish_inbound(net)
    c.a.request("INVITE", body=CARRIER_SDP)
    c.b.take_in_dialog("INVITE")
    # Glare: the PBX re-INVITEs too.
    c.b.request("INVITE", body=PBX_SDP)
    assert c.callee.take(491).cseq[1] == "INVITE"
    c.caller.quiet()


def test_info_and_update_relayed_and_answers_mirrored() -> None:
    net = Net()
    c = establish_inbound(net)
    dtmf = b"Signal=5\r\nDuration=160\r\n"
    c.a.request("INFO", body=b"", headers=[])
    info = c.b.take_in_dialog("INFO")
    c.b.respond(info, 200)
    assert c.caller.take(200).cseq[1] == "INFO"

    req = c.b.request("INFO", send=False)
    req.body = dtmf
    req.set("Content-Type", "application/dtmf-relay")
    c.callee.send(req)
    relayed = c.a.take_in_dialog("INFO")
    assert relayed.body == dtmf and relayed.get("Content-Type") == "application/dtmf-relay"
    c.a.respond(relayed, 200)
    assert c.callee.take(200).cseq == (req.cseq[0], "INFO")

    c.b.request("UPDATE", body=PBX_SDP)
    upd = c.a.take_in_dialog("UPDATE")
    assert upd.body == PBX_SDP
    c.a.respond(upd, 200, body=CARRIER_SDP)
    ok = c.callee.take(200)
    assert ok.cseq[1] == "UPDATE" and ok.body == CARRIER_SDP

    c.a.request("INFO")
    info = c.b.take_in_dialog("INFO")
    c.b.respond(info, 415)
    assert c.caller.take(415).cseq[1] == "INFO"


def test_in_dialog_options_answered_by_the_sbc() -> None:
    net = Net()
    c = establish_inbound(net)
    c.a.request("OPTIONS")
    assert c.caller.take(200).cseq[1] == "OPTIONS"
    c.callee.quiet()


def test_relayed_request_timeout_answers_408_without_touching_pending_reinvite() -> None:
    net = Net()
    c = establish_inbound(net)
    c.a.request("INFO")
    c.b.take_in_dialog("INFO")
    net.advance(64 * T1 + 1)
    c.callee.take_all("INFO")
    resp = c.caller.take(lambda m: isinstance(m, Response) and m.cseq[1] == "INFO")
    assert resp.status == 408


def test_request_with_old_cseq_gets_500() -> None:
    net = Net()
    c = establish_inbound(net)
    c.a.request("INFO", cseq=1)
    assert c.caller.take(500)


# -- answering, ACK, duration --------------------------------------------------------------------


def test_callee_2xx_retransmission_before_callers_ack_is_not_a_second_answer() -> None:
    net = Net()
    carrier = net.peer(CARRIER, "carrier")
    pbx = net.peer(PBX, "pbx")
    call = carrier.invite(DID)
    carrier.take(100)
    uas = pbx.take_invite()
    ok_b = uas.answer()
    ok = carrier.take(200)
    net.advance(0.3)
    pbx.send(ok_b)  # the PBX retransmits its 200: no ACK yet
    net.advance(0.3)
    call.ack(ok)
    uas.take_ack()
    net.advance(5)
    carrier.take_all(200)
    pbx.quiet()
    pbx.send(ok_b)  # after the ACK: re-ACK
    assert uas.take_ack()
    call.request("BYE")
    uas.respond(uas.take_in_dialog("BYE"), 200)
    cdr = net.cdr()
    assert [a.code for a in cdr.attempts] == [200]
    assert cdr.answer_time.timestamp() == 1000.0


def test_ended_call_re_acks_the_callees_2xx_and_keeps_only_what_that_needs() -> None:
    """After the BYE the call lingers for the INVITE's Timer M: a 2xx retransmission (our ACK
    was lost) gets the very same ACK again, while what only the CDR needed is gone."""
    net = Net()
    c = establish_inbound(net)
    first_ack = net.sent_to(PBX)[-1].data
    c.a.request("BYE")
    c.b.respond(c.b.take_in_dialog("BYE"), 200)
    c.caller.take(200)
    assert [a.code for a in net.cdr().attempts] == [200]
    (ended,) = {id(call): call for call, _kind in net.b2bua._by_client_key.values()}.values()
    assert ended.media_stats is None and ended.attempts == []
    assert ended.b_ack[0] == first_ack  # kept serialised, not as a parsed Request
    c.callee.send(c.answer)
    assert c.b.take_ack()
    assert net.sent_to(PBX)[-1].data == first_ack
    net.advance(64 * T1 + 10)
    assert net.b2bua._by_client_key == {}


def test_caller_never_acks_the_200() -> None:
    net = Net()
    carrier = net.peer(CARRIER, "carrier")
    pbx = net.peer(PBX, "pbx")
    carrier.invite(DID)
    carrier.take(100)
    uas = pbx.take_invite()
    uas.answer()
    start = net.now
    net.advance(64 * T1 + 5)
    to_carrier = net.sent_to(CARRIER)
    times = [s.at - start for s in to_carrier if isinstance(s.msg, Response) and s.msg.status == 200]
    # RFC 3261 §13.3.1.4: at 0, then T1 doubling up to T2 (4 s), until 64*T1.
    assert times[:6] == [0.0, 0.5, 1.5, 3.5, 7.5, 11.5]
    assert all(b - a == 4.0 for a, b in zip(times[4:], times[5:], strict=False))
    assert times[-1] <= 64 * T1
    bye_at = [s.at - start for s in to_carrier if isinstance(s.msg, Request) and s.msg.method == "BYE"]
    assert bye_at[0] == 64 * T1
    carrier.take_all(200)
    carrier.take("BYE")
    # The PBX's 200 is ACKed, then the call is hung up.
    uas.take_ack()
    bye_b = uas.take_in_dialog("BYE")
    uas.respond(bye_b, 200)
    cdr = net.cdr()
    assert cdr.hangup_by == "sbc" and cdr.disposition == "answered"
    assert cdr.end_time.timestamp() - cdr.answer_time.timestamp() == 64 * T1


def test_maximum_call_duration() -> None:
    net = Net(config=B2BUAConfig(max_call_duration_s=60.0))
    c = establish_inbound(net)
    net.advance(59.0)
    c.caller.quiet()
    c.callee.quiet()
    net.advance(1.0)
    bye_a = c.a.take_in_dialog("BYE")
    bye_b = c.b.take_in_dialog("BYE")
    c.a.respond(bye_a, 200)
    c.b.respond(bye_b, 200)
    cdr = net.cdr()
    assert cdr.hangup_by == "sbc" and cdr.duration_s == 60.0
    net.advance(100)
    c.caller.quiet()
    c.callee.quiet()


def test_late_bye_after_end_gets_481() -> None:
    net = Net()
    c = establish_inbound(net)
    c.a.request("BYE")
    c.caller.take(200)
    c.b.respond(c.b.take_in_dialog("BYE"), 200)
    c.b.request("BYE")
    assert c.callee.take(lambda m: isinstance(m, Response) and m.cseq[1] == "BYE").status == 481


def test_bye_retransmission_gets_the_same_200() -> None:
    net = Net()
    c = establish_inbound(net)
    bye = c.a.request("BYE")
    c.caller.take(200)
    c.caller.send(bye)
    assert c.caller.take(200).cseq == bye.cseq
    c.b.take_in_dialog("BYE")
    c.callee.quiet()
    assert len(net.cdrs) == 1


def test_nothing_left_behind_after_calls() -> None:
    """Every per-call map of the engine is empty once calls and their transactions are over."""
    net = Net()
    for _ in range(3):
        c = establish_inbound(net)
        c.a.request("INFO")
        c.b.respond(c.b.take_in_dialog("INFO"), 200)
        c.caller.take(200)
        c.a.request("BYE")
        c.caller.take(200)
        c.b.respond(c.b.take_in_dialog("BYE"), 200)
    net.advance(300)
    b = net.b2bua
    assert b.calls == {}
    assert b._dialogs == {}
    assert b._by_server_key == {}
    assert b._by_client_key == {}
    assert b._relay_map == {}
    assert len(net.core.transactions) == 0
    assert b.next_timer() is None or b.next_timer() > net.now
    assert b.calls_in_progress.count("trunk:acme/pbx") == 0


def test_ack_to_unknown_dialog_is_ignored() -> None:
    net = Net()
    carrier = net.peer(CARRIER, "carrier")
    ack = Request(
        "ACK",
        "sip:x@127.0.0.1",
        [
            ("Via", carrier.via(new_branch())),
            ("Max-Forwards", "70"),
            ("From", "<sip:a@127.0.0.2>;tag=1"),
            ("To", "<sip:b@127.0.0.1>;tag=2"),
            ("Call-ID", "nope"),
            ("CSeq", "1 ACK"),
        ],
    )
    carrier.send(ack)
    carrier.quiet()


def test_reinvite_2xx_with_gw_sdp() -> None:
    net = Net()
    c = establish_outbound(net)
    c.a.request("INVITE", body=PBX_SDP)
    re_inv = c.b.take_in_dialog("INVITE")
    c.b.respond(re_inv, 200, body=GW_SDP, headers=[("Contact", c.callee.contact())])
    ok = c.caller.take(200)
    assert ok.body == GW_SDP
    c.a.request("ACK", cseq=c.a.cseq)
    c.b.take_ack()


def test_bye_from_caller_before_its_ack_acks_the_callee_first() -> None:
    net = Net()
    carrier = net.peer(CARRIER, "carrier")
    pbx = net.peer(PBX, "pbx")
    call = carrier.invite(DID)
    uas = pbx.take_invite()
    uas.answer()
    carrier.take(100)
    call.learn(carrier.take(200))
    call.request("BYE")
    ack = uas.take_ack()
    bye = uas.take_in_dialog("BYE")
    assert net.log.index(next(s for s in net.log if s.msg is ack)) < net.log.index(
        next(s for s in net.log if s.msg is bye)
    )
    uas.respond(bye, 200)
    net.advance(40)
    carrier.take_all(200)
    carrier.quiet()  # no 2xx retransmissions, no BYE after the call ended
    assert net.cdr().hangup_by == "caller"


def test_target_refresh_by_reinvite_answer_and_update() -> None:
    net = Net()
    c = establish_inbound(net)
    # The carrier's 2xx to a re-INVITE moves its Contact.
    c.b.request("INVITE", body=PBX_SDP)
    re_inv = c.a.take_in_dialog("INVITE")
    c.a.respond(re_inv, 200, body=CARRIER_SDP, headers=[("Contact", "<sip:moved@127.0.0.2:5062>")])
    c.callee.take(200)
    c.b.request("ACK", cseq=c.b.cseq)
    c.a.take_ack()
    # The PBX moves its Contact with an UPDATE.
    upd = c.b.request("UPDATE", send=False)
    upd.set("Contact", "<sip:pbx2@127.0.0.3:5072>")
    c.callee.send(upd)
    c.a.respond(c.a.take_in_dialog("UPDATE"), 200)
    c.callee.take(200)
    # A BYE from the carrier now goes to the PBX's new Contact.
    c.a.request("BYE")
    c.caller.take(200)
    moved_pbx = type(PBX)("udp", "127.0.0.3", 5072)
    bye = net.sent_to(moved_pbx)[-1].msg
    assert isinstance(bye, Request) and bye.method == "BYE"
    assert bye.uri == "sip:pbx2@127.0.0.3:5072"
    # And a BYE to the carrier uses its new Contact as Request-URI, sent where it signals from.
    c2 = establish_inbound(net)
    c2.b.request("INVITE", body=PBX_SDP)
    re_inv = c2.a.take_in_dialog("INVITE")
    c2.a.respond(re_inv, 200, body=CARRIER_SDP, headers=[("Contact", "<sip:moved@127.0.0.2:5062>")])
    c2.callee.take(200)
    c2.b.request("ACK", cseq=c2.b.cseq)
    c2.a.take_ack()
    c2.b.request("BYE")
    bye = c2.a.take_in_dialog("BYE")
    assert bye.uri == "sip:moved@127.0.0.2:5062"
    assert net.sent_to(CARRIER)[-1].msg is bye


def test_reinvite_2xx_retransmissions_are_relayed_then_reacked() -> None:
    net = Net()
    c = establish_inbound(net)
    c.a.request("INVITE", body=CARRIER_SDP)
    re_inv = c.b.take_in_dialog("INVITE")
    ok_b = c.b.respond(re_inv, 200, body=PBX_SDP, headers=[("Contact", c.callee.contact())])
    c.caller.take(200)
    c.callee.send(ok_b)  # retransmitted before the ACK: relayed again
    assert c.caller.take(200).cseq[1] == "INVITE"
    c.a.request("ACK", cseq=c.a.cseq)
    c.b.take_ack()
    c.callee.send(ok_b)  # retransmitted after the ACK: our ACK was lost, re-send it
    assert c.b.take_ack().cseq == (re_inv.cseq[0], "ACK")
    c.caller.quiet()


def test_stale_ack_is_not_taken_for_the_reinvite_ack() -> None:
    net = Net()
    c = establish_inbound(net)
    c.a.request("INVITE", body=CARRIER_SDP)
    re_inv = c.b.take_in_dialog("INVITE")
    c.b.respond(re_inv, 200, body=PBX_SDP, headers=[("Contact", c.callee.contact())])
    c.caller.take(200)
    c.a.request("ACK", cseq=1)  # a late retransmission of the first ACK
    c.callee.quiet()
    c.a.request("ACK", cseq=c.a.cseq)
    assert c.b.take_ack().cseq == (re_inv.cseq[0], "ACK")


def test_bye_that_is_never_answered_is_harmless() -> None:
    net = Net()
    c = establish_inbound(net)
    c.a.request("BYE")
    c.caller.take(200)
    net.advance(64 * T1 + 10)
    assert len(c.callee.take_all("BYE")) > 1
    assert len(net.cdrs) == 1
    assert net.b2bua._by_client_key == {}


def test_hangup_with_a_reinvite_pending_answers_the_reinvite() -> None:
    net = Net(config=B2BUAConfig(max_call_duration_s=20.0))
    c = establish_inbound(net)
    net.advance(19.0)
    c.a.request("INVITE", body=CARRIER_SDP)
    c.b.take_in_dialog("INVITE")  # the PBX sits on it
    net.advance(1.0)
    final = c.caller.take(lambda m: isinstance(m, Response) and m.cseq[1] == "INVITE" and m.status >= 200)
    assert final.status >= 400
    assert c.a.take_in_dialog("BYE")
    assert c.b.take_in_dialog("BYE")


def test_finished_calls_do_not_pile_up_in_the_timer_heap() -> None:
    """Each answered call leaves a maximum-duration timer hours ahead; ended calls' entries are
    compacted away instead of keeping every finished call in memory until then."""
    net = Net()
    for _ in range(400):
        c = establish_inbound(net)
        c.a.request("BYE")
        c.caller.take(200)
        c.b.respond(c.b.take_in_dialog("BYE"), 200)
    from sbc.b2bua.engine import TIMER_HEAP_COMPACT_MIN

    assert len(net.b2bua._timers) <= TIMER_HEAP_COMPACT_MIN
    assert net.b2bua.next_timer() is None


def test_session_timer_expiry_tears_the_call_down() -> None:
    """RFC 4028: a session refreshed with Session-Expires that is not refreshed again in
    time is dead: the SBC sends BYE to both legs and the CDR says why."""
    net = Net()
    c = establish_inbound(net)
    c.b.request("UPDATE")
    upd = c.a.take_in_dialog("UPDATE")
    c.a.respond(upd, 200, headers=[("Session-Expires", "90;refresher=uas")])
    assert c.callee.take(200).get("Session-Expires") == "90;refresher=uas"
    net.advance(60.0)
    # A refresh at 60 s pushes the deadline to 150 s.
    c.a.request("UPDATE")
    upd2 = c.b.take_in_dialog("UPDATE")
    c.b.respond(upd2, 200, headers=[("Session-Expires", "90;refresher=uac")])
    c.caller.take(200)
    net.advance(89.0)
    c.caller.quiet()
    c.callee.quiet()
    net.advance(1.0)
    c.a.respond(c.a.take_in_dialog("BYE"), 200)
    c.b.respond(c.b.take_in_dialog("BYE"), 200)
    cdr = net.cdr()
    assert cdr.hangup_by == "sbc" and cdr.end_reason == "session timer expired"
