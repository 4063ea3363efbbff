"""Calls the SBC originates for the API (``POST /v1/calls``): callee first, then the bridge.

The SBC offers its own SDP (relay ports) to the callee, chosen by LCR or a named carrier; when
the callee answers and is ACKed, the bridge target (a trunk or a SIP URI) gets an INVITE whose
offer is the callee's answer anchored on the relay. Media is anchored through a real relay
engine on loopback; signalling runs on the fake clock of tests/b2bua_harness.py.
"""

from __future__ import annotations

import pytest

from routing.model import TrunkTarget
from rtp_relay_ext import RelayEngine
from sbc.b2bua.control import OriginateError
from sbc.media.manager import MediaManager
from sbc.sip.events import Address
from sbc.sip.message import Request
from tests.b2bua_harness import CARRIER, GW_A, GW_B, PBX, Net, sdp, snapshot

CALLEE = "+12125551234"


@pytest.fixture
def relay():
    engine = RelayEngine("127.0.0.1", 42000, 42199, quarantine=0.1)
    yield engine
    engine.close()


@pytest.fixture
def net(relay) -> Net:
    return Net(media=MediaManager(relay, "127.0.0.1"))


def originate(net: Net, **kw):
    args = {"caller": "+14155550123", "callee": CALLEE, "bridge_to": "trunk:acme/pbx", "now": net.now}
    args.update(kw)
    live = net.b2bua.originate(**args)
    net.flush()
    return live


def answer_callee(net: Net, gw=GW_A):
    callee = net.peer(gw, "gw").take_invite()
    callee.ringing()
    callee.answer(sdp("127.0.0.4", 30000))
    return callee


def test_callee_then_bridge_target_then_both_hang_up_with_bye(net) -> None:
    live = originate(net)
    assert (live.direction, live.state, live.callee) == ("originated", "routing", CALLEE)
    gw = net.peer(GW_A, "gw")
    callee = gw.take_invite()
    # LCR picked carrier A (strip_plus, tech prefix); the offer is the SBC's own, on relay ports.
    assert callee.invite.uri.startswith("sip:77#12125551234@127.0.0.4")
    offer = callee.invite.body.decode()
    assert "c=IN IP4 127.0.0.1" in offer and "RTP/AVP 0 8 101" in offer
    assert net.peer(PBX, "pbx").inbox == []  # nothing to the bridge until the callee answers
    callee.ringing()
    callee.answer(sdp("127.0.0.4", 30000))
    callee.take_ack()  # the SBC ACKs the callee at once
    bridge = net.peer(PBX, "pbx").take_invite()
    assert bridge.invite.uri.startswith(f"sip:{CALLEE}@127.0.0.3:5070")
    body = bridge.invite.body.decode()
    assert "c=IN IP4 127.0.0.1" in body and "127.0.0.4" not in body  # the callee stays hidden
    bridge.ringing()
    bridge.answer(sdp("127.0.0.3", 31000))
    bridge.take_ack()
    [call] = net.b2bua.live_calls()
    assert call.state == "confirmed" and [leg.state for leg in call.legs] == ["confirmed", "confirmed"]
    # The bridge target hangs up: the callee gets a BYE; the CDR says who and how.
    bridge.request("BYE")
    net.peer(PBX, "pbx").take(200)
    bye = gw.take("BYE")
    assert isinstance(bye, Request) and bye.call_id == callee.call_id
    cdr = net.cdr()
    assert (cdr.direction, cdr.disposition, cdr.hangup_by, cdr.carrier) == (
        "originated",
        "answered",
        "caller",
        "A",
    )
    assert net.b2bua.live_calls() == []


def test_api_hangup_of_a_bridged_call_sends_bye_both_ways(net) -> None:
    live = originate(net)
    callee = answer_callee(net)
    callee.take_ack()
    bridge = net.peer(PBX, "pbx").take_invite()
    bridge.answer(sdp("127.0.0.3", 31000))
    bridge.take_ack()
    assert net.b2bua.hangup(live.id, net.now) is True
    net.flush()
    assert net.peer(GW_A, "gw").take("BYE") and net.peer(PBX, "pbx").take("BYE")
    assert net.cdr().hangup_by == "api"
    assert net.b2bua.hangup(live.id, net.now) is False  # gone


def test_api_hangup_while_the_callee_rings_cancels_it(net) -> None:
    live = originate(net)
    callee = net.peer(GW_A, "gw").take_invite()
    callee.ringing()
    assert net.b2bua.hangup(live.id, net.now)
    net.flush()
    assert net.peer(GW_A, "gw").take("CANCEL")
    cdr = net.cdr()
    assert (cdr.disposition, cdr.hangup_by) == ("cancelled", "api")


def test_bridge_target_refuses_so_the_callee_is_hung_up(net) -> None:
    originate(net)
    callee = answer_callee(net)
    callee.take_ack()
    bridge = net.peer(PBX, "pbx").take_invite()
    bridge.respond_invite(486)
    net.peer(PBX, "pbx").take("ACK")
    assert net.peer(GW_A, "gw").take("BYE")
    cdr = net.cdr()
    assert cdr.disposition == "answered" and cdr.hangup_by == "sbc"
    assert cdr.attempts[-1].code == 486 and cdr.attempts[-1].reason.startswith("bridge")


def test_callee_hangs_up_before_the_bridge_answers_cancels_the_bridge(net) -> None:
    originate(net)
    callee = answer_callee(net)
    callee.take_ack()
    bridge = net.peer(PBX, "pbx").take_invite()
    bridge.ringing()
    callee.request("BYE")
    net.peer(GW_A, "gw").take(200)
    assert net.peer(PBX, "pbx").take("CANCEL")
    assert net.cdr().hangup_by == "callee"


def test_failover_to_the_next_carrier_and_named_carrier(net) -> None:
    originate(net)
    first = net.peer(GW_A, "gw").take_invite()
    first.respond_invite(503)
    net.peer(GW_A, "gw").take("ACK")
    second = net.peer(GW_B, "gwb").take_invite()  # carrier B, next in the route
    assert second.invite.uri.startswith("sip:+12125551234@127.0.0.5")
    # A named carrier skips the route: B directly.
    originate(net, carrier="B")
    assert net.peer(GW_B, "gwb").take_invite()
    assert not net.peer(GW_A, "gw").has()


def test_sip_uri_bridge_target(net) -> None:
    originate(net, bridge_to="sip:bot@127.0.0.2:5060")
    callee = answer_callee(net)
    callee.take_ack()
    bridge = net.peer(CARRIER, "bot").take_invite()
    assert bridge.invite.uri == "sip:bot@127.0.0.2:5060"


@pytest.mark.parametrize(
    ("kw", "status", "words"),
    [
        ({"callee": "not a number"}, 422, "callee"),
        ({"caller": "bad caller<>"}, 422, "caller"),
        ({"customer": "nobody"}, 404, "customer"),
        ({"carrier": "nobody"}, 404, "carrier"),
        ({"bridge_to": "trunk:acme/nope"}, 404, "trunk"),
        ({"bridge_to": "trunk:other/pbx", "customer": "acme"}, 404, "trunk"),
        ({"bridge_to": "sip:bot@bot.example.com"}, 422, "does not resolve"),
        ({"bridge_to": "mailto:x@y"}, 422, "bridge_to"),
        ({"callee": "+4420711111"}, 503, "no route"),
    ],
)
def test_refusals_before_any_sip(net, kw, status, words) -> None:
    with pytest.raises(OriginateError) as err:
        originate(net, **kw)
    assert err.value.status == status and words in err.value.message
    assert net.log == [s for s in net.log if s.msg.method == "OPTIONS"]  # probes only
    assert net.b2bua.live_calls() == [] and net.cdrs == []


def test_without_media_anchoring_origination_is_refused() -> None:
    net = Net()
    with pytest.raises(OriginateError) as err:
        net.b2bua.originate(caller="1", callee=CALLEE, bridge_to="trunk:acme/pbx", now=net.now)
    assert err.value.status == 503


def test_live_calls_are_scoped_to_a_customer(net) -> None:
    originate(net, customer="acme")
    originate(net)
    assert len(net.b2bua.live_calls()) == 2
    [mine] = net.b2bua.live_calls("acme")
    assert mine.customer == "acme"
    assert net.b2bua.live_calls("other") == []
    assert net.b2bua.hangup(mine.id, net.now, customer="other") is False


PBX2 = Address("udp", "127.0.0.8", 5070)


def two_target_net(relay) -> Net:  # type: ignore[no-untyped-def]
    """The trunk has two targets: 127.0.0.3 first (priority 1), then 127.0.0.8."""
    targets = (TrunkTarget("sip:127.0.0.3:5070", priority=1), TrunkTarget("sip:127.0.0.8:5070", priority=2))
    return Net(snapshot(targets=targets), media=MediaManager(relay, "127.0.0.1"))


@pytest.mark.parametrize("failure", [503, "silence"])
def test_bridge_fails_over_to_the_trunks_next_target(relay, failure) -> None:  # type: ignore[no-untyped-def]
    net = two_target_net(relay)
    originate(net)
    callee = answer_callee(net)
    callee.take_ack()
    first = net.peer(PBX, "pbx").take_invite()
    if failure == "silence":
        net.advance(40.0)  # Timer B: 64*T1 without any answer
    else:
        first.respond_invite(failure)
        net.peer(PBX, "pbx").take("ACK")
    second = net.peer(PBX2, "pbx").take_invite()
    assert second.invite.uri.startswith(f"sip:{CALLEE}@127.0.0.8:5070")
    assert second.invite.call_id != first.invite.call_id  # a new dialog, not a retry of the old
    assert "c=IN IP4 127.0.0.1" in second.invite.body.decode()
    second.answer(sdp("127.0.0.8", 31000))
    second.take_ack()
    [call] = net.b2bua.live_calls()
    assert call.state == "confirmed" and {leg.peer for leg in call.legs} == {
        "127.0.0.4:5060",
        "127.0.0.8:5070",
    }
    assert net.peer(GW_A, "gw").inbox == []  # the callee stayed up throughout
    net.b2bua.hangup(call.id, net.now)
    net.flush()
    net.peer(PBX2, "pbx").take("BYE")
    net.peer(GW_A, "gw").take("BYE")
    attempts = net.cdr().attempts
    assert attempts[-1].reason.startswith("bridge") and attempts[-1].code == (
        408 if failure == "silence" else 503
    )


def test_bridge_does_not_fail_over_after_busy(relay) -> None:  # type: ignore[no-untyped-def]
    net = two_target_net(relay)
    originate(net)
    callee = answer_callee(net)
    callee.take_ack()
    net.peer(PBX, "pbx").take_invite().respond_invite(486)
    net.peer(PBX, "pbx").take("ACK")
    assert net.peer(GW_A, "gw").take("BYE")
    assert net.peer(PBX2, "pbx").inbox == []
    assert net.cdr().attempts[-1].code == 486
