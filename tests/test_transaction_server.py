"""Server transactions: INVITE (RFC 3261 §17.2.1 + RFC 6026) and non-INVITE (§17.2.2)."""

from __future__ import annotations

import pytest

from sbc.sip.events import (
    AckReceived,
    TransactionTerminated,
    TransactionTimeout,
    TransactionTransportError,
)
from sbc.sip.message import Response
from sbc.sip.timers import TimerConfig
from sbc.sip.transaction import State, TransactionError, TransactionLayer
from tests.test_transaction import (
    T4,
    TIMEOUT,
    UAC,
    UAC_TCP,
    parse_out,
    quiet_layer,
    request,
    response,
    run_timers,
    sent_times,
    server_key,
)


def invite_server(source=UAC, layer: TransactionLayer | None = None, **kw):
    if layer is None:
        layer = quiet_layer()
    req = request("INVITE", transport="TCP" if source.reliable else "UDP", **kw)
    key = server_key(layer, req, source)
    assert layer.state(key) is State.PROCEEDING
    return layer, req, key


def send(layer, key, resp, now):
    events = layer.send_response(key, resp, now)
    (out,) = layer.pop_outgoing()
    return events, out


# -- 100 Trying (§17.2.1) --------------------------------------------------------------------------


def test_auto_100_trying_after_200ms_when_tu_is_silent():
    layer = TransactionLayer()
    req = request("INVITE", extra="Timestamp: 54.2")
    key = server_key(layer, req)
    assert layer.pop_outgoing() == []
    assert layer.next_timer() == pytest.approx(0.2)
    assert layer.handle_timer(0.2) == []
    (out,) = layer.pop_outgoing()
    assert out.dest == UAC
    trying = parse_out(out)
    assert isinstance(trying, Response) and trying.status == 100
    assert trying.to_tag is None and trying.get("Timestamp") == "54.2"
    assert trying.branch == req.branch and trying.cseq == (1, "INVITE")
    assert layer.state(key) is State.PROCEEDING
    # A retransmitted INVITE now gets the 100 again.
    assert layer.receive(request("INVITE", extra="Timestamp: 54.2"), UAC, 0.5) == []
    assert layer.pop_outgoing()[0].data == out.data


def test_no_auto_100_when_tu_responded_first():
    layer = TransactionLayer()
    req = request("INVITE")
    key = server_key(layer, req)
    send(layer, key, response(req, 180), 0.1)
    fired = run_timers(layer, 10.0)
    assert [t for t, _, _ in fired] == [pytest.approx(0.2)]  # the delay fired and sent nothing
    assert fired[0][1:] == ([], [])


def test_no_auto_100_when_disabled_and_immediate_when_zero():
    quiet = quiet_layer()
    server_key(quiet, request("INVITE"))
    assert quiet.next_timer() is None and quiet.pop_outgoing() == []
    eager = TransactionLayer(TimerConfig(trying_delay=0))
    server_key(eager, request("INVITE"))
    (out,) = eager.pop_outgoing()
    assert parse_out(out).status == 100  # type: ignore[union-attr]
    assert eager.next_timer() is None


def test_no_auto_100_for_non_invite():
    layer = TransactionLayer()
    server_key(layer, request("OPTIONS"))
    assert layer.next_timer() is None


# -- INVITE server: Proceeding ---------------------------------------------------------------------


def test_invite_retransmission_in_proceeding_absorbed_then_resends_last_provisional():
    layer, req, key = invite_server()
    assert layer.receive(request("INVITE"), UAC, 0.5) == []  # nothing sent yet: nothing to re-send
    assert layer.pop_outgoing() == []
    _, trying = send(layer, key, response(req, 100), 0.6)
    _, ringing = send(layer, key, response(req, 180, to_tag="x"), 0.7)
    assert layer.receive(request("INVITE"), UAC, 1.0) == []
    assert layer.pop_outgoing() == [ringing]
    assert layer.stats.requests_absorbed == 2
    assert layer.state(key) is State.PROCEEDING


def test_invite_proceeding_transport_error():
    layer, req, key = invite_server()
    assert layer.transport_error(key, 1.0) == [
        TransactionTransportError(key, "INVITE"),
        TransactionTerminated(key),
    ]
    assert layer.state(key) is None
    with pytest.raises(TransactionError):
        layer.send_response(key, response(req, 500), 1.1)


# -- INVITE server: non-2xx final, Completed, Timers G and H ---------------------------------------


def test_invite_lost_ack_timer_g_capped_at_t2_until_timer_h():
    layer, req, key = invite_server()
    events, final = send(layer, key, response(req, 486), 0.0)
    assert events == []
    assert layer.state(key) is State.COMPLETED
    fired = run_timers(layer, 100.0)
    # G: T1, 2T1, 4T1, then T2 (§17.2.1), until H at 64*T1.
    assert sent_times(fired) == [0.5, 1.5, 3.5, 7.5, 11.5, 15.5, 19.5, 23.5, 27.5, 31.5]
    assert all(o.data is final.data and o.dest == UAC for _, _, out in fired for o in out)
    assert fired[-1][0] == TIMEOUT
    assert fired[-1][1] == [TransactionTimeout(key, "INVITE"), TransactionTerminated(key)]
    assert len(layer) == 0


def test_invite_retransmission_in_completed_resends_final():
    layer, req, key = invite_server()
    _, final = send(layer, key, response(req, 404), 0.0)
    assert layer.receive(request("INVITE"), UAC, 0.1) == []
    assert layer.pop_outgoing() == [final]


def test_invite_ack_confirms_stops_g_then_timer_i():
    layer, req, key = invite_server()
    _, final = send(layer, key, response(req, 486, to_tag="x"), 0.0)
    run_timers(layer, 0.5)  # one G retransmission
    ack = request("ACK", to_tag="x")
    assert layer.receive(ack, UAC, 1.0) == []  # the ACK of a non-2xx stays in the transaction
    assert layer.state(key) is State.CONFIRMED
    # ACK and INVITE retransmissions are absorbed silently in Confirmed.
    assert layer.receive(request("ACK", to_tag="x"), UAC, 1.1) == []
    assert layer.receive(request("INVITE"), UAC, 1.2) == []
    assert layer.pop_outgoing() == []
    fired = run_timers(layer, 100.0)
    assert [(t, ev, o) for t, ev, o in fired] == [(1.0 + T4, [TransactionTerminated(key)], [])]


def test_invite_reliable_no_g_and_ack_terminates_at_once():
    layer, req, key = invite_server(source=UAC_TCP)
    _, final = send(layer, key, response(req, 486), 0.0)
    assert final.dest == UAC_TCP  # back over the connection the INVITE came on
    assert layer.next_timer() == TIMEOUT  # H only
    ack = request("ACK", transport="TCP", to_tag="t1")
    assert layer.receive(ack, UAC_TCP, 1.0) == [TransactionTerminated(key)]
    assert layer.next_timer() is None


def test_invite_reliable_lost_ack_timer_h():
    layer, req, key = invite_server(source=UAC_TCP)
    send(layer, key, response(req, 486), 0.0)
    fired = run_timers(layer, 100.0)
    assert [(t, ev, o) for t, ev, o in fired] == [
        (TIMEOUT, [TransactionTimeout(key, "INVITE"), TransactionTerminated(key)], [])
    ]


def test_invite_completed_rejects_second_final():
    layer, req, key = invite_server()
    send(layer, key, response(req, 486), 0.0)
    for status in (180, 200, 603):
        with pytest.raises(TransactionError):
            layer.send_response(key, response(req, status), 0.1)
    assert layer.state(key) is State.COMPLETED and layer.pop_outgoing() == []


@pytest.mark.parametrize("confirmed", [False, True])
def test_invite_completed_and_confirmed_transport_error(confirmed):
    layer, req, key = invite_server()
    send(layer, key, response(req, 486), 0.0)
    if confirmed:
        layer.receive(request("ACK", to_tag="t1"), UAC, 0.1)
    assert layer.transport_error(key, 0.2) == [
        TransactionTransportError(key, "INVITE"),
        TransactionTerminated(key),
    ]
    assert layer.next_timer() is None


# -- INVITE server: 2xx, Accepted, Timer L (RFC 6026) ----------------------------------------------


@pytest.mark.parametrize("source", [UAC, UAC_TCP])
def test_invite_2xx_accepted_until_timer_l(source):
    layer, req, key = invite_server(source=source)
    send(layer, key, response(req, 180), 0.0)
    ok = response(req, 200, to_tag="me")
    events, out = send(layer, key, ok, 1.0)
    assert events == [] and out.dest == source
    assert layer.state(key) is State.ACCEPTED
    # No retransmission timer: the TU retransmits its 2xx (§13.3.1.4) through the transaction.
    assert layer.next_timer() == 1.0 + TIMEOUT
    assert layer.send_response(key, ok, 1.5) == []
    assert layer.pop_outgoing() == [out]
    # INVITE retransmissions are absorbed without re-sending (RFC 6026 §7.1).
    assert layer.receive(request("INVITE", transport="TCP" if source.reliable else "UDP"), source, 2.0) == []
    assert layer.pop_outgoing() == []
    # Only 2xx may be sent in Accepted.
    with pytest.raises(TransactionError):
        layer.send_response(key, response(req, 486), 2.1)
    with pytest.raises(TransactionError):
        layer.send_response(key, response(req, 180), 2.1)
    fired = run_timers(layer, 100.0)
    assert [(t, ev, o) for t, ev, o in fired] == [(1.0 + TIMEOUT, [TransactionTerminated(key)], [])]


def test_invite_accepted_ack_with_new_branch_goes_to_tu():
    layer, req, key = invite_server()
    send(layer, key, response(req, 200, to_tag="me"), 0.0)
    ack = request("ACK", branch="z9hG4bKack2xx", to_tag="me")
    assert layer.receive(ack, UAC, 0.1) == [AckReceived(ack, UAC)]
    assert layer.state(key) is State.ACCEPTED


def test_invite_accepted_ack_reusing_invite_branch_goes_to_tu():
    # Broken UAs reuse the INVITE branch for the 2xx ACK; RFC 6026 §8.7 passes it up.
    layer, req, key = invite_server()
    send(layer, key, response(req, 200, to_tag="me"), 0.0)
    ack = request("ACK", to_tag="me")
    assert layer.receive(ack, UAC, 0.1) == [AckReceived(ack, UAC)]
    assert layer.state(key) is State.ACCEPTED


def test_invite_accepted_transport_error():
    layer, req, key = invite_server()
    send(layer, key, response(req, 200), 0.0)
    assert layer.transport_error(key, 0.1) == [
        TransactionTransportError(key, "INVITE"),
        TransactionTerminated(key),
    ]


def test_ack_in_proceeding_is_absorbed():
    layer, req, key = invite_server()
    assert layer.receive(request("ACK", to_tag="t1"), UAC, 0.1) == []
    assert layer.state(key) is State.PROCEEDING
    assert layer.stats.requests_absorbed == 1


# -- non-INVITE server -----------------------------------------------------------------------------


def nict_server(method="OPTIONS", source=UAC):
    layer = quiet_layer()
    req = request(method, transport="TCP" if source.reliable else "UDP")
    key = server_key(layer, req, source)
    assert layer.state(key) is State.TRYING
    return layer, req, key


def test_non_invite_trying_absorbs_retransmissions():
    layer, req, key = nict_server()
    assert layer.receive(request("OPTIONS"), UAC, 0.5) == []
    assert layer.pop_outgoing() == []
    assert layer.next_timer() is None  # no timer in Trying: the TU must answer


def test_non_invite_proceeding_resends_provisional():
    layer, req, key = nict_server("BYE")
    events, trying = send(layer, key, response(req, 100), 0.1)
    assert events == [] and layer.state(key) is State.PROCEEDING
    assert layer.receive(request("BYE"), UAC, 0.5) == []
    assert layer.pop_outgoing() == [trying]
    _, ringing = send(layer, key, response(req, 183), 0.6)
    assert layer.receive(request("BYE"), UAC, 0.7) == []
    assert layer.pop_outgoing() == [ringing]


@pytest.mark.parametrize("status", [200, 481])
@pytest.mark.parametrize("provisional", [False, True])
def test_non_invite_final_completed_resends_final_until_timer_j(status, provisional):
    layer, req, key = nict_server()
    if provisional:
        send(layer, key, response(req, 100), 0.0)
    events, final = send(layer, key, response(req, status), 1.0)
    assert events == [] and layer.state(key) is State.COMPLETED
    assert layer.receive(request("OPTIONS"), UAC, 2.0) == []
    assert layer.pop_outgoing() == [final]
    with pytest.raises(TransactionError):
        layer.send_response(key, response(req, 500), 2.0)
    fired = run_timers(layer, 100.0)
    assert [(t, ev, o) for t, ev, o in fired] == [(1.0 + TIMEOUT, [TransactionTerminated(key)], [])]
    # After Terminated the same request is new again.
    assert server_key(layer, request("OPTIONS"), UAC, 40.0) == key


def test_non_invite_reliable_final_terminates_at_once():
    layer, req, key = nict_server(source=UAC_TCP)
    events, final = send(layer, key, response(req, 200), 1.0)
    assert final.dest == UAC_TCP
    assert events == [TransactionTerminated(key)]
    assert len(layer) == 0 and layer.next_timer() is None


@pytest.mark.parametrize("progress", ["trying", "proceeding", "completed"])
def test_non_invite_server_transport_error(progress):
    layer, req, key = nict_server()
    if progress != "trying":
        send(layer, key, response(req, 100), 0.0)
    if progress == "completed":
        send(layer, key, response(req, 200), 0.1)
    assert layer.transport_error(key, 0.2) == [
        TransactionTransportError(key, "OPTIONS"),
        TransactionTerminated(key),
    ]
    assert layer.next_timer() is None


def test_send_response_unknown_key():
    layer = quiet_layer()
    with pytest.raises(TransactionError):
        layer.send_response(("S", "z9hg4bkx", "h", None, "OPTIONS"), Response(200), 0.0)
