"""Matching (RFC 3261 §17.1.3, §17.2.3, RFC 2543 fallback), stray messages, TU input checks."""

from __future__ import annotations

from pathlib import Path

import pytest

from sbc.sip.errors import SIPParseError
from sbc.sip.events import AckReceived, RequestReceived, ResponseReceived, StrayResponse
from sbc.sip.message import Request, Response, parse_message
from sbc.sip.transaction import State, TransactionError, TransactionLayer
from tests.test_transaction import (
    GATEWAY,
    UAC,
    quiet_layer,
    request,
    response,
    server_key,
)

TORTURE = Path("/work/shared/sip-torture/rfc4475")


# -- client side: §17.1.3 -------------------------------------------------------------------------


def test_response_matches_branch_and_cseq_method():
    layer = TransactionLayer()
    inv = request("INVITE")
    ikey = layer.send_request(inv, GATEWAY, 0.0)
    layer.receive(response(inv, 180), GATEWAY, 0.1)
    ckey = layer.cancel(ikey, 0.2)
    assert ckey is not None and ckey != ikey
    cancel_ok = response(request("CANCEL"), 200)
    invite_487 = response(inv, 487)
    assert layer.receive(cancel_ok, GATEWAY, 0.3) == [ResponseReceived(cancel_ok, ckey)]
    assert layer.receive(invite_487, GATEWAY, 0.4) == [ResponseReceived(invite_487, ikey)]


def test_response_branch_is_compared_case_insensitively():
    layer = TransactionLayer()
    req = request("OPTIONS", branch="z9hG4bKMiXeD")
    key = layer.send_request(req, GATEWAY, 0.0)
    resp = response(request("OPTIONS", branch="z9hg4bkmixed"), 200)
    assert layer.receive(resp, GATEWAY, 0.1) == [ResponseReceived(resp, key)]


def test_stray_responses():
    layer = TransactionLayer()
    layer.send_request(request("OPTIONS"), GATEWAY, 0.0)
    other_branch = response(request("OPTIONS", branch="z9hG4bKother"), 200)
    other_method = response(request("OPTIONS", cseq_method="INFO"), 200)
    no_branch = response(request("OPTIONS", branch=None), 200)
    for resp in (other_branch, other_method, no_branch):
        assert layer.receive(resp, GATEWAY, 0.1) == [StrayResponse(resp, GATEWAY)]
    assert layer.stats.stray_responses == 3


def test_stray_2xx_retransmission_after_accepted_ends():
    layer = TransactionLayer()
    inv = request("INVITE")
    layer.send_request(inv, GATEWAY, 0.0)
    layer.receive(response(inv, 200), GATEWAY, 1.0)
    layer.handle_timer(40.0)
    ok = response(inv, 200)
    assert layer.receive(ok, GATEWAY, 41.0) == [StrayResponse(ok, GATEWAY)]


def test_response_without_cseq_raises_and_changes_nothing():
    layer = TransactionLayer()
    bad = parse_message(b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP h;branch=z9hG4bKx\r\nContent-Length: 0\r\n\r\n")
    with pytest.raises(SIPParseError):
        layer.receive(bad, GATEWAY, 0.0)


# -- server side: §17.2.3 -------------------------------------------------------------------------


def test_request_key_uses_branch_sent_by_and_method():
    layer = quiet_layer()
    a = server_key(layer, request("INVITE"))
    # Same branch from another sent-by, or another method, is another transaction.
    b = server_key(layer, request("INVITE", sent_by="192.0.2.99:5060"))
    c = server_key(layer, request("OPTIONS"))
    d = server_key(layer, request("INVITE", sent_by="192.0.2.1"))  # no port is not port 5060
    assert len({a, b, c, d}) == 4
    assert a == ("S", "z9hg4bkabc123", "192.0.2.1", 5060, "INVITE")
    assert d == ("S", "z9hg4bkabc123", "192.0.2.1", None, "INVITE")


def test_sent_by_with_lws_and_ipv6_matches_compact_form():
    layer = quiet_layer()
    key = server_key(layer, request("OPTIONS", sent_by="EXAMPLE.com:5060"))
    spaced = request("OPTIONS", sent_by="example.com : 5060")
    assert layer.receive(spaced, UAC, 0.1) == []  # a retransmission, parsed by headers.parse_via
    assert layer.stats.requests_absorbed == 1
    v6 = server_key(layer, request("OPTIONS", sent_by="[2001:DB8::1]:5070"))
    assert v6 == ("S", "z9hg4bkabc123", "[2001:db8::1]", 5070, "OPTIONS")
    assert key == ("S", "z9hg4bkabc123", "example.com", 5060, "OPTIONS")


def test_ack_for_2xx_with_new_branch_goes_to_tu():
    layer = quiet_layer()
    ack = request("ACK", branch="z9hG4bKnew", to_tag="t1")
    assert layer.receive(ack, UAC, 0.0) == [AckReceived(ack, UAC)]
    assert len(layer) == 0


def test_cancel_is_its_own_transaction_and_finds_the_invite():
    layer = quiet_layer()
    inv = request("INVITE")
    ikey = server_key(layer, inv)
    cancel = request("CANCEL")
    (event,) = layer.receive(cancel, UAC, 1.0)
    assert isinstance(event, RequestReceived) and event.key != ikey
    assert event.key == ("S", "z9hg4bkabc123", "192.0.2.1", 5060, "CANCEL")
    assert layer.find_invite_for_cancel(cancel) == ikey
    # The TU answers both: 200 to the CANCEL, 487 to the INVITE.
    layer.send_response(event.key, response(cancel, 200), 1.0)
    layer.send_response(ikey, response(inv, 487), 1.0)
    assert layer.state(event.key) is State.COMPLETED and layer.state(ikey) is State.COMPLETED
    # A CANCEL retransmission is absorbed by the CANCEL transaction (200 re-sent).
    layer.pop_outgoing()
    assert layer.receive(request("CANCEL"), UAC, 1.5) == []
    (again,) = layer.pop_outgoing()
    assert parse_message(again.data).cseq == (1, "CANCEL")


def test_cancel_for_unknown_invite():
    layer = quiet_layer()
    assert layer.find_invite_for_cancel(request("CANCEL")) is None
    server_key(layer, request("INVITE", sent_by="192.0.2.50:5060"))
    assert layer.find_invite_for_cancel(request("CANCEL")) is None


# -- RFC 2543 matching (§17.2.3, last paragraphs) ----------------------------------------------------


def test_rfc4475_badbranch_gets_rfc2543_matching():
    raw = (TORTURE / "badbranch.dat").read_bytes()
    layer = quiet_layer()
    req = parse_message(raw)
    assert isinstance(req, Request) and req.branch == "z9hG4bK"
    key = server_key(layer, req)
    assert key[0] == "S2543"
    assert layer.receive(parse_message(raw), UAC, 0.5) == []  # retransmission absorbed
    layer.send_response(key, response(req, 200), 0.6)
    (ok,) = layer.pop_outgoing()
    assert layer.receive(parse_message(raw), UAC, 0.7) == []
    assert layer.pop_outgoing() == [ok]


def rfc2543(method: str, **kw) -> Request:
    return request(method, branch=None, **kw)


def test_rfc2543_retransmission_and_distinct_requests():
    layer = quiet_layer()
    key = server_key(layer, rfc2543("INVITE"))
    assert layer.receive(rfc2543("INVITE"), UAC, 0.1) == []
    # Any differing field makes a new transaction.
    for kw in (
        dict(cseq=2),
        dict(call_id="other"),
        dict(from_tag="f2"),
        dict(uri="sip:other@198.51.100.7"),
        dict(sent_by="192.0.2.1:5070"),
    ):
        assert server_key(layer, rfc2543("INVITE", **kw), now=0.2) != key


def test_rfc2543_ack_for_non_2xx_matches_by_response_to_tag():
    layer = quiet_layer()
    inv = rfc2543("INVITE")
    key = server_key(layer, inv)
    layer.send_response(key, response(inv, 486, to_tag="resp-tag"), 0.1)
    wrong = rfc2543("ACK", to_tag="not-it")
    assert layer.receive(wrong, UAC, 0.2) == [AckReceived(wrong, UAC)]
    untagged = rfc2543("ACK")
    assert layer.receive(untagged, UAC, 0.2) == [AckReceived(untagged, UAC)]
    assert layer.state(key) is State.COMPLETED
    assert layer.receive(rfc2543("ACK", to_tag="resp-tag"), UAC, 0.3) == []
    assert layer.state(key) is State.CONFIRMED


def test_rfc2543_ack_before_any_response_is_not_matched():
    layer = quiet_layer()
    key = server_key(layer, rfc2543("INVITE"))
    ack = rfc2543("ACK", to_tag="x")
    assert layer.receive(ack, UAC, 0.1) == [AckReceived(ack, UAC)]
    assert layer.state(key) is State.PROCEEDING


def test_rfc2543_reinvite_ack_matches_with_dialog_to_tag():
    layer = quiet_layer()
    inv = rfc2543("INVITE", to_tag="dlg", cseq=5)
    key = server_key(layer, inv)
    layer.send_response(key, response(inv, 491), 0.1)
    assert layer.receive(rfc2543("ACK", to_tag="dlg", cseq=5), UAC, 0.2) == []
    assert layer.state(key) is State.CONFIRMED


def test_rfc2543_ack_for_2xx_passed_to_tu():
    layer = quiet_layer()
    inv = rfc2543("INVITE")
    key = server_key(layer, inv)
    layer.send_response(key, response(inv, 200, to_tag="me"), 0.1)
    ack = rfc2543("ACK", to_tag="me")
    assert layer.receive(ack, UAC, 0.2) == [AckReceived(ack, UAC)]
    assert layer.state(key) is State.ACCEPTED


def test_rfc2543_cancel_finds_invite():
    layer = quiet_layer()
    ikey = server_key(layer, rfc2543("INVITE"))
    cancel = rfc2543("CANCEL")
    ckey = server_key(layer, cancel)
    assert ckey != ikey and ckey[0] == "S2543"
    assert layer.find_invite_for_cancel(cancel) == ikey


def test_rfc2543_request_without_call_id_raises():
    layer = quiet_layer()
    bad = parse_message(
        b"OPTIONS sip:a@b SIP/2.0\r\nVia: SIP/2.0/UDP h\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
    )
    with pytest.raises(SIPParseError):
        layer.receive(bad, UAC, 0.0)
    assert len(layer) == 0


# -- TU input checks -------------------------------------------------------------------------------


def test_send_request_rejects_ack_and_bad_branches():
    layer = TransactionLayer()
    with pytest.raises(ValueError, match="ACK"):
        layer.send_request(request("ACK"), GATEWAY, 0.0)
    for branch in (None, "z9hG4bK", "abc"):
        with pytest.raises(ValueError, match="branch"):
            layer.send_request(request("OPTIONS", branch=branch), GATEWAY, 0.0)
    layer.send_request(request("OPTIONS"), GATEWAY, 0.0)
    with pytest.raises(TransactionError):
        layer.send_request(request("OPTIONS"), GATEWAY, 0.0)
    assert len(layer) == 1 and len(layer.pop_outgoing()) == 1


def test_send_stateless_queues_without_state():
    layer = TransactionLayer()
    ack = request("ACK", to_tag="t1")
    layer.send_stateless(ack, GATEWAY)
    ok = Response(200, headers=list(ack.headers))
    layer.send_stateless(ok, UAC)
    out = layer.pop_outgoing()
    assert [(o.data, o.dest) for o in out] == [(ack.to_bytes(), GATEWAY), (ok.to_bytes(), UAC)]
    assert len(layer) == 0 and layer.next_timer() is None
