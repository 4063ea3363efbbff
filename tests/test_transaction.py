"""Transaction layer basics and the helpers the other test_transaction_* files share.

Every test drives :class:`TransactionLayer` with a fake clock: time is just the ``now`` argument.
"""

from __future__ import annotations

import pytest

from sbc.sip.events import (
    Address,
    Event,
    Outgoing,
    RequestReceived,
    TransactionKey,
    TransactionTerminated,
)
from sbc.sip.message import Request, Response, make_response, parse_message
from sbc.sip.timers import TimerConfig
from sbc.sip.transaction import (
    MAGIC_COOKIE,
    TransactionLayer,
    is_rfc3261_branch,
    make_branch,
)

UAC = Address("udp", "192.0.2.1", 5060)
UAC_TCP = Address("tcp", "192.0.2.1", 40000, conn_id=7)
GATEWAY = Address("udp", "198.51.100.7", 5060)
GATEWAY_TLS = Address("tls", "198.51.100.7", 5061, conn_id=3)

T1 = 0.5
T2 = 4.0
T4 = 5.0
TIMEOUT = 64 * T1


def request(
    method: str = "INVITE",
    *,
    branch: str | None = "z9hG4bKabc123",
    sent_by: str = "192.0.2.1:5060",
    transport: str = "UDP",
    cseq: int = 1,
    cseq_method: str | None = None,
    to_tag: str | None = None,
    from_tag: str = "f1",
    call_id: str = "call-1@192.0.2.1",
    uri: str = "sip:+15551234567@198.51.100.7",
    extra_vias: tuple[str, ...] = (),
    routes: tuple[str, ...] = (),
    extra: str = "",
) -> Request:
    """Parse a realistic request off the wire (so the tests exercise the real parser)."""
    via_params = f";branch={branch}" if branch is not None else ""
    to = "<sip:+15551234567@198.51.100.7>" + (f";tag={to_tag}" if to_tag else "")
    lines = [f"{method} {uri} SIP/2.0", f"Via: SIP/2.0/{transport} {sent_by}{via_params}"]
    lines += [f"Via: {v}" for v in extra_vias]
    lines += [f"Route: {r}" for r in routes]
    lines += [
        "Max-Forwards: 70",
        f"From: <sip:alice@192.0.2.1>;tag={from_tag}",
        f"To: {to}",
        f"Call-ID: {call_id}",
        f"CSeq: {cseq} {cseq_method or method}",
        "Contact: <sip:alice@192.0.2.1:5060>",
    ]
    if extra:
        lines.append(extra)
    lines += ["Content-Length: 0", "", ""]
    msg = parse_message("\r\n".join(lines).encode())
    assert isinstance(msg, Request)
    return msg


def response(req: Request, status: int, to_tag: str | None = "t1", **kw) -> Response:
    """A response to ``req`` as the far end would build it."""
    return make_response(req, status, to_tag=to_tag if status > 100 else None, **kw)


def reparse(msg: Request | Response) -> Request | Response:
    """Round-trip through bytes, as a message from the network would be."""
    return parse_message(msg.to_bytes())


def parse_out(out: Outgoing) -> Request | Response:
    return parse_message(out.data)


def run_timers(layer: TransactionLayer, until: float) -> list[tuple[float, list[Event], list[Outgoing]]]:
    """Fire every timer up to ``until`` one deadline at a time; return (when, events, outgoing)."""
    fired: list[tuple[float, list[Event], list[Outgoing]]] = []
    while (t := layer.next_timer()) is not None and t <= until:
        events = layer.handle_timer(t)
        fired.append((t, events, layer.pop_outgoing()))
    return fired


def sent_times(fired: list[tuple[float, list[Event], list[Outgoing]]]) -> list[float]:
    """The deadlines at which something was sent."""
    return [round(t, 6) for t, _, out in fired for _ in out]


def server_key(
    layer: TransactionLayer, req: Request, source: Address = UAC, now: float = 0.0
) -> TransactionKey:
    """Deliver ``req`` as a new request; return the server transaction key it created."""
    (event,) = layer.receive(req, source, now)
    assert isinstance(event, RequestReceived)
    assert event.request is req and event.source == source
    return event.key


def quiet_layer(**kw) -> TransactionLayer:
    """A layer that leaves 100 Trying to the TU (so server tests see only what they send)."""
    return TransactionLayer(TimerConfig(trying_delay=None, **kw))


# -- tests ----------------------------------------------------------------------------------------


def test_address_reliable_by_transport():
    assert not Address("udp", "h", 1).reliable
    for transport in ("tcp", "tls", "ws", "wss"):
        assert Address(transport, "h", 1).reliable


def test_timer_config_defaults_and_derived_values():
    c = TimerConfig()
    assert (c.t1, c.t2, c.t4, c.trying_delay) == (0.5, 4.0, 5.0, 0.2)
    assert c.timeout == 32.0
    assert c.timer_d(False) == 32.0 and c.timer_d(True) == 0.0
    assert c.timer_i(False) == 5.0 and c.timer_i(True) == 0.0
    assert c.timer_j(False) == 32.0 and c.timer_j(True) == 0.0
    assert c.timer_k(False) == 5.0 and c.timer_k(True) == 0.0
    # D never drops below 32 s but follows 64*T1 when T1 is raised.
    assert TimerConfig(t1=0.1).timer_d(False) == 32.0
    assert TimerConfig(t1=1.0).timer_d(False) == 64.0


@pytest.mark.parametrize(
    "kw",
    [dict(t1=0), dict(t1=1.0, t2=0.5), dict(t4=-1), dict(trying_delay=-0.1)],
)
def test_timer_config_rejects_nonsense(kw):
    with pytest.raises(ValueError):
        TimerConfig(**kw)


def test_make_branch_is_unique_and_rfc3261():
    branches = {make_branch() for _ in range(1000)}
    assert len(branches) == 1000
    assert all(b.startswith(MAGIC_COOKIE) and is_rfc3261_branch(b) for b in branches)


@pytest.mark.parametrize(
    "branch, expected",
    [("z9hG4bK1", True), ("Z9HG4BKx", True), ("z9hG4bK", False), ("1234", False), (None, False), ("", False)],
)
def test_is_rfc3261_branch(branch, expected):
    assert is_rfc3261_branch(branch) is expected


def test_empty_layer():
    layer = TransactionLayer()
    assert len(layer) == 0
    assert layer.next_timer() is None
    assert layer.handle_timer(100.0) == []
    assert layer.pop_outgoing() == []
    assert layer.state(("C", "z9hg4bkx", "INVITE")) is None
    assert layer.request(("S", "z9hg4bkx", "h", None, "INVITE")) is None


def test_queries_and_counts():
    layer = quiet_layer()
    inv = request()
    ckey = layer.send_request(request("OPTIONS", branch="z9hG4bKopt"), GATEWAY, 0.0)
    skey = server_key(layer, inv)
    assert len(layer) == 2
    assert layer.request(skey) is inv
    assert layer.request(ckey).method == "OPTIONS"  # type: ignore[union-attr]
    assert layer.stats.client_transactions == 1 and layer.stats.server_transactions == 1
    assert ckey == ("C", "z9hg4bkopt", "OPTIONS")
    assert skey == ("S", "z9hg4bkabc123", "192.0.2.1", 5060, "INVITE")


def test_answered_transactions_let_go_of_their_messages():
    """With the final response a server transaction keeps only what absorbs retransmissions,
    and a non-INVITE client transaction nothing: they wait out Timer J/L/K for up to 32 s. An
    INVITE client transaction keeps its request (a forked 2xx is ACKed from it)."""
    layer = quiet_layer()
    inv, bye = request(), request("BYE", branch="z9hG4bKbye")
    skey, bkey = server_key(layer, inv), server_key(layer, bye)
    ckey = layer.send_request(request("OPTIONS", branch="z9hG4bKopt"), GATEWAY, 0.0)
    ikey = layer.send_request(request(branch="z9hG4bKinv"), GATEWAY, 0.0)
    layer.send_response(skey, make_response(inv, 200, to_tag="ok"), 0.0)
    layer.send_response(bkey, make_response(bye, 200, to_tag="ok"), 0.0)
    layer.receive(response(layer.request(ckey), 200), GATEWAY, 0.0)  # type: ignore[arg-type]
    layer.receive(response(layer.request(ikey), 200), GATEWAY, 0.0)  # type: ignore[arg-type]
    layer.pop_outgoing()
    assert [layer.state(k) for k in (skey, bkey, ckey, ikey)] == ["Accepted", "Completed", "Completed", "Accepted"]
    assert [layer.request(k) for k in (skey, bkey, ckey)] == [None, None, None]
    assert layer.request(ikey).method == "INVITE"  # type: ignore[union-attr]
    assert layer.receive(bye, UAC, 0.5) == []  # a retransmitted BYE is still answered
    assert [parse_out(o).status for o in layer.pop_outgoing()] == [200]  # type: ignore[union-attr]


def test_pop_outgoing_drains_in_order():
    layer = quiet_layer()
    a = request("OPTIONS", branch="z9hG4bKa")
    b = request("OPTIONS", branch="z9hG4bKb")
    layer.send_request(a, GATEWAY, 0.0)
    layer.send_request(b, GATEWAY_TLS, 0.0)
    out = layer.pop_outgoing()
    assert [o.data for o in out] == [a.to_bytes(), b.to_bytes()]
    assert [o.dest for o in out] == [GATEWAY, GATEWAY_TLS]
    assert layer.pop_outgoing() == []


def test_every_key_ends_with_one_terminated_event():
    layer = TransactionLayer()
    keys = {layer.send_request(request("OPTIONS", branch=f"z9hG4bK{i}"), GATEWAY, 0.0) for i in range(5)}
    keys.add(server_key(layer, request("INVITE", branch="z9hG4bKsrv")))
    terminated: list[TransactionKey] = []
    for _, events, _ in run_timers(layer, 1000.0):
        terminated += [e.key for e in events if isinstance(e, TransactionTerminated)]
    # The INVITE server transaction never got a final: it waits for the TU, forever.
    assert sorted(terminated) == sorted(k for k in keys if k[0] == "C")
    assert len(layer) == 1
