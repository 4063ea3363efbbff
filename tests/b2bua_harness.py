"""Sans-I/O harness for B2BUA tests: the SBC (SipCore + B2BUA) on a fake clock, and fake peers.

``Net`` owns the SBC and the clock and routes whatever the SBC sends into the inbox of the peer
it is addressed to. A ``Peer`` builds requests and responses the way a real UA would and keeps
dialog state (``UacCall`` for calls it places, ``UasCall`` for calls it receives), so a test
reads as a call flow::

    call = carrier.invite("+14155550100")
    carrier.take(100)
    inv = pbx.take_invite()
    inv.respond(200, sdp=PBX_SDP)
    ok = carrier.take(200)
    call.ack(ok)

Addresses: the SBC is 127.0.0.1:5060, the carrier 127.0.0.2:5060, the PBX 127.0.0.3:5070,
outbound gateways 127.0.0.4 and 127.0.0.5 (port 5060).
"""

from __future__ import annotations

import os
import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from routing.model import (
    Carrier,
    Customer,
    Gateway,
    Number,
    Route,
    RouteCarrier,
    Snapshot,
    Trunk,
    TrunkTarget,
)
from sbc.b2bua.engine import B2BUA, B2BUAConfig
from sbc.core import SipCore
from sbc.sip.events import Address
from sbc.sip.message import Request, Response, parse_message
from sbc.sip.timers import TimerConfig
from sbc.store.cdr import CdrRecord

SBC = Address("udp", "127.0.0.1", 5060)
CARRIER = Address("udp", "127.0.0.2", 5060)
PBX = Address("udp", "127.0.0.3", 5070)
GW_A = Address("udp", "127.0.0.4", 5060)
GW_B = Address("udp", "127.0.0.5", 5060)
GW_A2 = Address("udp", "127.0.0.6", 5060)

DID = "+14155550100"  # assigned to acme/pbx
DID_INVENTORY = "+14155550101"  # not assigned to anyone
DID_NO_TRUNK = "+14155550102"  # assigned to acme, no destination
CALLER = "+14155550123"
DIALLED = "+12125551234"

T1 = 0.5
START = 1000.0


def sdp(host: str, port: int, direction: str = "sendrecv") -> bytes:
    """A minimal audio offer/answer whose media address is ``host`` (not a signalling address)."""
    return (
        "v=0\r\n"
        f"o=- 1 1 IN IP4 {host}\r\n"
        "s=-\r\n"
        f"c=IN IP4 {host}\r\n"
        "t=0 0\r\n"
        f"m=audio {port} RTP/AVP 0\r\n"
        "a=rtpmap:0 PCMU/8000\r\n"
        f"a={direction}\r\n"
    ).encode()


# Media addresses are documentation prefixes, distinct from every signalling address, so a
# topology check can look for the signalling addresses in whole messages (SDP is relayed as is).
CARRIER_SDP = sdp("192.0.2.10", 20000)
PBX_SDP = sdp("198.51.100.20", 30000)
GW_SDP = sdp("203.0.113.30", 40000)


def snapshot(
    *,
    trunk_max_calls: int | None = None,
    carrier_in_max_cps: float | None = None,
    carrier_a: dict | None = None,
    carrier_b: dict | None = None,
    targets: tuple[TrunkTarget, ...] = (TrunkTarget("sip:127.0.0.3:5070"),),
) -> Snapshot:
    """The provisioning every test starts from (keyword arguments override pieces of it)."""
    carrier_in = Carrier("telco", inbound_cidrs=("127.0.0.2/32",), max_cps=carrier_in_max_cps)
    a = {"gateways": (Gateway("127.0.0.4", 5060),), "strip_plus": True, "tech_prefix": "77#"}
    a.update(carrier_a or {})
    b = {"gateways": (Gateway("127.0.0.5", 5060),)}
    b.update(carrier_b or {})
    trunk = Trunk(
        "pbx",
        "acme",
        allowed_cidrs=("127.0.0.3/32",),
        targets=targets,
        max_calls=trunk_max_calls,
    )
    return Snapshot(
        carriers=(carrier_in, Carrier("A", **a), Carrier("B", **b)),
        customers=(Customer("acme", trunks=(trunk,)),),
        numbers=(
            Number(DID, customer="acme", trunk="pbx"),
            Number(DID_INVENTORY),
            Number(DID_NO_TRUNK, customer="acme"),
        ),
        routes=(Route("1", carriers=(RouteCarrier("A", priority=10), RouteCarrier("B", priority=20))),),
    )


def new_branch() -> str:
    return "z9hG4bK" + os.urandom(6).hex()


def new_tag() -> str:
    return os.urandom(4).hex()


Message = Request | Response
Matcher = int | str | Callable[[Message], bool] | None


def _matches(msg: Message, what: Matcher) -> bool:
    if what is None:
        return True
    if isinstance(what, int):
        return isinstance(msg, Response) and msg.status == what
    if isinstance(what, str):
        return isinstance(msg, Request) and msg.method == what
    return what(msg)


@dataclass
class Sent:
    """One message the SBC sent: where to, the bytes on the wire and the parsed message."""

    dest: Address
    data: bytes
    msg: Message
    at: float


class Net:
    """The SBC under test on a fake clock, and the mailboxes of the peers around it."""

    def __init__(self, snap: Snapshot | None = None, config: B2BUAConfig | None = None, **b2bua_kw) -> None:
        self.now = START
        self.core = SipCore(local_hosts={SBC.host}, timers=TimerConfig(t1=T1))
        self.cdrs: list[CdrRecord] = []
        self.b2bua = B2BUA(
            self.core,
            local_address=lambda transport: (SBC.host, SBC.port),
            cdr_sink=self.cdrs.append,
            config=config or B2BUAConfig(),
            rng=random.Random(1),
            **b2bua_kw,
        )
        self.b2bua.load(snap or snapshot(), self.now)
        self.log: list[Sent] = []
        self.inboxes: dict[tuple[str, int], list[Message]] = {}
        self.run_until(self.now)  # what falls due at load (gateway probes) goes out

    def peer(self, addr: Address, user: str) -> Peer:
        return Peer(self, addr, user)

    def receive(self, data: bytes, source: Address) -> None:
        """Deliver ``data`` to the SBC from ``source`` at the current time."""
        self.core.receive(data, source, self.now)
        self.flush()

    def flush(self) -> None:
        for out in self.core.pop_outgoing():
            msg = parse_message(out.data)
            self.log.append(Sent(out.dest, out.data, msg, self.now))
            self.inboxes.setdefault((out.dest.host, out.dest.port), []).append(msg)

    def advance(self, seconds: float) -> None:
        """Move the clock forward, running every SBC timer that falls due on the way."""
        self.run_until(self.now + seconds)

    def run_until(self, when: float) -> None:
        while True:
            t = self.core.next_timer()
            if t is None or t > when:
                break
            self.now = max(self.now, t)
            self.core.handle_timer(self.now)
            self.flush()
        self.now = max(self.now, when)

    def sent_to(self, addr: Address) -> list[Sent]:
        """Everything the SBC has sent to ``addr`` so far."""
        return [s for s in self.log if (s.dest.host, s.dest.port) == (addr.host, addr.port)]

    def cdr(self) -> CdrRecord:
        assert len(self.cdrs) == 1, self.cdrs
        return self.cdrs[0]


class Peer:
    """A SIP UA at ``addr``: reads what the SBC sent it, sends requests and responses."""

    def __init__(self, net: Net, addr: Address, user: str) -> None:
        self.net = net
        self.addr = addr
        self.user = user

    @property
    def inbox(self) -> list[Message]:
        return self.net.inboxes.setdefault((self.addr.host, self.addr.port), [])

    # -- reading -----------------------------------------------------------------------------

    def take(self, what: Matcher = None) -> Message:
        """Remove and return the first message in the inbox matching ``what`` (a status code, a
        method or a predicate); fail when there is none."""
        for i, msg in enumerate(self.inbox):
            if _matches(msg, what):
                return self.inbox.pop(i)
        raise AssertionError(f"{self.user}: no {what!r} in inbox {[_short(m) for m in self.inbox]}")

    def take_all(self, what: Matcher = None) -> list[Message]:
        found = [m for m in self.inbox if _matches(m, what)]
        self.inbox[:] = [m for m in self.inbox if not _matches(m, what)]
        return found

    def has(self, what: Matcher = None) -> bool:
        return any(_matches(m, what) for m in self.inbox)

    def quiet(self) -> None:
        """Assert that nothing is waiting in the inbox."""
        assert not self.inbox, f"{self.user}: unexpected {[_short(m) for m in self.inbox]}"

    def clear(self) -> None:
        self.inbox.clear()

    def take_invite(self) -> UasCall:
        """Take the INVITE the SBC sent here and return the dialog this peer answers it in."""
        inv = self.take("INVITE")
        assert isinstance(inv, Request)
        return UasCall(self, inv)

    # -- sending -----------------------------------------------------------------------------

    def send(self, msg: Message | bytes) -> None:
        data = msg if isinstance(msg, bytes) else msg.to_bytes()
        self.net.receive(data, self.addr)

    def via(self, branch: str | None = None) -> str:
        return f"SIP/2.0/UDP {self.addr.host}:{self.addr.port};branch={branch or new_branch()};rport"

    def contact(self) -> str:
        return f"<sip:{self.user}@{self.addr.host}:{self.addr.port}>"

    def invite(
        self,
        dialled: str,
        *,
        caller: str = CALLER,
        display: str | None = "Alice",
        body: bytes = CARRIER_SDP,
        headers: Iterable[tuple[str, str]] = (),
        ruri_host: str = SBC.host,
    ) -> UacCall:
        """Place a call to ``dialled`` through the SBC; return the (UAC) dialog."""
        from_na = f"<sip:{caller}@{self.addr.host}>"
        if display:
            from_na = f'"{display}" {from_na}'
        call = UacCall(
            peer=self,
            call_id=f"{os.urandom(6).hex()}@{self.addr.host}",
            local_uri=from_na,
            local_tag=new_tag(),
            remote_uri=f"<sip:{dialled}@{ruri_host}>",
            remote_target=f"sip:{dialled}@{ruri_host}:{SBC.port}",
            cseq=1,
        )
        call.invite_branch = new_branch()
        req = Request(
            "INVITE",
            call.remote_target,
            [
                ("Via", self.via(call.invite_branch)),
                ("Max-Forwards", "70"),
                ("From", f"{call.local_uri};tag={call.local_tag}"),
                ("To", call.remote_uri),
                ("Call-ID", call.call_id),
                ("CSeq", "1 INVITE"),
                ("Contact", self.contact()),
                *headers,
            ],
            body,
        )
        if body and req.get("Content-Type") is None:  # a test may give its own (multipart)
            req.add("Content-Type", "application/sdp")
        call.invite_req = req
        self.send(req)
        return call


def reply(
    req: Request,
    status: int,
    *,
    to_tag: str | None = None,
    body: bytes = b"",
    headers: Iterable[tuple[str, str]] = (),
    reason: str | None = None,
) -> Response:
    """The response a UA sends to ``req`` (RFC 3261 §8.2.6)."""
    hdrs: list[tuple[str, str]] = []
    for n, v in req.headers:
        if n in ("Via", "From", "Call-ID", "CSeq"):
            hdrs.append((n, v))
        elif n == "To":
            if to_tag and ";tag=" not in v and status != 100:
                v = f"{v};tag={to_tag}"
            hdrs.append((n, v))
        elif n == "Record-Route":
            hdrs.append((n, v))
    hdrs.extend(headers)
    if body:
        hdrs.append(("Content-Type", "application/sdp"))
    return Response(status, reason, hdrs, body)


@dataclass
class Dialog:
    """One dialog as a peer sees it."""

    peer: Peer
    call_id: str
    local_uri: str
    local_tag: str
    remote_uri: str
    remote_target: str
    cseq: int
    remote_tag: str | None = None
    route_set: list[str] = field(default_factory=list)

    def request(
        self,
        method: str,
        *,
        body: bytes = b"",
        headers: Iterable[tuple[str, str]] = (),
        cseq: int | None = None,
        branch: str | None = None,
        send: bool = True,
    ) -> Request:
        """Build (and by default send) an in-dialog request."""
        if cseq is None:
            if method != "ACK":
                self.cseq += 1
            cseq = self.cseq
        hdrs = [
            ("Via", self.peer.via(branch)),
            ("Max-Forwards", "70"),
            ("From", f"{self.local_uri};tag={self.local_tag}"),
            ("To", self.remote_uri + (f";tag={self.remote_tag}" if self.remote_tag else "")),
            ("Call-ID", self.call_id),
            ("CSeq", f"{cseq} {method}"),
        ]
        hdrs.extend(("Route", r) for r in self.route_set)
        if method in ("INVITE", "UPDATE"):
            hdrs.append(("Contact", self.peer.contact()))
        hdrs.extend(headers)
        if body:
            hdrs.append(("Content-Type", "application/sdp"))
        req = Request(method, self.remote_target, hdrs, body)
        if send:
            self.peer.send(req)
        return req

    def respond(self, req: Request, status: int, **kw) -> Response:
        """Answer an in-dialog request this peer received."""
        resp = reply(req, status, **kw)
        self.peer.send(resp)
        return resp

    def take_in_dialog(self, method: str) -> Request:
        """Take the next ``method`` request of this dialog from the inbox."""
        msg = self.peer.take(
            lambda m: isinstance(m, Request) and m.method == method and m.call_id == self.call_id
        )
        assert isinstance(msg, Request)
        return msg

    def take_ack(self) -> Request:
        return self.take_in_dialog("ACK")


@dataclass
class UacCall(Dialog):
    """A call the peer placed: it sent the INVITE."""

    invite_branch: str = ""
    invite_req: Request | None = None

    def final_ok(self, msg: Message) -> bool:
        """Matches a 2xx to this call's INVITE."""
        return (
            isinstance(msg, Response)
            and 200 <= msg.status < 300
            and msg.call_id == self.call_id
            and msg.cseq[1] == "INVITE"
        )

    def learn(self, resp: Response) -> None:
        """Take the dialog state from a response to the INVITE (To tag, Contact, Record-Route)."""
        if resp.to_tag:
            self.remote_tag = resp.to_tag
        contact = resp.get("Contact")
        if contact:
            self.remote_target = contact.strip().strip("<>").split(">")[0]
        self.route_set = list(reversed(resp.values("Record-Route")))

    def ack(self, resp: Response, body: bytes = b"") -> Request:
        """ACK a final response to the INVITE (2xx: a new transaction to the Contact;
        non-2xx: hop-by-hop, the INVITE's branch)."""
        if 200 <= resp.status < 300:
            self.learn(resp)
            return self.request("ACK", cseq=self.invite_req.cseq[0], body=body)
        assert self.invite_req is not None
        ack = Request(
            "ACK",
            self.invite_req.uri,
            [
                ("Via", self.invite_req.top_via),
                ("Max-Forwards", "70"),
                ("From", self.invite_req.get("From")),
                ("To", resp.get("To")),
                ("Call-ID", self.call_id),
                ("CSeq", f"{self.invite_req.cseq[0]} ACK"),
            ],
        )
        self.peer.send(ack)
        return ack

    def cancel(self) -> Request:
        """CANCEL the INVITE (RFC 3261 §9.1: same branch, same CSeq number)."""
        assert self.invite_req is not None
        inv = self.invite_req
        cancel = Request(
            "CANCEL",
            inv.uri,
            [
                ("Via", inv.top_via),
                ("Max-Forwards", "70"),
                ("From", inv.get("From")),
                ("To", inv.get("To")),
                ("Call-ID", inv.call_id),
                ("CSeq", f"{inv.cseq[0]} CANCEL"),
            ],
        )
        self.peer.send(cancel)
        return cancel


class UasCall(Dialog):
    """A call the peer received from the SBC: it answers the INVITE."""

    def __init__(self, peer: Peer, invite: Request) -> None:
        contact = invite.get("Contact") or ""
        super().__init__(
            peer=peer,
            call_id=invite.call_id,
            local_uri=_strip_tag(invite.get("To") or ""),
            local_tag=new_tag(),
            remote_uri=_strip_tag(invite.get("From") or ""),
            remote_target=contact.strip().strip("<>").split(">")[0],
            cseq=100,
            remote_tag=invite.from_tag,
            route_set=list(invite.values("Record-Route")),
        )
        self.invite = invite

    def respond_invite(self, status: int, *, body: bytes = b"", headers=(), reason=None) -> Response:
        """Answer the INVITE (provisionals other than 100 and finals carry this dialog's tag)."""
        hdrs = list(headers)
        if status != 100 and status < 300:
            hdrs.append(("Contact", self.peer.contact()))
        resp = reply(self.invite, status, to_tag=self.local_tag, body=body, headers=hdrs, reason=reason)
        self.peer.send(resp)
        return resp

    def ringing(self) -> Response:
        return self.respond_invite(180)

    def answer(self, body: bytes = PBX_SDP) -> Response:
        return self.respond_invite(200, body=body)


def _strip_tag(value: str) -> str:
    i = value.find(";tag=")
    if i < 0:
        return value
    j = value.find(";", i + 1)
    return value[:i] + (value[j:] if j >= 0 else "")


def _short(m: Message) -> str:
    if isinstance(m, Request):
        return f"{m.method} {m.uri} ({m.cseq[0]})"
    return f"{m.status} {m.cseq[1]}"


@dataclass
class Established:
    """An answered, ACKed call: the caller's and the callee's view of it."""

    caller: Peer
    callee: Peer
    a: UacCall  # the caller's dialog (it sent the INVITE to the SBC)
    b: UasCall  # the callee's dialog (it got the INVITE from the SBC)
    answer: Response  # the callee's 200 to the INVITE (to retransmit it)


def establish_inbound(net: Net, dialled: str = DID) -> Established:
    """Carrier -> SBC -> PBX call, answered and ACKed; every inbox left empty."""
    carrier = net.peer(CARRIER, "carrier")
    pbx = net.peer(PBX, "pbx")
    call = carrier.invite(dialled)
    carrier.take(100)
    uas = pbx.take_invite()
    uas.ringing()
    carrier.take(180)
    answer = uas.answer()
    ok = carrier.take(call.final_ok)
    call.ack(ok)
    uas.take_ack()
    carrier.quiet()
    pbx.quiet()
    return Established(carrier, pbx, call, uas, answer)


def establish_outbound(net: Net, gateway: Address = GW_A, dialled: str = DIALLED) -> Established:
    """PBX -> SBC -> carrier gateway call, answered and ACKed; every inbox left empty."""
    pbx = net.peer(PBX, "pbx")
    gw = net.peer(gateway, "gw")
    call = pbx.invite(dialled, body=PBX_SDP)
    pbx.take(100)
    uas = gw.take_invite()
    answer = uas.answer(GW_SDP)
    ok = pbx.take(call.final_ok)
    call.ack(ok)
    uas.take_ack()
    pbx.quiet()
    gw.quiet()
    return Established(pbx, gw, call, uas, answer)
