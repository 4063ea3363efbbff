"""The SIP core of a running SBC, sans-I/O: bytes from a transport in, bytes to send out.

It frames and parses each message, refuses bad requests with the RFC response, runs the
transaction layer, answers what the SBC itself answers (OPTIONS, REGISTER challenges, CANCEL
and stray in-dialog requests), and hands new INVITEs to the call handler (the B2BUA).
The asyncio driver in :mod:`sbc.app` feeds it and sends what it returns; tests drive it with
a fake clock.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from . import metrics
from .metrics import HotChild
from .sip.checks import UasPolicy, check_request, response_destination, stamp_via
from .sip.errors import SIPParseError
from .sip.events import (
    AckReceived,
    Address,
    Outgoing,
    RequestReceived,
    ResponseReceived,
    StrayResponse,
)
from .sip.message import Request, Response, make_response, parse_message
from .sip.randomness import random_hex
from .sip.timers import TimerConfig
from .sip.transaction import TransactionLayer

log = logging.getLogger(__name__)

# Headers a stateless error response copies from a request that failed validation.
_ECHO_HEADERS = ("Via", "From", "To", "Call-ID", "CSeq")
# What matching a response to its transaction reads besides CSeq and Via (checked on arrival).
_RESPONSE_MATCH_HEADERS = ("From", "To", "Call-ID")
# RFC 3261 §8.1.1.7: branches we generate start with the magic cookie.
MAGIC_COOKIE = "z9hG4bK"


def new_tag() -> str:
    """A random tag (RFC 3261 §19.3: at least 32 bits of randomness)."""
    return random_hex(6)


@dataclass(slots=True)
class CoreStats:
    """Counters the core keeps for tests and logs (metrics mirror them)."""

    received: int = 0
    dropped: int = 0
    dropped_by: dict[str, int] = field(default_factory=dict)
    rejected: dict[int, int] = field(default_factory=dict)


InviteHandler = Callable[["SipCore", Request, object, float], None]

# Per-process key of the To tags of stateless overload refusals (see SipCore._shed).
_SHED_TAG_KEY = os.urandom(16)


class AdmissionControl(Protocol):
    """What the core asks before a new call starts (:class:`sbc.overload.OverloadGuard`)."""

    def admit_new_call(self, now: float) -> bool: ...

    @property
    def retry_after_s(self) -> int: ...


class SipCore:
    """Message handling for one SBC process.

    ``local_hosts`` are the names/addresses that mean "this SBC" in a Request-URI (OPTIONS to
    one of them is answered here rather than routed). ``on_invite`` receives new INVITEs
    (``core, request, server transaction key, now``); without one they get 404 ... the
    B2BUA installs itself there. ``admission`` (the overload guard), when given, is asked
    before any work is spent on a new INVITE; a refused one gets a stateless 503.
    Outbound bytes accumulate until :meth:`pop_outgoing`.
    """

    def __init__(
        self,
        *,
        local_hosts: set[str],
        timers: TimerConfig | None = None,
        policy: UasPolicy | None = None,
        user_agent: str = "sbc",
        on_invite: InviteHandler | None = None,
        realm: str = "sbc",
        force_rport: bool = True,
        admission: AdmissionControl | None = None,
    ) -> None:
        self.local_hosts = {h.lower() for h in local_hosts}
        self.transactions = TransactionLayer(timers or TimerConfig())
        self.policy = policy or UasPolicy()
        self.user_agent = user_agent
        self.on_invite = on_invite
        self.realm = realm
        self.force_rport = force_rport
        self.admission = admission
        self.stats = CoreStats()
        self._stateless: list[Outgoing] = []
        self.on_response: Callable[[object, float], None] | None = None
        self.on_event: Callable[[object, float], None] | None = None
        # In-dialog requests go here first; it returns False for dialogs it does not know.
        self.dialog_handler: Callable[[Request, object, float], bool] | None = None
        # Other sans-I/O owners of timers (the B2BUA): next_timer()/handle_timer(now).
        self.timer_owners: list = []
        # With several workers (sbc.workers): ``divert(call_id, data, source)`` hands a message
        # whose Call-ID another worker owns to that worker and returns True; this core then
        # forgets it. The kernel steers nearly every datagram right; this catches the rest
        # (TCP connections carry many calls, a Call-ID the steering program could not find).
        self.divert: Callable[[str, bytes, Address], bool] | None = None

    # -- input --------------------------------------------------------------------------------

    def receive(self, data: bytes, source: Address, now: float) -> None:
        """Handle one datagram or framed stream message from ``source``. Never raises."""
        self.stats.received += 1
        try:
            msg = parse_message(data, stream=source.reliable)
        except SIPParseError as e:
            self._refuse_unparsed(data, source, e)
            return
        if self.divert is not None and self._diverted(msg, data, source):
            return
        if isinstance(msg, Response):
            self._receive_response(msg, source, now)
            return
        # Typed (HotChild, cimported in core.pxd) so that compiled, inc() is a direct C call.
        child: HotChild = metrics.MESSAGES_RECEIVED[source.transport, "request"]
        child.inc()
        if self.admission is not None and msg.method == "INVITE" and self._shed(msg, source, now):
            return
        try:
            msg.validate()
            stamp_via(msg, source.host, source.port, force_rport=self.force_rport and not source.reliable)
        except SIPParseError as e:
            self._reject_stateless(msg, source, e.status, e.reason)
            return
        for event in self.transactions.receive(msg, source, now):
            self._dispatch(event, now)

    def _diverted(self, msg: Request | Response, data: bytes, source: Address) -> bool:
        """Whether another worker owns the message's call and took it. A message without a
        Call-ID stays here and gets this core's answer (400, or dropped)."""
        assert self.divert is not None
        try:
            call_id = msg.call_id
        except SIPParseError:
            return False
        return self.divert(call_id, data, source)

    def _receive_response(self, msg: Response, source: Address, now: float) -> None:
        child: HotChild = metrics.MESSAGES_RECEIVED[source.transport, "response"]
        child.inc()
        try:
            if msg.status > 699:
                raise SIPParseError(f"status code {msg.status} out of range")
            # Only what matching needs is checked here (the B2BUA parses what it uses, and a
            # header that fails then drops that response alone): full validation of every
            # response cost ~5% of the CPU at load.
            missing = msg.missing(_RESPONSE_MATCH_HEADERS)
            if missing:
                raise SIPParseError(f"missing {missing[0]}")
            msg.cseq  # noqa: B018 - parses, raising on a bad CSeq
            sent_by = msg.vias()[0].host.strip("[]").lower()
        except SIPParseError as e:
            self._drop(source, "bad-response", e.reason)
            return
        if sent_by not in self.local_hosts:
            # RFC 3261 §18.1.2: a response whose top Via is not one we inserted is discarded
            # (this is also what keeps RFC 4475 §3.3.10's broadcast Via from going anywhere).
            self._drop(source, "not-our-via", sent_by)
            return
        child = metrics.RESPONSES_RECEIVED[msg.status]
        child.inc()
        for event in self.transactions.receive(msg, source, now):
            self._dispatch(event, now)

    def _dispatch(self, event: object, now: float) -> None:
        if isinstance(event, RequestReceived):
            try:
                self._handle_request(event.request, event.key, now)
            except SIPParseError as e:
                self.respond(event.key, make_response(event.request, e.status, to_tag=new_tag()), now)
            except Exception:
                log.exception("error handling %r", event.request)
                self.respond(event.key, make_response(event.request, 500, to_tag=new_tag()), now)
        elif isinstance(event, (ResponseReceived, StrayResponse)) and self.on_response is not None:
            self.on_response(event, now)
        elif isinstance(event, AckReceived) and self.on_event is not None or self.on_event is not None:
            self.on_event(event, now)

    def _handle_request(self, req: Request, key: object, now: float) -> None:
        to_tag = new_tag()
        forwarding = req.method == "INVITE" or (req.method == "OPTIONS" and not self._for_us(req))
        refusal = check_request(req, self.policy, to_tag=to_tag, forwarding=forwarding)
        if refusal is not None:
            self.stats.rejected[refusal.status] = self.stats.rejected.get(refusal.status, 0) + 1
            metrics.SIP_REQUESTS_REJECTED.labels(str(refusal.status)).inc()
            self.respond(key, refusal, now)
            return
        method: str = req.method
        # A CANCEL is hop-by-hop (RFC 3261 §9.2): it belongs to the INVITE transaction it names, even
        # when that INVITE was a re-INVITE and the CANCEL carries the dialog's tags.
        if (
            req.to_tag is not None
            and method != "CANCEL"
            and self.dialog_handler is not None
            and self.dialog_handler(req, key, now)
        ):
            return
        if method == "OPTIONS":
            if self._for_us(req) or self.on_invite is None:
                self.respond(key, self._options_ok(req, to_tag), now)
            else:
                self.respond(key, make_response(req, 404, to_tag=to_tag), now)
        elif method == "INVITE":
            if req.to_tag is not None:
                # A re-INVITE for a dialog we do not have (the B2BUA handles its own first).
                self.respond(key, make_response(req, 481, to_tag=None), now)
            elif self.on_invite is not None:
                self.on_invite(self, req, key, now)
            else:
                self.respond(key, make_response(req, 404, to_tag=to_tag), now)
        elif method == "CANCEL":
            self._handle_cancel(req, key, now)
        elif method == "REGISTER":
            self.respond(key, self._register_answer(req, to_tag), now)
        else:
            # BYE, INFO, UPDATE, PRACK, NOTIFY outside any dialog we know: RFC 3261 §12.2.2.
            self.respond(key, make_response(req, 481, to_tag=to_tag), now)

    def _handle_cancel(self, req: Request, key: object, now: float) -> None:
        invite_key = self.transactions.find_invite_for_cancel(req)
        if invite_key is None:
            self.respond(key, make_response(req, 481, to_tag=new_tag()), now)
            return
        self.respond(key, make_response(req, 200, to_tag=req.to_tag or new_tag()), now)
        if self.on_event is not None:
            self.on_event(("cancel", invite_key, req), now)

    def _for_us(self, req: Request) -> bool:
        uri = req.ruri
        user = getattr(uri, "user", None)
        host = getattr(uri, "host", "").strip("[]").lower()
        return user is None or host in self.local_hosts

    def _options_ok(self, req: Request, to_tag: str) -> Response:
        return make_response(
            req,
            200,
            to_tag=to_tag,
            headers=[
                ("Allow", self.policy.allow_header),
                ("Accept", self.policy.accept_header),
                ("Accept-Encoding", ", ".join(self.policy.accepted_encodings)),
                ("Supported", ", ".join(sorted(self.policy.supported))),
                ("Server", self.user_agent),
            ],
        )

    def _register_answer(self, req: Request, to_tag: str) -> Response:
        """This SBC has no registrar users yet: challenge, and refuse any credentials offered.

        A REGISTER without digest credentials (or with an unknown scheme, RFC 4475 §3.3.7) gets
        401 with a fresh nonce; one carrying digest credentials gets 403, since no user can match.
        """
        auth = req.get("Authorization")
        if auth is not None and auth.lstrip().lower().startswith("digest"):
            return make_response(req, 403, to_tag=to_tag)
        nonce = os.urandom(12).hex()
        challenge = f'Digest realm="{self.realm}", nonce="{nonce}", algorithm=MD5, qop="auth"'
        return make_response(req, 401, to_tag=to_tag, headers=[("WWW-Authenticate", challenge)])

    # -- overload ---------------------------------------------------------------------------------

    def _shed(self, req: Request, source: Address, now: float) -> bool:
        """Refuse a new INVITE the overload guard does not admit, before any work is spent on it:
        no validation, no transaction, no 100 Trying, one stateless 503 with Retry-After. Under
        overload every microsecond spent on a call that will be refused is taken from the calls
        in progress (a stateful refusal cost a transaction, two responses and retransmission
        timers). Returns False (the normal path takes over) for a retransmission of an admitted
        INVITE, an in-dialog re-INVITE, or a request too broken to answer this way.

        The To tag is a keyed hash of the request's identity, so a retransmitted INVITE gets
        the same response (RFC 3261 §8.2.6.2 asks a stateless UAS for a stable tag); its ACK
        matches no transaction and is dropped like any ACK for a dialog we do not have.
        """
        assert self.admission is not None
        try:
            if req.to_tag is not None or req.cseq[1] != "INVITE" or self.transactions.has_server(req):
                return False
            if self.admission.admit_new_call(now):
                return False
            ident = f"{req.call_id}|{req.from_tag}|{req.branch}".encode()
            tag = hashlib.blake2s(ident, digest_size=6, key=_SHED_TAG_KEY).hexdigest()
            resp = make_response(
                req, 503, to_tag=tag, headers=[("Retry-After", str(self.admission.retry_after_s))]
            )
            data = resp.to_bytes()
        except SIPParseError:
            return False  # validation answers it precisely
        metrics.LIMIT_REJECTIONS_BY_SCOPE["overload"].inc()
        metrics.RESPONSES_SENT[503].inc()
        self._stateless.append(Outgoing(data, self._reply_address(resp, source)))
        return True

    # -- errors before a transaction exists ---------------------------------------------------

    def _refuse_unparsed(self, data: bytes, source: Address, err: SIPParseError) -> None:
        """A message that did not parse: answer it statelessly when it was a request we can answer."""
        if data.startswith(b"SIP/"):
            self._drop(source, "bad-response", err.reason)
            return
        headers = _salvage_headers(data)
        if any(n == "Via" for n, _ in headers) and not data.lstrip().upper().startswith(b"ACK "):
            req = Request("UNKNOWN", "sip:invalid", headers)
            self._reject_stateless(req, source, err.status, err.reason)
        else:
            self._drop(source, "unparseable", err.reason)

    def _reject_stateless(self, req: Request, source: Address, status: int, reason: str) -> None:
        if req.method == "ACK":
            self._drop(source, "bad-ack", reason)
            return
        resp = make_response(
            req, status, to_tag=new_tag(), headers=[("Warning", f'399 sbc "{_warning_text(reason)}"')]
        )
        self.stats.rejected[status] = self.stats.rejected.get(status, 0) + 1
        metrics.SIP_REQUESTS_REJECTED.labels(str(status)).inc()
        metrics.RESPONSES_SENT[status].inc()
        self._stateless.append(Outgoing(resp.to_bytes(), self._reply_address(resp, source)))

    def _reply_address(self, resp: Response, source: Address) -> Address:
        """Where a stateless response goes: back where the request came from when the
        transport is a stream or rport is forced, else by its Via (RFC 3261 §18.2.2)."""
        if source.reliable or self.force_rport:
            return source
        try:
            host, port = response_destination(resp, source.port)
        except SIPParseError:
            host, port = source.host, source.port
        return Address(source.transport, host, port, None)

    def _drop(self, source: Address, reason: str, detail: str) -> None:
        self.stats.dropped += 1
        self.stats.dropped_by[reason] = self.stats.dropped_by.get(reason, 0) + 1
        metrics.SIP_MESSAGES_DROPPED.labels(source.transport, reason).inc()
        log.debug("dropped message from %s:%s (%s: %s)", source.host, source.port, reason, detail)

    # -- output -------------------------------------------------------------------------------

    def respond(self, key: object, response: Response, now: float) -> None:
        """Send ``response`` on server transaction ``key``."""
        child: HotChild = metrics.RESPONSES_SENT[response.status]
        child.inc()
        self.transactions.send_response(key, response, now)

    def pop_outgoing(self) -> list[Outgoing]:
        """Everything to send now: transaction output and stateless responses."""
        out = self.transactions.pop_outgoing()
        if self._stateless:
            out.extend(self._stateless)
            self._stateless = []
        return out

    def next_timer(self) -> float | None:
        """When :meth:`handle_timer` must next be called (monotonic seconds), or None."""
        # A plain loop: it runs after every message, and a generator is an object per call (and
        # a closure, which a cpdef method cannot hold).
        best = self.transactions.next_timer()
        for owner in self.timer_owners:
            t = owner.next_timer()
            if t is not None and (best is None or t < best):
                best = t
        return best

    def transport_error(self, key: object, now: float) -> None:
        """The I/O layer could not send the first request of client transaction ``key``: the
        transaction ends with a transport error, which its owner hears of (the B2BUA fails over)."""
        for event in self.transactions.transport_error(key, now):  # type: ignore[arg-type]
            self._dispatch(event, now)

    def handle_timer(self, now: float) -> None:
        """Run due timers: the transaction layer's, then its owners'."""
        for event in self.transactions.handle_timer(now):
            self._dispatch(event, now)
        for owner in self.timer_owners:
            owner.handle_timer(now)


def _warning_text(reason: str) -> str:
    return reason.replace("\\", "").replace('"', "'")[:120]


def _salvage_headers(data: bytes) -> list[tuple[str, str]]:
    """The echo headers of a request that failed to parse, read line by line (best effort)."""
    head = data.split(b"\r\n\r\n", 1)[0].decode("utf-8", "replace")
    out: list[tuple[str, str]] = []
    compact = {"v": "Via", "f": "From", "t": "To", "i": "Call-ID"}
    for line in head.split("\r\n")[1:]:
        name, sep, value = line.partition(":")
        if not sep or line[:1] in (" ", "\t"):
            continue
        name = name.strip()
        name = compact.get(name.lower(), name)
        for echo in _ECHO_HEADERS:
            if name.lower() == echo.lower():
                out.append((echo, value.strip()))
    return out
