"""CANCEL from the client side (RFC 3261 §9.1) and its races with provisional and final responses."""

from __future__ import annotations

import pytest

from sbc.sip.events import (
    ResponseReceived,
    TransactionTerminated,
    TransactionTimeout,
    TransactionTransportError,
)
from sbc.sip.message import Request
from sbc.sip.transaction import State, TransactionError, TransactionLayer, build_cancel
from tests.test_transaction import (
    GATEWAY,
    GATEWAY_TLS,
    TIMEOUT,
    parse_out,
    request,
    response,
    run_timers,
)

ROUTES = ("<sip:edge.example.net;lr>",)


def calling(dest=GATEWAY):
    layer = TransactionLayer()
    inv = request(
        "INVITE",
        routes=ROUTES,
        extra_vias=("SIP/2.0/UDP 10.0.0.9;branch=z9hG4bKbelow",),
        extra="Content-Type: application/sdp",
    )
    key = layer.send_request(inv, dest, 0.0)
    layer.pop_outgoing()
    return layer, inv, key


def check_cancel(cancel: Request, inv: Request) -> None:
    # RFC 3261 §9.1.
    assert cancel.method == "CANCEL" and cancel.uri == inv.uri
    assert cancel.get_all("Via") == [inv.top_via]
    assert cancel.get_all("Route") == list(ROUTES)
    for name in ("From", "To", "Call-ID"):
        assert cancel.get(name) == inv.get(name)
    assert cancel.cseq == (inv.cseq[0], "CANCEL")
    assert cancel.get("Content-Type") is None and cancel.get("Contact") is None


def test_cancel_in_proceeding_is_sent_at_once():
    layer, inv, key = calling()
    layer.receive(response(inv, 180), GATEWAY, 0.1)
    ckey = layer.cancel(key, 0.2, headers=[("Reason", 'SIP;cause=200;text="Call completed elsewhere"')])
    assert ckey == ("C", key[1], "CANCEL")
    (out,) = layer.pop_outgoing()
    assert out.dest == GATEWAY
    cancel = parse_out(out)
    assert isinstance(cancel, Request)
    check_cancel(cancel, inv)
    assert cancel.get("Reason") == 'SIP;cause=200;text="Call completed elsewhere"'
    assert layer.state(ckey) is State.TRYING
    # Asking again returns the same transaction and sends nothing.
    assert layer.cancel(key, 0.3) == ckey and layer.pop_outgoing() == []


def test_cancel_then_487_generates_ack():
    layer, inv, key = calling()
    layer.receive(response(inv, 183), GATEWAY, 0.1)
    ckey = layer.cancel(key, 0.2)
    cancel = parse_out(layer.pop_outgoing()[0])
    ok = response(cancel, 200)  # type: ignore[arg-type]
    assert layer.receive(ok, GATEWAY, 0.3) == [ResponseReceived(ok, ckey)]
    terminated = response(inv, 487, to_tag="gw")
    assert layer.receive(terminated, GATEWAY, 0.4) == [ResponseReceived(terminated, key)]
    (ack_out,) = layer.pop_outgoing()
    ack = parse_out(ack_out)
    assert ack.method == "ACK" and ack.cseq == (1, "ACK") and ack.to_tag == "gw"  # type: ignore[union-attr]
    assert layer.state(key) is State.COMPLETED and layer.state(ckey) is State.COMPLETED
    # Both finish on their own timers: K (5 s) for the CANCEL, D (32 s) for the INVITE.
    fired = run_timers(layer, 100.0)
    assert [(round(t, 6), ev) for t, ev, _ in fired] == [
        (5.3, [TransactionTerminated(ckey)]),
        (32.4, [TransactionTerminated(key)]),
    ]


def test_cancel_before_provisional_is_deferred_until_one_arrives():
    layer, inv, key = calling()
    ckey = layer.cancel(key, 0.1)
    assert ckey is not None and layer.pop_outgoing() == []
    assert layer.state(ckey) is None  # not started yet
    assert layer.cancel(key, 0.2) == ckey
    run_timers(layer, 0.6)  # the INVITE keeps retransmitting meanwhile
    assert [parse_out(o).method for o in layer.pop_outgoing()] == []  # type: ignore[union-attr]
    trying = response(inv, 100)
    assert layer.receive(trying, GATEWAY, 1.0) == [ResponseReceived(trying, key)]
    (out,) = layer.pop_outgoing()
    check_cancel(parse_out(out), inv)  # type: ignore[arg-type]
    assert layer.state(ckey) is State.TRYING
    # The CANCEL transaction's timers start when it is sent: E at 1.0 + T1.
    assert layer.next_timer() == 1.5


def test_deferred_cancel_dropped_when_final_arrives_first():
    layer, inv, key = calling()
    ckey = layer.cancel(key, 0.1)
    ok = response(inv, 200)
    assert layer.receive(ok, GATEWAY, 0.2) == [ResponseReceived(ok, key), TransactionTerminated(ckey)]
    assert layer.pop_outgoing() == []
    assert layer.state(key) is State.ACCEPTED
    assert layer.cancel(key, 0.3) is None  # too late: the TU must ACK and BYE


def test_deferred_cancel_dropped_on_non_2xx_final():
    layer, inv, key = calling()
    ckey = layer.cancel(key, 0.1)
    busy = response(inv, 486)
    assert layer.receive(busy, GATEWAY, 0.2) == [ResponseReceived(busy, key), TransactionTerminated(ckey)]
    assert [parse_out(o).method for o in layer.pop_outgoing()] == ["ACK"]  # type: ignore[union-attr]


def test_deferred_cancel_dropped_on_timer_b():
    layer, inv, key = calling()
    ckey = layer.cancel(key, 0.1)
    fired = run_timers(layer, 100.0)
    assert fired[-1][1] == [
        TransactionTimeout(key, "INVITE"),
        TransactionTerminated(ckey),
        TransactionTerminated(key),
    ]


def test_deferred_cancel_dropped_on_transport_error():
    layer, inv, key = calling(dest=GATEWAY_TLS)
    ckey = layer.cancel(key, 0.1)
    assert layer.transport_error(key, 0.2) == [
        TransactionTransportError(key, "INVITE"),
        TransactionTerminated(ckey),
        TransactionTerminated(key),
    ]


def test_200_to_invite_after_cancel_sent():
    # The race §9.1 warns about: the callee answered before the CANCEL arrived.
    layer, inv, key = calling()
    layer.receive(response(inv, 180), GATEWAY, 0.1)
    ckey = layer.cancel(key, 0.2)
    cancel = parse_out(layer.pop_outgoing()[0])
    ok = response(inv, 200, to_tag="answered")
    assert layer.receive(ok, GATEWAY, 0.3) == [ResponseReceived(ok, key)]
    assert layer.state(key) is State.ACCEPTED
    assert layer.pop_outgoing() == []  # no ACK from the transaction for a 2xx
    cancel_ok = response(cancel, 200)  # type: ignore[arg-type]
    assert layer.receive(cancel_ok, GATEWAY, 0.4) == [ResponseReceived(cancel_ok, ckey)]
    assert layer.cancel(key, 0.5) == ckey  # already cancelled: same key, nothing new
    assert layer.pop_outgoing() == []


@pytest.mark.parametrize("status", [200, 404])
def test_cancel_after_final_is_not_sent(status):
    layer, inv, key = calling()
    layer.receive(response(inv, status), GATEWAY, 0.1)
    layer.pop_outgoing()
    assert layer.cancel(key, 0.2) is None
    assert layer.pop_outgoing() == []


def test_cancel_unknown_and_non_invite():
    layer = TransactionLayer()
    assert layer.cancel(("C", "z9hg4bkgone", "INVITE"), 0.0) is None
    okey = layer.send_request(request("OPTIONS"), GATEWAY, 0.0)
    with pytest.raises(TransactionError):
        layer.cancel(okey, 0.1)


def test_cancel_transaction_times_out_on_its_own():
    layer, inv, key = calling()
    layer.receive(response(inv, 180), GATEWAY, 0.0)
    ckey = layer.cancel(key, 0.0)
    fired = run_timers(layer, 100.0)
    assert (TIMEOUT, [TransactionTimeout(ckey, "CANCEL"), TransactionTerminated(ckey)]) in [
        (t, ev) for t, ev, _ in fired
    ]
    assert layer.state(key) is State.PROCEEDING  # the INVITE still waits for its final


def test_build_cancel_adds_headers_last():
    inv = request("INVITE")
    cancel = build_cancel(inv, [("Reason", "Q.850;cause=16")])
    assert cancel.headers[-1] == ("Reason", "Q.850;cause=16")
    assert cancel.branch == inv.branch
