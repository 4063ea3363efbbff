"""A call as two (or more) dialogs: the legs, and how in-dialog requests are built for each.

Each leg is a full dialog of its own (RFC 3261 §12): its own Call-ID, tags, CSeq, route set and
remote target. Nothing of one leg is copied into the other except what the B2BUA chooses to
relay (bodies and a few end-to-end headers), which is what hides the topology.
"""

from __future__ import annotations

import functools
import ipaddress
from dataclasses import dataclass, field
from enum import StrEnum

from routing.failover import FailoverState
from routing.limits import LimitScope

from ..sip.events import Address, TransactionKey
from ..sip.headers import NameAddr, contact_view, is_token, name_addr_view
from ..sip.message import Request
from ..sip.randomness import random_hex
from ..sip.transaction import make_branch
from ..sip.uri import PARSE_CACHE_MAX, SipURI, parse_uri, remember
from ..transport.steering import PLACEMENT

# RFC 3261 §8.1.1.6: 70 is the recommended initial Max-Forwards.
DEFAULT_MAX_FORWARDS = 70


class CallState(StrEnum):
    """Where a call is in its life."""

    ROUTING = "routing"  # INVITE received, attempts in progress
    EARLY = "early"  # a provisional with a to-tag has been relayed to the caller
    ANSWERED = "answered"  # 2xx relayed to the caller, waiting for its ACK
    CONFIRMED = "confirmed"  # ACKed both ways: media flows
    ENDING = "ending"  # BYE sent, waiting for the answers
    ENDED = "ended"


# Distinct peer hosts whose "is it an IP literal" answer is remembered: more than the peers of
# any one SBC, small enough (~100 KiB) not to matter.
IP_CACHE_SIZE = 1024

@dataclass
class Leg:
    """One dialog of a call, seen from the SBC's side of it.

    ``local_uri``/``remote_uri`` are the From/To (or To/From) name-addrs without tags as this
    leg knows them; ``peer`` is where requests for this leg are sent (the caller's signalling
    source for the inbound leg — NAT-safe —, the gateway or trunk target for outbound legs).
    """

    call_id: str
    local_tag: str
    local_uri: str
    remote_uri: str
    peer: Address
    remote_tag: str | None = None
    remote_target: str | None = None
    route_set: list[str] = field(default_factory=list)
    local_cseq: int = 0
    remote_cseq: int = 0
    invite: Request | None = None  # the INVITE that created the leg (ours or the caller's)
    invite_key: TransactionKey | None = None

    def __init__(
        self,
        call_id: str,
        local_tag: str,
        local_uri: str,
        remote_uri: str,
        peer: Address,
        remote_tag: str | None = None,
        remote_target: str | None = None,
        route_set: list[str] | None = None,
        local_cseq: int = 0,
        remote_cseq: int = 0,
        invite: Request | None = None,
        invite_key: TransactionKey | None = None,
    ) -> None:
        # Written out, not generated: see sbc/sip/uri.pxd.
        self.call_id = call_id
        self.local_tag = local_tag
        self.local_uri = local_uri
        self.remote_uri = remote_uri
        self.peer = peer
        self.remote_tag = remote_tag
        self.remote_target = remote_target
        self.route_set = [] if route_set is None else route_set
        self.local_cseq = local_cseq
        self.remote_cseq = remote_cseq
        self.invite = invite
        self.invite_key = invite_key

    def next_cseq(self) -> int:
        self.local_cseq += 1
        return self.local_cseq


@dataclass
class PendingReinvite:
    """A re-INVITE relayed from one leg to the other, until its ACK has crossed too."""

    from_leg: Leg
    to_leg: Leg
    server_key: TransactionKey
    client_key: TransactionKey | None = None
    ok_response: object = None  # the far leg's 2xx, ACKed when the originator ACKs
    cseq: int = 0  # CSeq number of the relayed re-INVITE (its ACK reuses it, RFC 3261 §13.2.2.4)
    from_cseq: int = 0  # CSeq number of the originator's re-INVITE (so its ACK is told apart)
    # The originator's re-INVITE: its 2xx and 408 are built from it. The transaction layer drops
    # its own copy once the transaction is answered, and 2xx retransmissions come after that.
    request: object = None
    # The 2xx mirrored to the originator, retransmitted (T1 doubling to T2) until its ACK; at
    # give_up (64*T1) the session is ended (RFC 3261 §13.3.1.4).
    ok_out: object = None
    ok_interval: float = 0.0
    ok_next: float | None = None
    ok_give_up: float | None = None


@dataclass
class Origin:
    """What an originated call (``POST /v1/calls``) bridges to once its callee answers.

    Such a call has no caller's INVITE: the SBC places leg ``b`` (the callee, by LCR or a named
    carrier) with an SDP offer of its own, and when ``b`` answers it places leg ``a`` to
    ``bridge_uri``, offering ``b``'s media through the relay. ``a`` is then a client leg."""

    bridge_uri: str
    bridge_dest: Address
    invite_key: TransactionKey | None = None  # the INVITE to the bridge target while it runs
    bridged: bool = False  # the bridge target answered and was ACKed
    a_ack: object = None  # (ACK, destination) of the bridge target's 2xx, re-sent on retransmission
    # The trunk's further targets (Request-URI, destination) in plan order: the bridge fails over to
    # them on no answer, a transport error or a 5xx, as an inbound call to the trunk would.
    fallbacks: list[tuple[str, Address]] = field(default_factory=list)


@dataclass
class Call:
    """One call through the SBC: the inbound leg ``a`` and the outbound leg ``b`` in progress."""

    id: str
    direction: str  # "inbound" (carrier -> customer) | "outbound" (customer -> carrier)
    a: Leg
    caller: str
    callee: str  # the E.164 number dialled
    setup_at: float
    caller_display: str | None = None
    customer: str | None = None
    carrier: str | None = None
    trunk: str | None = None
    gateway: str | None = None
    b: Leg | None = None
    state: CallState = CallState.ROUTING
    failover: FailoverState | None = None
    targets: list = field(default_factory=list)  # inbound: trunk targets in order
    target_index: int = 0
    scopes: tuple[LimitScope, ...] = ()
    # The outbound carrier the call counts against while it is tried on (or answered by) that
    # carrier; released when the call moves on to another carrier or ends.
    carrier_scope: LimitScope | None = None
    answered_at: float | None = None
    ended_at: float | None = None
    final_code: int | None = None
    hangup_by: str | None = None
    end_reason: str = ""
    media: object = None  # sbc.media.manager.CallMedia when media is anchored
    session_expires_at: float | None = None  # RFC 4028 watchdog
    media_stats: dict = field(default_factory=dict)
    caller_cancelled: bool = False
    attempts: list[tuple[str | None, str | None, int, str]] = field(default_factory=list)
    attempt_deadline: float | None = None
    got_provisional: bool = False
    a_final_sent: bool = False
    a_2xx: object = None  # the 2xx sent to the caller, retransmitted until its ACK (§13.3.1.4)
    a_2xx_interval: float = 0.0
    a_2xx_next: float | None = None
    a_2xx_give_up: float | None = None
    b_2xx: object = None  # the callee's 2xx, ACKed when the caller's ACK arrives
    b_ack: object = None  # (ACK bytes, destination) sent for b_2xx, re-sent on its retransmissions
    max_end_at: float | None = None
    timer_entries: int = 0  # entries of this call in the engine's timer heap
    pending: PendingReinvite | None = None
    # (client key, ACK, destination) of the last re-INVITE whose 2xx we ACKed: re-sent when the
    # far side retransmits that 2xx because the ACK was lost.
    reinvite_ack: object = None
    dead_b_keys: set = field(default_factory=set)
    # 2xx we hang up (abandoned attempts, extra forks): (INVITE key, To tag) -> (dialog, (its ACK
    # as bytes, destination)), the ACK re-sent on the 2xx's retransmissions.
    late_answers: dict = field(default_factory=dict)
    origin: Origin | None = None  # set for calls the API originated
    # RFC 4733 digits the relay saw, in order, for the CDR: {"digit", "from", "duration_ms", "at"}.
    dtmf: list = field(default_factory=list)
    # RFC 3262 towards a caller whose INVITE said "Require: 100rel": every 18x we relay is sent
    # reliably (RSeq), retransmitted until its PRACK; one is outstanding at a time.
    a_100rel: bool = False
    a_rseq: int = 0
    a_rel_pending: object = None  # the reliable provisional awaiting PRACK
    a_rel_queued: object = None  # the latest 18x with SDP that waits for that PRACK
    a_rel_interval: float = 0.0
    a_rel_next: float | None = None
    a_rel_give_up: float | None = None

    def __init__(
        self,
        id,
        direction,
        a,
        caller,
        callee,
        setup_at,
        caller_display=None,
        customer=None,
        carrier=None,
        trunk=None,
        gateway=None,
        b=None,
        state=CallState.ROUTING,
        failover=None,
        targets=None,
        target_index=0,
        scopes=(),
        carrier_scope=None,
        answered_at=None,
        ended_at=None,
        final_code=None,
        hangup_by=None,
        end_reason="",
        media=None,
        session_expires_at=None,
        media_stats=None,
        caller_cancelled=False,
        attempts=None,
        attempt_deadline=None,
        got_provisional=False,
        a_final_sent=False,
        a_2xx=None,
        a_2xx_interval=0.0,
        a_2xx_next=None,
        a_2xx_give_up=None,
        b_2xx=None,
        b_ack=None,
        max_end_at=None,
        timer_entries=0,
        pending=None,
        reinvite_ack=None,
        dead_b_keys=None,
        late_answers=None,
        origin=None,
        dtmf=None,
        a_100rel=False,
        a_rseq=0,
        a_rel_pending=None,
        a_rel_queued=None,
        a_rel_interval=0.0,
        a_rel_next=None,
        a_rel_give_up=None,
    ) -> None:
        # Written out, not generated: see sbc/sip/uri.pxd (six fields have a default factory;
        # writing it out saved ~15,000 instructions a call). Arguments are not annotated: the
        # typed fields check what is stored in them.
        self.id = id
        self.direction = direction
        self.a = a
        self.caller = caller
        self.callee = callee
        self.setup_at = setup_at
        self.caller_display = caller_display
        self.customer = customer
        self.carrier = carrier
        self.trunk = trunk
        self.gateway = gateway
        self.b = b
        self.state = state
        self.failover = failover
        self.targets = [] if targets is None else targets
        self.target_index = target_index
        self.scopes = scopes
        self.carrier_scope = carrier_scope
        self.answered_at = answered_at
        self.ended_at = ended_at
        self.final_code = final_code
        self.hangup_by = hangup_by
        self.end_reason = end_reason
        self.media = media
        self.session_expires_at = session_expires_at
        self.media_stats = {} if media_stats is None else media_stats
        self.caller_cancelled = caller_cancelled
        self.attempts = [] if attempts is None else attempts
        self.attempt_deadline = attempt_deadline
        self.got_provisional = got_provisional
        self.a_final_sent = a_final_sent
        self.a_2xx = a_2xx
        self.a_2xx_interval = a_2xx_interval
        self.a_2xx_next = a_2xx_next
        self.a_2xx_give_up = a_2xx_give_up
        self.b_2xx = b_2xx
        self.b_ack = b_ack
        self.max_end_at = max_end_at
        self.timer_entries = timer_entries
        self.pending = pending
        self.reinvite_ack = reinvite_ack
        self.dead_b_keys = set() if dead_b_keys is None else dead_b_keys
        self.late_answers = {} if late_answers is None else late_answers
        self.origin = origin
        self.dtmf = [] if dtmf is None else dtmf
        self.a_100rel = a_100rel
        self.a_rseq = a_rseq
        self.a_rel_pending = a_rel_pending
        self.a_rel_queued = a_rel_queued
        self.a_rel_interval = a_rel_interval
        self.a_rel_next = a_rel_next
        self.a_rel_give_up = a_rel_give_up

    def other(self, leg: Leg) -> Leg | None:
        """The leg opposite ``leg``."""
        return self.b if leg is self.a else self.a


def new_call_id(host: str) -> str:
    """A fresh Call-ID that reveals nothing about the other leg (RFC 3261 §8.1.1.4), and that
    steers to this worker (``sbc run --workers N``), so the leg's answers come back here."""
    # A partial, not a lambda: a closure would keep new_call_id from being cpdef (call.pxd).
    return PLACEMENT.make(functools.partial(_call_id_text, host))


def _call_id_text(host: str) -> str:
    return f"{random_hex(12)}@{host}"


def new_call_ref() -> str:
    """The SBC's own id of a new call (the API's call id), steering to this worker like its
    Call-IDs, so that any worker can tell which one holds the call."""
    return PLACEMENT.make(_call_ref_text)


def _call_ref_text() -> str:
    return random_hex(8)


# strip_tag's results by the value without its tag: a caller's From differs from call to call only
# in the tag, so the parse and the serialisation are done once per caller (bounded like the parse
# memos: emptied when full).
_untagged: dict[str, str] = {}


def _without_tag_text(value: str) -> str | None:
    """``value`` with a ``;tag=token`` written after the closing '>' cut out, textually; None when
    the value is not of that plain shape (the caller parses it instead).

    A key never holds "tag" after its '>' in any case or spacing, so two values share a key only
    when they differ by one well-formed tag parameter: both parse, or neither does."""
    gt = value.rfind(">")
    if gt < 0 or '"' in value[gt:]:
        return None
    start = value.find(";tag=", gt)
    if start < 0:
        key = value
    else:
        end = value.find(";", start + 5)
        tag = value[start + 5 : end if end >= 0 else len(value)]
        if not is_token(tag):
            return None
        key = value[:start] + value[end:] if end >= 0 else value[:start]
    if "tag" in key[gt:].lower():
        return None
    return key


def strip_tag(name_addr: str) -> str:
    """The From/To value without its tag parameter (kept as angle-bracket name-addr)."""
    cache: dict = _untagged
    key: str = _without_tag_text(name_addr)
    if key is not None:
        cached = cache.get(key)
        if cached is not None:
            return cached
    na = name_addr_view(name_addr)
    if "tag" in na.params:
        na = NameAddr(na.display_name, na.uri, {k: v for k, v in na.params.items() if k != "tag"})
    text = str(na)
    if key is not None:
        remember(cache, key, text)
    return text


@functools.lru_cache(maxsize=PARSE_CACHE_MAX)
def _first_contact_uri(value: str) -> str | None:
    contacts = contact_view(value)
    if contacts == "*" or not contacts:
        return None
    return str(contacts[0].uri)


def contact_uri(value: str | None) -> str | None:
    """The URI of the first Contact value, or None (remembered per value: a peer sends the same
    Contact in every call)."""
    if not value:
        return None
    return _first_contact_uri(value)


def target_address(uri_text: str, default_transport: str, fallback: Address) -> Address:
    """Where to send requests for a SIP URI: its host/port when the host is an IP literal,
    else ``fallback`` (the SBC does not follow DNS names of peers it already has an address for)."""
    try:
        uri = parse_uri(uri_text)
    except Exception:
        return fallback
    if not isinstance(uri, SipURI):
        return fallback
    host: str = uri.host.strip("[]")
    if not is_ip_literal(host):
        return fallback
    transport: str = (uri.transport or default_transport).lower()
    port = uri.port or (5061 if transport == "tls" else 5060)
    if transport == fallback.transport and host == fallback.host and port == fallback.port:
        return fallback
    return Address(transport, host, port, None)


def parse_target(uri_text: str, default_transport: str = "udp") -> tuple[str, int | None, str] | None:
    """(host, port or None, transport) of a SIP URI, or None when it is not one."""
    try:
        uri = parse_uri(uri_text)
    except Exception:
        return None
    if not isinstance(uri, SipURI):
        return None
    transport = (uri.transport or ("tls" if uri.scheme == "sips" else default_transport)).lower()
    return uri.host.strip("[]"), uri.port, transport


@functools.lru_cache(maxsize=IP_CACHE_SIZE)
def is_ip_literal(host: str) -> bool:
    """Whether ``host`` is an IP literal (cached: peers repeat, and ipaddress is slow)."""
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def build_in_dialog(
    leg: Leg,
    method: str,
    via_host: str,
    via_port,
    contact: str,
    user_agent: str,
    body: bytes = b"",
    content_type: str | None = None,
    extra: list | None = None,
    cseq=None,
) -> Request:
    """A request inside ``leg``'s dialog from the SBC (RFC 3261 §12.2.1.1).

    Uses a new CSeq unless ``cseq`` is given (ACK and CANCEL reuse the INVITE's), the remote
    target as Request-URI and the route set as Route. The top Via gets a fresh branch.

    cpdef (call.pxd), so the engine calls it directly in C: hence no keyword-only arguments,
    which cpdef cannot have. A compiled caller passes every optional argument before the last
    one it gives: skipping one makes Cython fall back to a Python call.
    """
    uri: str = leg.remote_target or leg.remote_uri
    if uri.startswith("<") or '"' in uri:
        uri = str(name_addr_view(uri).uri)
    transport: str = leg.peer.transport.upper()
    remote = leg.remote_uri + (f";tag={leg.remote_tag}" if leg.remote_tag else "")
    headers = [
        ("Via", f"SIP/2.0/{transport} {via_host}:{via_port};branch={make_branch()};rport"),
        ("Max-Forwards", str(DEFAULT_MAX_FORWARDS)),
        ("From", f"{leg.local_uri};tag={leg.local_tag}"),
        ("To", remote),
        ("Call-ID", leg.call_id),
        ("CSeq", f"{cseq if cseq is not None else leg.next_cseq()} {method}"),
    ]
    for route in leg.route_set:
        headers.append(("Route", route))
    if method not in ("BYE", "CANCEL", "ACK"):
        headers.append(("Contact", contact))
    headers.append(("User-Agent", user_agent))
    if extra:
        headers.extend(extra)
    if body:
        headers.append(("Content-Type", content_type or "application/sdp"))
    return Request(method, uri, headers, body)


def display_and_user(value: str) -> tuple[str | None, str]:
    """The display name and user part of a From/To value (user '' when there is none)."""
    na: NameAddr = name_addr_view(value)
    user = getattr(na.uri, "user", None) or getattr(na.uri, "number", None) or ""
    return na.display_name, user
