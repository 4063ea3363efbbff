"""B2BUA admission limits, gateway health probing, and isolation of one call's failure."""

from __future__ import annotations

import pytest

from routing.model import Gateway
from sbc.b2bua.engine import B2BUAConfig
from sbc.sip.message import Request, Response
from tests.b2bua_harness import (
    CARRIER,
    DIALLED,
    DID,
    GW_A,
    GW_B,
    PBX,
    PBX_SDP,
    T1,
    Net,
    establish_inbound,
    reply,
    snapshot,
)


def _final(m) -> bool:
    return isinstance(m, Response) and m.status >= 200


# -- limits ---------------------------------------------------------------------------------------


def test_trunk_max_calls_rejects_second_call_and_releases_after_the_first() -> None:
    net = Net(snapshot(trunk_max_calls=1))
    c = establish_inbound(net)
    carrier, pbx = c.caller, c.callee
    second = carrier.invite(DID)
    carrier.take(100)
    resp = carrier.take(_final)
    assert resp.status == 503
    assert resp.get("Retry-After") == "5"
    second.ack(resp)
    pbx.quiet()
    # The first call ends: the trunk is free again.
    c.a.request("BYE")
    carrier.take(200)
    c.b.respond(c.b.take_in_dialog("BYE"), 200)
    third = carrier.invite(DID)
    carrier.take(100)
    uas = pbx.take_invite()
    uas.answer()
    third.ack(carrier.take(200))
    uas.take_ack()
    # The refused call has its CDR too (503, the limit named), before the answered one.
    assert [(cdr.sip_code, cdr.disposition) for cdr in net.cdrs] == [(503, "failed"), (200, "answered")]
    assert net.cdrs[0].end_reason == "Trunk calls limit reached"


def test_trunk_limit_released_by_failed_and_cancelled_calls() -> None:
    net = Net(snapshot(trunk_max_calls=1))
    carrier = net.peer(CARRIER, "carrier")
    pbx = net.peer(PBX, "pbx")
    call = carrier.invite(DID)
    pbx.take_invite().respond_invite(486)
    call.ack(carrier.take(486))
    call = carrier.invite(DID)
    uas = pbx.take_invite()
    uas.ringing()
    call.cancel()
    call.ack(carrier.take(487))
    call = carrier.invite(DID)
    assert pbx.has("INVITE")
    assert net.b2bua.calls_in_progress.count("trunk:acme/pbx") == 1


def test_outbound_trunk_limit() -> None:
    net = Net(snapshot(trunk_max_calls=1))
    pbx = net.peer(PBX, "pbx")
    pbx.invite(DIALLED, body=PBX_SDP)
    net.peer(GW_A, "gwa").take_invite()
    pbx.take(100)
    pbx.invite(DIALLED, body=PBX_SDP)
    pbx.take(100)
    resp = pbx.take(_final)
    assert resp.status == 503 and resp.get("Retry-After")


def test_carrier_max_cps() -> None:
    net = Net(snapshot(carrier_in_max_cps=1))
    carrier = net.peer(CARRIER, "carrier")
    pbx = net.peer(PBX, "pbx")
    carrier.invite(DID)
    assert pbx.has("INVITE")
    pbx.clear()
    second = carrier.invite(DID)
    resp = carrier.take(lambda m: isinstance(m, Response) and m.status == 503)
    assert resp.get("Retry-After")
    second.ack(resp)
    pbx.quiet()
    net.advance(1.0)
    carrier.invite(DID)
    assert pbx.has("INVITE")


def test_limit_reject_code_is_configurable() -> None:
    net = Net(snapshot(trunk_max_calls=0), config=B2BUAConfig(limit_reject_code=480))
    carrier = net.peer(CARRIER, "carrier")
    carrier.invite(DID)
    assert carrier.take(_final).status == 480


# -- gateway probing ------------------------------------------------------------------------------


def test_probed_gateway_marked_down_after_three_timeouts_and_skipped() -> None:
    snap = snapshot(carrier_a={"probe_interval_s": 5.0})
    net = Net(snap)
    gw_a = net.peer(GW_A, "gwa")
    gw_b = net.peer(GW_B, "gwb")
    opt = gw_a.take("OPTIONS")
    assert opt.uri == "sip:127.0.0.4:5060"
    assert not gw_b.has("OPTIONS")  # carrier B is not probed
    net.advance(5.0)
    assert len(gw_a.take_all(lambda m: isinstance(m, Request) and m.method == "OPTIONS")) >= 2
    health = net.b2bua.prober.table
    gw = Gateway("127.0.0.4", 5060)
    assert health.is_up("A", gw)
    # Probes at 0, 5, 10 s time out (Timer F, 64*T1) at 32, 37, 42 s.
    net.run_until(net.now - 5.0 + 64 * T1 + 10 - 0.01)
    assert health.is_up("A", gw)
    net.advance(0.02)
    assert not health.is_up("A", gw)
    gw_a.clear()
    pbx = net.peer(PBX, "pbx")
    pbx.invite(DIALLED, body=PBX_SDP)
    assert gw_b.has("INVITE")
    assert not gw_a.has("INVITE")


def test_probe_answers_keep_gateway_up_and_bring_it_back() -> None:
    snap = snapshot(carrier_a={"probe_interval_s": 5.0})
    net = Net(snap)
    gw_a = net.peer(GW_A, "gwa")
    health = net.b2bua.prober.table
    gw = Gateway("127.0.0.4", 5060)
    for _ in range(4):
        opt = gw_a.take("OPTIONS")
        gw_a.send(reply(opt, 503))
        net.advance(5.0)
    assert not health.is_up("A", gw)
    for _ in range(2):
        opt = gw_a.take("OPTIONS")
        gw_a.send(reply(opt, 200))
        gw_a.clear()
        net.advance(5.0)
    assert health.is_up("A", gw)


def test_all_gateways_down_still_tried_as_last_resort() -> None:
    snap = snapshot(carrier_a={"probe_interval_s": 5.0}, carrier_b={"probe_interval_s": 5.0})
    net = Net(snap)
    net.advance(64 * T1 + 11)
    health = net.b2bua.prober.table
    assert not health.is_up("A", Gateway("127.0.0.4", 5060))
    assert not health.is_up("B", Gateway("127.0.0.5", 5060))
    gw_a = net.peer(GW_A, "gwa")
    gw_a.clear()
    net.peer(PBX, "pbx").invite(DIALLED, body=PBX_SDP)
    assert gw_a.has("INVITE")


# -- isolation ------------------------------------------------------------------------------------


def _two_ringing_calls(net: Net):
    carrier = net.peer(CARRIER, "carrier")
    pbx = net.peer(PBX, "pbx")
    call1 = carrier.invite(DID)
    uas1 = pbx.take_invite()
    call2 = carrier.invite(DID)
    uas2 = pbx.take_invite()
    carrier.take_all(100)
    return carrier, pbx, (call1, uas1), (call2, uas2)


def _finish_normally(net: Net, carrier, call, uas) -> None:
    uas.ringing()
    assert carrier.take(lambda m: isinstance(m, Response) and m.status == 180 and m.call_id == call.call_id)
    uas.answer()
    ok = carrier.take(lambda m: isinstance(m, Response) and m.status == 200 and m.call_id == call.call_id)
    call.ack(ok)
    uas.take_ack()
    call.request("BYE")
    uas.respond(uas.take_in_dialog("BYE"), 200)


def test_malformed_response_on_one_call_is_dropped_and_other_call_unaffected() -> None:
    net = Net()
    carrier, pbx, (call1, uas1), (call2, uas2) = _two_ringing_calls(net)
    # A 200 on call 1 whose Contact does not parse: dropped; the call waits for a good one.
    bad = reply(uas1.invite, 200, to_tag=uas1.local_tag, body=PBX_SDP, headers=[("Contact", "<sip:bad")])
    pbx.send(bad)
    assert not carrier.has(200)
    _finish_normally(net, carrier, call2, uas2)
    assert [c.disposition for c in net.cdrs] == ["answered"]
    # Call 1 is still alive and can be answered properly.
    uas1.answer()
    ok = carrier.take(lambda m: isinstance(m, Response) and m.status == 200 and m.call_id == call1.call_id)
    call1.ack(ok)
    uas1.take_ack()


@pytest.mark.parametrize("where", ["_relay_provisional", "_response_to_a", "_ack_b", "_relay_request"])
def test_exception_in_one_call_ends_that_call_only(monkeypatch, where: str) -> None:
    net = Net()
    carrier, pbx, (call1, uas1), (call2, uas2) = _two_ringing_calls(net)
    victim = next(c for c in net.b2bua.calls.values() if c.a.call_id == call1.call_id)
    real = getattr(net.b2bua, where)

    def boom(call, *args, **kw):
        if call is victim:
            raise RuntimeError("injected")
        return real(call, *args, **kw)

    monkeypatch.setattr(net.b2bua, where, boom)
    uas1.ringing()
    if where in ("_ack_b", "_relay_request"):
        uas1.answer()
        ok = carrier.take(
            lambda m: isinstance(m, Response) and m.status == 200 and m.call_id == call1.call_id
        )
        call1.ack(ok)
        if where == "_relay_request":
            uas1.take_ack()
            call1.request("INFO")
    # The victim is torn down: its caller gets a final answer or a BYE, its callee a CANCEL/BYE.
    to_caller = [m for m in carrier.inbox if m.call_id == call1.call_id]
    to_callee = [m for m in pbx.inbox if m.call_id == uas1.call_id]
    assert any(
        (isinstance(m, Response) and m.status >= 500) or getattr(m, "method", "") == "BYE" for m in to_caller
    )
    assert any(getattr(m, "method", "") in ("CANCEL", "BYE") for m in to_callee)
    assert victim.id not in net.b2bua.calls
    assert len(net.cdrs) == 1 and net.cdrs[0].call_id == call1.call_id
    carrier.inbox[:] = [m for m in carrier.inbox if m.call_id != call1.call_id]
    pbx.inbox[:] = [m for m in pbx.inbox if m.call_id != uas1.call_id]
    # The other call goes on as if nothing happened.
    _finish_normally(net, carrier, call2, uas2)
    assert net.cdrs[-1].call_id == call2.call_id and net.cdrs[-1].disposition == "answered"
    assert net.b2bua.calls == {}


def test_exception_in_timer_of_one_call_does_not_stop_other_timers(monkeypatch) -> None:
    net = Net(config=B2BUAConfig(max_call_duration_s=10.0))
    c1 = establish_inbound(net)
    c2 = establish_inbound(net)
    victim = next(c for c in net.b2bua.calls.values() if c.a.call_id == c1.a.call_id)
    real = net.b2bua._hangup

    def boom(call, *args, **kw):
        if call is victim:
            raise RuntimeError("injected")
        return real(call, *args, **kw)

    monkeypatch.setattr(net.b2bua, "_hangup", boom)
    net.advance(10.0)
    bye = c2.a.take_in_dialog("BYE")
    c2.a.respond(bye, 200)
    c2.b.respond(c2.b.take_in_dialog("BYE"), 200)
    assert {cdr.call_id for cdr in net.cdrs} == {c1.a.call_id, c2.a.call_id}
    assert net.b2bua.calls == {}


def test_exception_in_new_call_setup_leaves_no_call_behind(monkeypatch) -> None:
    net = Net(snapshot(trunk_max_calls=1))
    carrier = net.peer(CARRIER, "carrier")
    pbx = net.peer(PBX, "pbx")

    def boom(*args, **kw):
        raise RuntimeError("injected")

    monkeypatch.setattr(net.b2bua, "_send_invite", boom)
    call = carrier.invite(DID)
    carrier.take(100)
    resp = carrier.take(_final)
    assert resp.status == 500
    call.ack(resp)
    monkeypatch.undo()
    assert net.b2bua.calls == {}
    assert net.b2bua.calls_in_progress.count("trunk:acme/pbx") == 0
    carrier.invite(DID)
    assert pbx.has("INVITE")


def test_garbage_from_a_peer_does_not_disturb_a_call() -> None:
    net = Net()
    c = establish_inbound(net)
    for junk in (
        b"SIP/2.0 200 OK\r\n\r\n",
        b"\x00\x01garbage",
        b"SIP/2.0 999 Nope\r\nVia: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKx\r\n\r\n",
        b"BYE sip:x SIP/2.0\r\n\r\n",
    ):
        c.callee.send(junk)
    c.callee.take_all()
    c.a.request("BYE")
    c.b.respond(c.b.take_in_dialog("BYE"), 200)
    assert net.cdr().disposition == "answered"


def test_exception_after_the_2xx_went_to_the_caller_hangs_up_with_bye(monkeypatch) -> None:
    net = Net()
    carrier = net.peer(CARRIER, "carrier")
    pbx = net.peer(PBX, "pbx")
    call = carrier.invite(DID)
    uas = pbx.take_invite()
    real = net.b2bua._response_to_a

    def respond_then_fail(*args, **kw):
        real(*args, **kw)
        raise RuntimeError("injected after sending")

    monkeypatch.setattr(net.b2bua, "_response_to_a", respond_then_fail)
    uas.answer()
    ok = carrier.take(200)
    call.ack(ok)
    assert call.take_in_dialog("BYE")
    uas.take_ack()
    assert uas.take_in_dialog("BYE")
    cdr = net.cdr()
    assert cdr.disposition == "answered" and cdr.hangup_by == "sbc"
