"""Overload shedding in the sans-I/O core: a refused new INVITE costs one stateless 503."""

from __future__ import annotations

from sbc.core import SipCore
from sbc.sip.events import Address
from sbc.sip.message import Response, parse_message

CARRIER = Address("udp", "192.0.2.10", 5060, None)


class FakeGuard:
    """Admits while ``admit`` is True; records how often it was asked."""

    def __init__(self, admit: bool, retry_after_s: int = 7) -> None:
        self.admit = admit
        self.retry_after_s = retry_after_s
        self.asked = 0

    def admit_new_call(self, now: float) -> bool:
        self.asked += 1
        return self.admit


def request(
    method: str = "INVITE", *, branch: str = "z9hG4bK-1", to_tag: str = "", cseq: str = "1 INVITE"
) -> bytes:
    to = "<sip:+14155550100@198.51.100.1>" + (f";tag={to_tag}" if to_tag else "")
    return (
        f"{method} sip:+14155550100@198.51.100.1 SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 192.0.2.10:5060;branch={branch}\r\n"
        "Max-Forwards: 70\r\n"
        "From: <sip:+12125550199@192.0.2.10>;tag=abc\r\n"
        f"To: {to}\r\n"
        "Call-ID: shed-1@192.0.2.10\r\n"
        f"CSeq: {cseq}\r\n"
        "Contact: <sip:caller@192.0.2.10:5060>\r\n"
        "Content-Length: 0\r\n\r\n"
    ).encode()


def make_core(guard: FakeGuard) -> tuple[SipCore, list]:
    invites: list = []
    core = SipCore(
        local_hosts={"198.51.100.1"},
        on_invite=lambda core, req, key, now: invites.append(key),
        admission=guard,
    )
    return core, invites


def sent(core: SipCore) -> list[tuple[Address, Response]]:
    out = []
    for o in core.pop_outgoing():
        msg = parse_message(o.data)
        assert isinstance(msg, Response)
        out.append((o.dest, msg))
    return out


def test_refused_invite_gets_one_stateless_503_with_the_guards_retry_after() -> None:
    guard = FakeGuard(admit=False, retry_after_s=7)
    core, invites = make_core(guard)
    core.receive(request(), CARRIER, 10.0)
    [(dest, resp)] = sent(core)
    assert (dest.host, dest.port) == (CARRIER.host, CARRIER.port)
    assert resp.status == 503 and resp.get("Retry-After") == "7"
    assert resp.to_tag and resp.call_id == "shed-1@192.0.2.10" and resp.cseq == (1, "INVITE")
    assert invites == [] and guard.asked == 1
    # Nothing was kept: no transaction, no timer (no retransmissions of the 503 either).
    assert core.transactions.stats.server_transactions == 0
    assert core.next_timer() is None


def test_a_retransmitted_refused_invite_gets_the_same_response() -> None:
    guard = FakeGuard(admit=False)
    core, _ = make_core(guard)
    core.receive(request(), CARRIER, 10.0)
    first = core.pop_outgoing()[0].data
    core.receive(request(), CARRIER, 10.5)
    assert core.pop_outgoing()[0].data == first  # same To tag: a stateless UAS is stable
    core.receive(request(branch="z9hG4bK-2"), CARRIER, 11.0)
    assert parse_message(core.pop_outgoing()[0].data).to_tag != parse_message(first).to_tag


def test_the_ack_of_a_refused_invite_is_absorbed_quietly() -> None:
    guard = FakeGuard(admit=False)
    core, _ = make_core(guard)
    core.receive(request(), CARRIER, 10.0)
    tag = sent(core)[0][1].to_tag
    core.receive(request("ACK", to_tag=tag, cseq="1 ACK"), CARRIER, 10.1)
    assert core.pop_outgoing() == []
    assert core.stats.dropped == 0 and guard.asked == 1


def test_admitted_invite_takes_the_normal_path_and_its_retransmission_is_not_reconsidered() -> None:
    guard = FakeGuard(admit=True)
    core, invites = make_core(guard)
    core.receive(request(), CARRIER, 10.0)
    assert len(invites) == 1 and guard.asked == 1
    guard.admit = False  # overload starts while the call is being set up
    core.receive(request(), CARRIER, 10.5)
    assert len(invites) == 1 and guard.asked == 1  # absorbed by its transaction
    assert all(resp.status != 503 for _, resp in sent(core))


def test_in_dialog_and_other_requests_never_ask_the_guard() -> None:
    guard = FakeGuard(admit=False)
    core, _ = make_core(guard)
    core.receive(request(to_tag="known", branch="z9hG4bK-re"), CARRIER, 10.0)  # a re-INVITE
    core.receive(request("BYE", to_tag="known", branch="z9hG4bK-bye", cseq="2 BYE"), CARRIER, 10.0)
    core.receive(request("OPTIONS", branch="z9hG4bK-opt", cseq="3 OPTIONS"), CARRIER, 10.0)
    assert guard.asked == 0
    assert [resp.status for _, resp in sent(core)] == [481, 481, 200]


def test_a_broken_invite_is_answered_by_validation_not_by_the_guard() -> None:
    guard = FakeGuard(admit=False)
    core, _ = make_core(guard)
    core.receive(request().replace(b"CSeq: 1 INVITE\r\n", b"CSeq: one INVITE\r\n"), CARRIER, 10.0)
    [(_, resp)] = sent(core)
    assert resp.status == 400
