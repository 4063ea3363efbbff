"""Client transactions: INVITE (RFC 3261 §17.1.1 + RFC 6026) and non-INVITE (§17.1.2)."""

from __future__ import annotations

import pytest

from sbc.sip.events import (
    ResponseReceived,
    StrayResponse,
    TransactionTerminated,
    TransactionTimeout,
    TransactionTransportError,
)
from sbc.sip.message import Request
from sbc.sip.timers import TimerConfig
from sbc.sip.transaction import State, TransactionLayer
from tests.test_transaction import (
    GATEWAY,
    GATEWAY_TLS,
    T1,
    T2,
    T4,
    TIMEOUT,
    parse_out,
    request,
    response,
    run_timers,
    sent_times,
)


def start(method: str = "INVITE", dest=GATEWAY, layer: TransactionLayer | None = None, **kw):
    if layer is None:
        layer = TransactionLayer()
    req = request(method, **kw)
    key = layer.send_request(req, dest, 0.0)
    (out,) = layer.pop_outgoing()
    assert out.data == req.to_bytes() and out.dest == dest
    return layer, req, key, out


# -- INVITE client: Calling ------------------------------------------------------------------------


def test_invite_calling_timer_a_doubles_without_cap_until_timer_b():
    layer, req, key, first = start()
    assert layer.state(key) is State.CALLING
    assert layer.next_timer() == T1
    fired = run_timers(layer, 100.0)
    # Timer A: T1, 2*T1, 4*T1, ... (not capped at T2, §17.1.1.2) until Timer B at 64*T1.
    assert sent_times(fired) == [0.5, 1.5, 3.5, 7.5, 15.5, 31.5]
    for _, _, out in fired:
        for o in out:
            assert o.data is first.data  # serialised once, reused
            assert o.dest == GATEWAY
    t, events, _ = fired[-1]
    assert t == TIMEOUT
    assert events == [TransactionTimeout(key, "INVITE"), TransactionTerminated(key)]
    assert layer.state(key) is None and len(layer) == 0
    assert layer.next_timer() is None
    assert layer.stats.timeouts == 1 and layer.stats.retransmissions_sent == 6


def test_invite_timer_b_follows_t1():
    layer, _, key, _ = start(layer=TransactionLayer(TimerConfig(t1=0.1, t2=4.0)))
    fired = run_timers(layer, 100.0)
    assert fired[-1][0] == pytest.approx(6.4)
    assert fired[-1][1] == [TransactionTimeout(key, "INVITE"), TransactionTerminated(key)]


def test_invite_reliable_never_retransmits_but_times_out():
    layer, _, key, _ = start(dest=GATEWAY_TLS)
    assert layer.next_timer() == TIMEOUT
    fired = run_timers(layer, 100.0)
    assert [(t, out) for t, _, out in fired] == [(TIMEOUT, [])]
    assert fired[0][1] == [TransactionTimeout(key, "INVITE"), TransactionTerminated(key)]


def test_invite_calling_transport_error():
    layer, _, key, _ = start()
    assert layer.transport_error(key, 0.1) == [
        TransactionTransportError(key, "INVITE"),
        TransactionTerminated(key),
    ]
    assert layer.state(key) is None
    assert layer.next_timer() is None  # the A and B entries are dead
    assert layer.transport_error(key, 0.2) == []
    assert layer.stats.transport_errors == 1


# -- INVITE client: Proceeding ---------------------------------------------------------------------


def test_invite_provisional_stops_retransmissions_and_timer_b():
    layer, req, key, _ = start()
    run_timers(layer, 0.6)  # one retransmission
    ringing = response(req, 180)
    assert layer.receive(ringing, GATEWAY, 0.7) == [ResponseReceived(ringing, key)]
    assert layer.state(key) is State.PROCEEDING
    # RFC 3261 §17.1.1.2: no more retransmissions; Timer B only runs in Calling.
    assert layer.next_timer() is None
    assert run_timers(layer, 1000.0) == []
    assert layer.state(key) is State.PROCEEDING
    again = response(req, 183)
    assert layer.receive(again, GATEWAY, 5.0) == [ResponseReceived(again, key)]


def test_invite_proceeding_transport_error():
    layer, req, key, _ = start()
    layer.receive(response(req, 100), GATEWAY, 0.1)
    assert layer.transport_error(key, 0.2) == [
        TransactionTransportError(key, "INVITE"),
        TransactionTerminated(key),
    ]


# -- INVITE client: non-2xx final, Completed, Timer D ----------------------------------------------


@pytest.mark.parametrize("provisional", [False, True])
def test_invite_non_2xx_generates_ack_and_waits_timer_d(provisional):
    layer, req, key, first = start(
        extra_vias=("SIP/2.0/UDP 10.0.0.1;branch=z9hG4bKlower",),
        routes=("<sip:proxy1.example.net;lr>", "<sip:proxy2.example.net;lr>"),
    )
    if provisional:
        layer.receive(response(req, 180), GATEWAY, 0.2)
    busy = response(req, 486, to_tag="busy-tag")
    assert layer.receive(busy, GATEWAY, 1.0) == [ResponseReceived(busy, key)]
    assert layer.state(key) is State.COMPLETED
    (out,) = layer.pop_outgoing()
    assert out.dest == GATEWAY
    ack = parse_out(out)
    assert isinstance(ack, Request)
    # RFC 3261 §17.1.1.3.
    assert ack.method == "ACK" and ack.uri == req.uri
    assert ack.get_all("Via") == ["SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKabc123"]
    assert ack.get_all("Route") == ["<sip:proxy1.example.net;lr>", "<sip:proxy2.example.net;lr>"]
    assert ack.call_id == req.call_id and ack.get("From") == req.get("From")
    assert ack.get("To") == busy.get("To") and ack.to_tag == "busy-tag"
    assert ack.cseq == (1, "ACK")
    assert ack.get("Contact") is None and ack.body == b""
    assert ack.get("Max-Forwards") == "70"

    # A retransmitted 486 is absorbed and answered with the same ACK (§17.1.1.2).
    assert layer.receive(response(req, 486, to_tag="busy-tag"), GATEWAY, 2.0) == []
    (again,) = layer.pop_outgoing()
    assert again.data == out.data
    assert layer.stats.responses_absorbed == 1

    # Provisionals in Completed are absorbed; a 2xx from another fork goes to the TU (which
    # must ACK and BYE it), without an ACK from the transaction.
    assert layer.receive(response(req, 180), GATEWAY, 2.1) == []
    late_fork = response(req, 200, to_tag="fork2")
    assert layer.receive(late_fork, GATEWAY, 2.2) == [ResponseReceived(late_fork, key)]
    assert layer.pop_outgoing() == []
    assert layer.state(key) is State.COMPLETED

    # Timer D = 32 s on UDP, then Terminated; no more INVITE retransmissions meanwhile.
    fired = run_timers(layer, 100.0)
    assert [(t, ev, o) for t, ev, o in fired] == [(1.0 + 32.0, [TransactionTerminated(key)], [])]


def test_invite_non_2xx_over_reliable_terminates_at_once():
    layer, req, key, _ = start(dest=GATEWAY_TLS)
    decline = response(req, 603)
    events = layer.receive(decline, GATEWAY_TLS, 1.0)
    assert events == [ResponseReceived(decline, key), TransactionTerminated(key)]
    (ack,) = layer.pop_outgoing()
    assert ack.dest == GATEWAY_TLS and parse_out(ack).method == "ACK"  # type: ignore[union-attr]
    assert layer.next_timer() is None and len(layer) == 0


def test_invite_completed_transport_error():
    layer, req, key, _ = start()
    layer.receive(response(req, 404), GATEWAY, 0.1)
    assert layer.transport_error(key, 0.2) == [
        TransactionTransportError(key, "INVITE"),
        TransactionTerminated(key),
    ]


# -- INVITE client: 2xx, Accepted, Timer M (RFC 6026) ----------------------------------------------


@pytest.mark.parametrize("provisional", [False, True])
def test_invite_2xx_accepted_passes_retransmissions_until_timer_m(provisional):
    layer, req, key, _ = start()
    if provisional:
        layer.receive(response(req, 183), GATEWAY, 0.1)
    ok = response(req, 200, to_tag="callee")
    assert layer.receive(ok, GATEWAY, 1.0) == [ResponseReceived(ok, key)]
    assert layer.state(key) is State.ACCEPTED
    assert layer.pop_outgoing() == []  # the ACK for a 2xx is the TU's (§13.2.2.4)
    # 2xx retransmissions and 2xx from other forks are passed up (RFC 6026 §7.2).
    ok2 = response(req, 200, to_tag="callee")
    fork = response(req, 200, to_tag="other-fork")
    assert layer.receive(ok2, GATEWAY, 1.5) == [ResponseReceived(ok2, key)]
    assert layer.receive(fork, GATEWAY, 1.6) == [ResponseReceived(fork, key)]
    # Anything else is absorbed.
    assert layer.receive(response(req, 180), GATEWAY, 1.7) == []
    assert layer.receive(response(req, 486), GATEWAY, 1.8) == []
    fired = run_timers(layer, 100.0)
    assert [(t, ev) for t, ev, _ in fired] == [(1.0 + TIMEOUT, [TransactionTerminated(key)])]
    late = response(req, 200, to_tag="callee")
    assert layer.receive(late, GATEWAY, 40.0) == [StrayResponse(late, GATEWAY)]


def test_invite_2xx_over_reliable_still_waits_timer_m():
    layer, req, key, _ = start(dest=GATEWAY_TLS)
    layer.receive(response(req, 200), GATEWAY_TLS, 1.0)
    assert layer.next_timer() == 1.0 + TIMEOUT


def test_invite_accepted_transport_error():
    layer, req, key, _ = start()
    layer.receive(response(req, 200), GATEWAY, 0.1)
    assert layer.transport_error(key, 0.2) == [
        TransactionTransportError(key, "INVITE"),
        TransactionTerminated(key),
    ]


# -- non-INVITE client -----------------------------------------------------------------------------


def test_non_invite_timer_e_doubles_capped_at_t2_until_timer_f():
    layer, _, key, first = start("OPTIONS")
    assert layer.state(key) is State.TRYING
    fired = run_timers(layer, 100.0)
    # E: T1, 2T1, 4T1, then T2 each time (§17.1.2.2), until F at 64*T1.
    assert sent_times(fired) == [0.5, 1.5, 3.5, 7.5, 11.5, 15.5, 19.5, 23.5, 27.5, 31.5]
    assert all(o.data is first.data for _, _, out in fired for o in out)
    assert fired[-1][0] == TIMEOUT
    assert fired[-1][1] == [TransactionTimeout(key, "OPTIONS"), TransactionTerminated(key)]


def test_non_invite_proceeding_retransmits_every_t2_until_timer_f():
    layer, req, key, _ = start("BYE")
    run_timers(layer, 0.5)  # E fired once; next at 1.5
    trying = response(req, 100)
    assert layer.receive(trying, GATEWAY, 0.6) == [ResponseReceived(trying, key)]
    assert layer.state(key) is State.PROCEEDING
    fired = run_timers(layer, 100.0)
    assert sent_times(fired) == [1.5, 5.5, 9.5, 13.5, 17.5, 21.5, 25.5, 29.5]
    assert fired[-1][1] == [TransactionTimeout(key, "BYE"), TransactionTerminated(key)]
    again = response(req, 100)
    assert layer.receive(again, GATEWAY, 1.0) == [StrayResponse(again, GATEWAY)]


@pytest.mark.parametrize("status", [200, 202, 404, 503])
@pytest.mark.parametrize("provisional", [False, True])
def test_non_invite_final_completes_then_timer_k(status, provisional):
    layer, req, key, _ = start("OPTIONS")
    if provisional:
        layer.receive(response(req, 100), GATEWAY, 0.1)
    final = response(req, status)
    assert layer.receive(final, GATEWAY, 1.0) == [ResponseReceived(final, key)]
    assert layer.state(key) is State.COMPLETED
    # Retransmitted finals (and anything else) are absorbed in Completed; no retransmissions.
    assert layer.receive(response(req, status), GATEWAY, 2.0) == []
    assert layer.receive(response(req, 100), GATEWAY, 2.1) == []
    fired = run_timers(layer, 100.0)
    assert [(t, ev, o) for t, ev, o in fired] == [(1.0 + T4, [TransactionTerminated(key)], [])]


def test_non_invite_reliable_no_timer_e_and_k_zero():
    layer, req, key, _ = start("REGISTER", dest=GATEWAY_TLS)
    assert layer.next_timer() == TIMEOUT
    ok = response(req, 200)
    assert layer.receive(ok, GATEWAY_TLS, 1.0) == [ResponseReceived(ok, key), TransactionTerminated(key)]
    assert layer.next_timer() is None and len(layer) == 0


def test_non_invite_reliable_timeout():
    layer, _, key, _ = start("OPTIONS", dest=GATEWAY_TLS)
    fired = run_timers(layer, 100.0)
    assert [(t, ev, o) for t, ev, o in fired] == [
        (TIMEOUT, [TransactionTimeout(key, "OPTIONS"), TransactionTerminated(key)], [])
    ]


@pytest.mark.parametrize("progress", ["trying", "proceeding", "completed"])
def test_non_invite_transport_error_each_state(progress):
    layer, req, key, _ = start("OPTIONS")
    if progress != "trying":
        layer.receive(response(req, 100), GATEWAY, 0.1)
    if progress == "completed":
        layer.receive(response(req, 200), GATEWAY, 0.2)
    assert layer.transport_error(key, 0.3) == [
        TransactionTransportError(key, "OPTIONS"),
        TransactionTerminated(key),
    ]
    assert layer.next_timer() is None


def test_timers_with_small_t2_cap():
    layer, _, key, _ = start("OPTIONS", layer=TransactionLayer(TimerConfig(t1=0.5, t2=0.5)))
    fired = run_timers(layer, 3.0)
    assert sent_times(fired) == [0.5, 1.0, 1.5, 2.0, 2.5, 3.0]
    assert T2 == 4.0 and T1 == 0.5  # the defaults the other tests assume
