"""The B2BUA: classifies callers, routes calls, drives both legs, fails over, ends calls, writes CDRs.

Sans-I/O like the SIP core it plugs into: it is handed requests, responses and transaction
events with ``now``, acts through the core's transaction layer, keeps its own timers (attempt
timeouts, 2xx retransmission to the caller, maximum call duration) and reports finished calls
to a CDR sink. The asyncio side only feeds it and drains what it queued.
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import logging
import random
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from routing.failover import FailoverState
from routing.limits import ConcurrencyCounter, LimitHit, LimitScope, RateLimiter, check_limits, rate_table
from routing.model import Snapshot, Trunk
from routing.numbers import normalize_e164
from routing.plan import Attempt, build_carrier_plan, build_inbound_plan, build_outbound_plan
from routing.selection import HealthView
from routing.tables import RoutingTables
from rtp_relay_ext import DtmfEvent, MediaTimeout

from .. import metrics
from ..core import SipCore, new_tag
from ..media.manager import CallMedia, MediaError, MediaManager
from ..sip.errors import SIPParseError
from ..sip.events import (
    AckReceived,
    Address,
    ResponseReceived,
    StrayResponse,
    TransactionKey,
    TransactionTerminated,
    TransactionTimeout,
    TransactionTransportError,
)
from ..sip.message import Request, Response, make_response
from ..sip.multipart import rewrite_sdp
from ..sip.transaction import TransactionError
from ..store.cdr import CdrAttempt, CdrRecord
from .call import (
    Call,
    CallState,
    Leg,
    Origin,
    PendingReinvite,
    build_in_dialog,
    contact_uri,
    display_and_user,
    new_call_id,
    new_call_ref,
    parse_target,
    strip_tag,
    target_address,
)
from .call import is_ip_literal as _is_ip_literal
from .control import LiveCall, LiveLeg, OriginateError
from .prober import GatewayProber

log = logging.getLogger(__name__)

# How long an attempt may go without any response before the next gateway is tried. Kamailio's
# fr_timer default is 5 s and carriers commonly use 2-5 s; 32 s (Timer B) is far too long for PSTN.
DEFAULT_NO_RESPONSE_TIMEOUT_S = 4.0
# How long a ringing attempt may last before it is cancelled (Kamailio fr_inv_timer: 120 s).
DEFAULT_RING_TIMEOUT_S = 120.0
# Longest call the SBC lets through before hanging up both sides: a runaway-billing guard
# (many carriers cap at 4 h; jambonz and Twilio default to 4 h as well).
DEFAULT_MAX_CALL_DURATION_S = 4 * 3600.0
# RFC 4028 §4: Session-Expires below 90 s is refused (422); smaller values are ignored here.
MIN_SESSION_EXPIRES_S = 90
# Retry-After seconds on a limit 503 (RFC 3261 §20.33): short, callers retry soon.
LIMIT_RETRY_AFTER_S = 5
# End-to-end headers relayed between legs; everything else stays on its side (topology hiding).
RELAYED_HEADERS = ("Content-Type", "Content-Disposition", "Allow", "Session-Expires", "Min-SE", "Reason")
# RFC 3261 §16.7 / §21.5.1: what a caller gets when the SBC itself fails while handling its call.
CODE_INTERNAL_ERROR = 500
# RFC 3261 §8.1.3.1: a transaction timeout counts as 408, a transport error as 503.
CODE_TIMEOUT = 408
# DTMF digits kept in a CDR: an IVR session is a few dozen; a stuck key must not bloat the row.
MAX_CDR_DTMF = 64
# Responses to an in-dialog request that terminate the dialog (RFC 5057 §5.1, "dialog usage").
DIALOG_GONE_CODES = frozenset({408, 481})
# What a caller gets when the callee redirected (3xx): "Temporarily Unavailable" (RFC 3261
# §21.4.18), as Kamailio-based SBCs that do not follow redirects answer.
CODE_REDIRECT_REFUSED = 480
# A callee that rang this long without answering: the call ends "no answer" (RFC 3261 §21.4.18).
CODE_NO_ANSWER = 480
CODE_TRANSPORT_ERROR = 503
# Rebuild the call-timer heap once entries of ended calls may outnumber live ones and the heap
# is at least this big: each answered call leaves a maximum-duration entry hours ahead, which
# would otherwise keep every finished Call object alive until then (same rule as the
# transaction layer's HEAP_COMPACT_MIN).
TIMER_HEAP_COMPACT_MIN = 1024


@dataclass(slots=True)
class B2BUAConfig:
    """Call-handling knobs (validated by :mod:`sbc.config`)."""

    no_response_timeout_s: float = DEFAULT_NO_RESPONSE_TIMEOUT_S
    ring_timeout_s: float = DEFAULT_RING_TIMEOUT_S
    max_call_duration_s: float = DEFAULT_MAX_CALL_DURATION_S
    limit_reject_code: int = 503
    default_country_code: str = "1"
    realm: str = "sbc"


CdrSink = Callable[[CdrRecord], None]
LocalAddress = Callable[[str], tuple[str, int]]


class B2BUA:
    """Every call of one SBC process."""

    def __init__(
        self,
        core: SipCore,
        *,
        local_address: LocalAddress,
        cdr_sink: CdrSink,
        config: B2BUAConfig | None = None,
        health: HealthView | None = None,
        rng: random.Random | None = None,
        authenticator: object | None = None,
        wall_offset: float = 0.0,
        user_agent: str = "sbc",
        media: MediaManager | None = None,
        resolve: Callable[[str, int | None, str], list[tuple[str, int]] | None] | None = None,
    ) -> None:
        self.core = core
        # Host names -> addresses from sbc.resolver.DnsCache (a sync cache read; None: IPs only).
        self.resolve = resolve
        self.tx = core.transactions
        self.local_address = local_address
        self.cdr_sink = cdr_sink
        self.config = config or B2BUAConfig()
        self.prober = GatewayProber(core.transactions, local_address, user_agent=user_agent, resolve=resolve)
        self.health: HealthView = health or self.prober.table
        self.rng = rng or random.Random()
        self.authenticator = authenticator
        self.wall_offset = wall_offset
        self.user_agent = user_agent
        # Anchors every call's SDP in the RTP relay; None passes SDP through (signalling only).
        self.media = media
        self.tables = RoutingTables.build(Snapshot())
        self.rates = RateLimiter()
        self.calls_in_progress = ConcurrencyCounter()
        self.calls: dict[str, Call] = {}
        # (Call-ID, local tag) of each leg -> (call, leg); the A leg also by its INVITE key.
        self._dialogs: dict[tuple[str, str], tuple[Call, Leg]] = {}
        self._by_server_key: dict[TransactionKey, Call] = {}
        self._by_client_key: dict[TransactionKey, tuple[Call, str]] = {}
        # Relayed in-dialog requests (INFO, UPDATE...): client key -> (server key, request).
        self._relay_map: dict[TransactionKey, tuple[TransactionKey, Request]] = {}
        self._timers: list[tuple[float, int, Call, str]] = []
        self._stale_timers = 0  # heap entries that belong to ended calls
        self._seq = itertools.count()
        core.on_invite = self._on_invite
        core.on_response = self._on_response
        core.on_event = self._on_event
        core.dialog_handler = self._on_in_dialog
        core.timer_owners.append(self)
        core.timer_owners.append(self.prober)

    # -- provisioning ---------------------------------------------------------------------------

    def load(self, snapshot: Snapshot, now: float) -> None:
        """Replace the routing tables (new calls use them; calls in progress keep theirs)
        and follow the gateways to probe."""
        self.tables = RoutingTables.build(snapshot)
        self.prober.sync(snapshot.carriers, now)
        self.rates.configure(rate_table(snapshot))
        for problem in self.tables.problems:
            log.warning("provisioning: %s", problem)

    # -- timers ---------------------------------------------------------------------------------

    def _at(self, when: float, call: Call, what: str) -> None:
        heap = self._timers
        heapq.heappush(heap, (when, next(self._seq), call, what))
        call.timer_entries += 1
        if len(heap) >= TIMER_HEAP_COMPACT_MIN and 2 * self._stale_timers > len(heap):
            # In place: handle_timer() may be iterating over this very list.
            heap[:] = [e for e in heap if e[2].state is not CallState.ENDED]
            heapq.heapify(heap)
            self._stale_timers = 0

    def _pop_timer(self) -> tuple:
        entry: tuple = heapq.heappop(self._timers)
        call: Call = entry[2]
        call.timer_entries -= 1
        if call.state is CallState.ENDED and self._stale_timers:
            self._stale_timers -= 1
        return entry

    def next_timer(self) -> float | None:
        """When :meth:`handle_timer` must next run (lazy deletion: early wake-ups are harmless)."""
        while self._timers and self._timers[0][2].state is CallState.ENDED:
            self._pop_timer()
        return self._timers[0][0] if self._timers else None

    def handle_timer(self, now: float) -> None:
        """Run every due call timer. Never raises: a failure in one call's timer ends that
        call (:meth:`_abort`) and the other timers still run."""
        call: Call
        what: str
        while self._timers and self._timers[0][0] <= now:
            when, _, call, what = self._pop_timer()
            if call.state is CallState.ENDED:
                continue
            try:
                if what == "attempt" and call.attempt_deadline is not None and call.attempt_deadline <= now:
                    self._attempt_timed_out(call, now)
                elif what == "2xx" and call.a_2xx_next is not None and call.a_2xx_next <= now:
                    self._retransmit_2xx(call, now)
                elif what == "rel1xx" and call.a_rel_next is not None and call.a_rel_next <= now:
                    self._retransmit_reliable_1xx(call, now)
                elif what == "reinvite2xx" and call.pending is not None and call.pending.ok_next is not None:
                    if call.pending.ok_next <= now:
                        self._retransmit_reinvite_2xx(call, now)
                elif what == "max" and call.max_end_at is not None and call.max_end_at <= now:
                    self._hangup(call, now, by="sbc", reason="maximum call duration")
                elif (
                    what == "session"
                    and call.session_expires_at is not None
                    and call.session_expires_at <= now
                ):
                    self._hangup(call, now, by="sbc", reason="session timer expired")
            except Exception:
                self._isolation_failed(call, now, None)

    # -- new calls ------------------------------------------------------------------------------

    def _on_invite(self, core: SipCore, req: Request, key: TransactionKey, now: float) -> None:
        """A new INVITE (no To tag) arrived on server transaction ``key``: answer 100 and route
        it, or refuse it. Never raises: when routing fails unexpectedly the caller gets 500 and
        whatever the call had started (limits, an attempt) is undone."""
        try:
            self._new_invite(req, key, now)
        except Exception:
            log.exception("error setting up call %s", req.call_id)
            call = self._by_server_key.get(key)
            if call is not None:
                self._abort(call, now)
            else:
                with contextlib.suppress(Exception):
                    self.core.respond(key, make_response(req, CODE_INTERNAL_ERROR, to_tag=new_tag()), now)

    def _new_invite(self, req: Request, key: TransactionKey, now: float) -> None:
        self.core.respond(key, make_response(req, 100), now)
        source = self.tx_source(key)
        src_ip = source.host
        tables = self.tables
        carrier = tables.sources.carrier_for(src_ip)
        if carrier is not None:
            self._inbound(req, key, source, carrier.name, now)
            return
        trunks = tables.sources.trunks_for(src_ip)
        if trunks:
            self._outbound(req, key, source, trunks[0], now)
            return
        trunk = self._digest_trunk(req, key, now)
        if trunk is False:
            return  # challenged or refused already
        if trunk is None:
            self._reject(req, key, 403, now)
            return
        self._outbound(req, key, source, trunk, now)

    def _digest_trunk(self, req: Request, key: TransactionKey, now: float) -> Trunk | None | bool:
        """Digest-authenticate a caller no ACL knows: a Trunk, None (refuse 403), or False
        when the request was answered here (401 challenge)."""
        auth = self.authenticator
        if auth is None or not self.tables.sources.any_credentials:
            return None  # nobody could authenticate: a challenge would only invite guessing
        has_creds = req.get("Authorization") is not None or req.get("Proxy-Authorization") is not None
        if not has_creds:
            self.core.respond(key, auth.challenge(req, now), now)  # type: ignore[attr-defined]
            return False
        sources = self.tables.sources
        found: dict[str, Trunk] = {}

        def lookup(username: str) -> str | None:
            for trunk in sources.trunks_for_username(username):
                for cred in trunk.credentials:
                    if cred.username == username:
                        found["trunk"] = trunk
                        return cred.password
            return None

        result = auth.verify(req, lookup, now)  # type: ignore[attr-defined]
        if result.ok:
            return found.get("trunk")
        if result.stale:
            self.core.respond(key, auth.challenge(req, now, stale=True), now)  # type: ignore[attr-defined]
            return False
        metrics.AUTH_FAILURES.labels(result.reason).inc()
        return None

    def _dialled(self, req: Request) -> str | None:
        user = getattr(req.ruri, "user", None) or getattr(req.ruri, "number", None)
        if not user:
            try:
                _, user = display_and_user(req.get("To") or "")
            except SIPParseError:
                return None
        return normalize_e164(user, self.config.default_country_code) if user else None

    def _new_call(
        self, req: Request, key: TransactionKey, source: Address, direction: str, now: float
    ) -> Call:
        caller_display, caller_user = display_and_user(req.get("From") or "")
        leg = Leg(
            call_id=req.call_id,
            local_tag=new_tag(),
            local_uri=strip_tag(req.get("To") or ""),
            remote_uri=strip_tag(req.get("From") or ""),
            remote_tag=req.from_tag,
            remote_target=contact_uri(req.get("Contact")),
            route_set=req.values("Record-Route"),
            remote_cseq=req.cseq[0],
            peer=source,
            invite=req,
            invite_key=key,
        )
        call = Call(
            id=new_call_ref(),
            direction=direction,
            a=leg,
            caller=caller_user,
            callee="",
            setup_at=now,
            caller_display=caller_display,
        )
        v: str
        for v in req.values("Require"):  # noqa: SIM110 - a loop: any() over a generator is a closure
            if v.strip().lower() == "100rel":
                call.a_100rel = True
                break
        return call

    def _inbound(self, req: Request, key: TransactionKey, source: Address, carrier: str, now: float) -> None:
        e164 = self._dialled(req)
        number = self.tables.numbers.lookup(e164) if e164 else None
        trunk = self.tables.numbers.trunk_for(number) if number is not None else None
        call = self._new_call(req, key, source, "inbound", now)
        call.callee, call.carrier = e164 or "", carrier
        if number is None or number.customer is None:
            self._refuse(call, req, key, 404, now, reason="Unassigned Number")
            return
        call.customer = number.customer
        if trunk is None:
            # Applications and media endpoints come with the programmable-routing issues.
            self._refuse(call, req, key, 480, now, reason="Destination Not Supported Yet")
            return
        call.trunk = trunk.name
        customer = self.tables.customers.get(number.customer)
        carrier_obj = self.tables.carriers.get(carrier)
        scopes = [
            LimitScope("customer", number.customer, customer.max_calls if customer else None),
            LimitScope("trunk", f"{number.customer}/{trunk.name}", trunk.max_calls),
            LimitScope("carrier", carrier, carrier_obj.max_calls if carrier_obj else None),
        ]
        if not self._admit_limits(call, req, key, scopes, now):
            return
        self._register(call)
        call.targets = build_inbound_plan(trunk, self.rng)
        self._next_attempt(call, now)

    def _outbound(self, req: Request, key: TransactionKey, source: Address, trunk: Trunk, now: float) -> None:
        e164 = self._dialled(req)
        call = self._new_call(req, key, source, "outbound", now)
        call.customer, call.trunk = trunk.customer, trunk.name
        if e164 is None:
            call.callee = _user_or_empty(req.get("To"))
            self._refuse(call, req, key, 484, now, reason="Address Incomplete")
            return
        call.callee = e164
        customer = self.tables.customers.get(trunk.customer)
        scopes = [
            LimitScope("customer", trunk.customer, customer.max_calls if customer else None),
            LimitScope("trunk", f"{trunk.customer}/{trunk.name}", trunk.max_calls),
        ]
        if not self._admit_limits(call, req, key, scopes, now):
            return
        self._register(call)
        wall_now = now + self.wall_offset  # route time windows are wall-clock (UTC)
        plan = build_outbound_plan(self.tables, e164, trunk.customer, wall_now, self.rng, self.health)
        if not plan:
            no_route = self.tables.routes.match(e164, trunk.customer, wall_now) is None
            self._fail_call(call, now, 404 if no_route else 503)
            return
        call.failover = FailoverState(plan)
        self._next_attempt(call, now)

    def _admit_limits(
        self, call: Call, req: Request, key: TransactionKey, scopes: list, now: float
    ) -> bool:
        hit: LimitHit | None = check_limits(scopes, now, self.rates, self.calls_in_progress)
        if hit is None:
            call.scopes = tuple(scopes)
            return True
        metrics.LIMIT_REJECTIONS_BY_SCOPE[hit.kind].inc()
        self._refuse(
            call,
            req,
            key,
            self.config.limit_reject_code,
            now,
            headers=[("Retry-After", str(LIMIT_RETRY_AFTER_S))],
            reason=f"{hit.kind.title()} {hit.limit} limit reached",
        )
        return False

    def _refuse(
        self,
        call: Call,
        req: Request,
        key: TransactionKey,
        status: int,
        now: float,
        *,
        headers: list[tuple[str, str]] | None = None,
        reason: str,
    ) -> None:
        """Refuse a known party's call before routing it, and still give it a CDR.

        A carrier or an authenticated customer made a call attempt (unassigned number, limit,
        bad number): billing and troubleshooting need that row. Anonymous sources refused with
        403 get none, so a scan cannot fill the CDR table."""
        self._reject(req, key, status, now, headers=headers, reason=reason)
        call.state = CallState.ENDED
        call.ended_at = now
        call.final_code = status
        call.end_reason = reason
        self._emit_cdr(call)

    def _register(self, call: Call) -> None:
        self.calls[call.id] = call
        self._dialogs[(call.a.call_id, call.a.local_tag)] = (call, call.a)
        self._by_server_key[call.a.invite_key] = call  # type: ignore[index]
        metrics.ATTEMPTS_BY_DIRECTION[call.direction].inc()

    def _reject(
        self,
        req: Request,
        key: TransactionKey,
        status: int,
        now: float,
        *,
        headers: list[tuple[str, str]] | None = None,
        reason: str | None = None,
    ) -> None:
        self.core.respond(
            key, make_response(req, status, reason, to_tag=new_tag(), headers=headers or []), now
        )

    # -- attempts -------------------------------------------------------------------------------

    def _next_attempt(self, call: Call, now: float) -> None:
        """Send the INVITE of the next attempt, or give the caller its final answer."""
        while True:
            if call.direction == "outbound":
                assert call.failover is not None
                attempt = call.failover.next_attempt(now)
                if attempt is None:
                    self._fail_call(call, now, call.failover.final_code() or 503)
                    return
                hit = self._take_carrier(call, attempt.carrier, now)
                if hit is not None:
                    gateway = f"{attempt.gateway.host}:{attempt.gateway.port}"
                    call.attempts.append((attempt.carrier, gateway, CODE_TRANSPORT_ERROR, "carrier limit"))
                    call.failover.record(CODE_TRANSPORT_ERROR, "carrier limit", now=now)
                    continue
                gw = attempt.gateway
                gateway = f"{gw.host}:{gw.port}"
                dest = self._destination(gw.host, gw.port, gw.transport.lower())
                if dest is None:
                    call.attempts.append(
                        (attempt.carrier, gateway, CODE_TRANSPORT_ERROR, "host name does not resolve")
                    )
                    call.failover.record(CODE_TRANSPORT_ERROR, "host name does not resolve", now=now)
                    continue
                # The Request-URI keeps the gateway's name: carriers route on their own domain.
                uri = f"sip:{attempt.request_user}@{_host(gw.host)}:{gw.port}"
                if dest.transport != "udp":
                    uri += f";transport={dest.transport}"
                call.carrier, call.gateway = attempt.carrier, gateway
                self._send_invite(call, uri, dest, attempt, now)
                return
            if call.target_index >= len(call.targets):
                self._fail_call(
                    call, now, _best_code([a[2] for a in call.attempts]) if call.attempts else 480
                )
                return
            target = call.targets[call.target_index]
            call.target_index += 1
            uri = _inbound_request_uri(target.uri, call.callee)
            parsed = parse_target(uri)
            dest = self._destination(parsed[0], parsed[1], parsed[2]) if parsed is not None else None
            if dest is None:
                reason = "host name does not resolve" if parsed is not None else "not a SIP URI"
                call.attempts.append((None, target.uri, 503, reason))
                continue
            call.gateway = f"{dest.host}:{dest.port}"
            self._send_invite(call, uri, dest, None, now)
            return

    def _take_carrier(self, call: Call, carrier_name: str, now: float) -> LimitHit | None:
        """Count the call against outbound carrier ``carrier_name`` (its max_calls and max_cps),
        releasing the carrier it was counted against before, if another. A call counts once per
        carrier however many of its gateways are tried. Returns the limit hit, or None."""
        held = call.carrier_scope
        if held is not None:
            if held.name == carrier_name:
                return None
            call.carrier_scope = None
            self.calls_in_progress.release([held.key])
        carrier = self.tables.carriers.get(carrier_name)
        if carrier is None or (carrier.max_calls is None and carrier.max_cps is None):
            return None
        scope = LimitScope("carrier", carrier.name, carrier.max_calls)
        hit = check_limits([scope], now, self.rates, self.calls_in_progress)
        if hit is None:
            call.carrier_scope = scope
        return hit

    def _send_invite(self, call: Call, uri: str, dest: Address, attempt: Attempt | None, now: float) -> None:
        host, port = self.local_address(dest.transport)
        a_inv: Request = call.a.invite
        assert a_inv is not None or call.origin is not None
        display = call.caller_display
        caller = call.caller or "anonymous"
        from_uri = f"<sip:{caller}@{_host(host)}>"
        if display:
            from_uri = f"{_quoted(display)} {from_uri}"
        callee_user = uri.split(":", 1)[1].split("@", 1)[0] if "@" in uri else call.callee
        leg = Leg(
            call_id=new_call_id(_host(host)),
            local_tag=new_tag(),
            local_uri=from_uri,
            remote_uri=f"<sip:{callee_user}@{_host(dest.host)}>",
            peer=dest,
            remote_target=uri,
        )
        extra = (
            []
            if a_inv is None
            else [(n, v) for n, v in a_inv.headers if n in RELAYED_HEADERS and n != "Content-Type"]
        )
        try:
            offer = self._origin_offer(call) if a_inv is None else self._anchor(call, "a", a_inv)
        except MediaError as e:
            log.info("call %s: media refused: %s", call.id, e.reason)
            if call.failover is not None and call.failover.in_flight is not None:
                call.failover.record(e.status, e.reason, now=now)
            # The CDR says why (a full relay port range and an overloaded SBC both answer 503).
            self._fail_call(call, now, e.status, f"media refused: {e.reason}")
            return
        try:
            mf = int((a_inv.get("Max-Forwards") if a_inv is not None else None) or 70)
        except ValueError:
            mf = 70
        req: Request = build_in_dialog(
            leg,
            "INVITE",
            via_host=_host(host),
            via_port=port,
            contact=f"<sip:sbc@{_host(host)}:{port}>",
            user_agent=self.user_agent,
            body=offer,
            content_type=a_inv.get("Content-Type") if a_inv is not None else "application/sdp",
            extra=extra,
        )
        req.set("Max-Forwards", str(max(0, mf - 1)))
        leg.invite = req
        call.b = leg
        call.got_provisional = False
        key = self.tx.send_request(req, dest, now)
        leg.invite_key = key
        self._by_client_key[key] = (call, "invite")
        self._dialogs[(leg.call_id, leg.local_tag)] = (call, leg)
        call.attempt_deadline = now + self.config.no_response_timeout_s
        self._at(call.attempt_deadline, call, "attempt")

    def _attempt_timed_out(self, call: Call, now: float) -> None:
        """No answer in time: cancel (or abandon) this attempt and try the next."""
        call.attempt_deadline = None
        b = call.b
        if b is None or b.invite_key is None:
            return
        reason = "no answer" if call.got_provisional else "no response"
        self.tx.cancel(b.invite_key, now, [("Reason", 'SIP;cause=408;text="Timeout"')])
        call.dead_b_keys.add(b.invite_key)
        if not call.got_provisional:
            self._attempt_failed(call, None, reason, now)
        elif call.direction == "outbound":
            # The callee's phone rang and nobody answered: another carrier would ring it again.
            # 480 fails over only where a carrier lists it in its failover codes.
            self._attempt_failed(call, CODE_NO_ANSWER, reason, now)
        else:
            self._attempt_failed(call, CODE_TIMEOUT, reason, now)  # inbound: hunt the next target

    def _attempt_failed(self, call: Call, code, reason: str, now: float) -> None:
        b = call.b
        if b is not None:
            self._dialogs.pop((b.call_id, b.local_tag), None)
        call.b = None
        call.attempt_deadline = None
        recorded = code if code is not None else 408
        carrier = call.carrier if call.direction == "outbound" else None
        call.attempts.append((carrier, call.gateway, recorded, reason))
        if call.caller_cancelled:
            if call.failover is not None and call.failover.in_flight is not None:
                call.failover.record(code, reason, caller_hung_up=True, now=now)
            self._fail_call(call, now, 487)
            return
        if call.direction == "outbound":
            assert call.failover is not None
            if call.failover.record(code, reason, now=now):
                self._next_attempt(call, now)
            else:
                self._fail_call(call, now, call.failover.final_code() or 503)
            return
        if code is None or code in (408,) or code >= 500 and code < 600:
            self._next_attempt(call, now)
        else:
            self._fail_call(call, now, code)

    # -- responses on the outbound leg ----------------------------------------------------------

    def _on_response(self, event: object, now: float) -> None:
        """A response from the core (matched or stray). Never raises: a failure while handling
        it ends the call it belongs to and nothing else."""
        if isinstance(event, StrayResponse):
            self._stray(event.response, event.source, now)
            return
        assert isinstance(event, ResponseReceived)
        call: Call
        kind: str
        entry: tuple = self._by_client_key.get(event.key)
        if entry is None:
            if self.prober.owns(event.key):
                try:
                    self.prober.on_response(event.key, event.response, now)
                except Exception:
                    self._isolation_failed(None, now, None)
            return
        call, kind = entry
        resp: Response = event.response
        try:
            if kind == "invite":
                self._invite_response(call, event.key, resp, now)
            elif kind == "reinvite":
                self._reinvite_response(call, event.key, resp, now)
            elif kind == "relay":
                self._relay_response(call, event.key, resp, now)
            elif kind == "bridge":
                self._bridge_response(call, event.key, resp, now)
        except Exception:
            self._isolation_failed(call, now, None)
        if resp.status >= 300 or (resp.status >= 200 and kind not in ("invite", "reinvite", "bridge")):
            # INVITE keys stay until their transaction ends: every 2xx retransmission needs an ACK.
            self._by_client_key.pop(event.key, None)

    def _invite_response(self, call: Call, key: TransactionKey, resp: Response, now: float) -> None:
        status = resp.status
        b = call.b
        live = b is not None and b.invite_key == key and key not in call.dead_b_keys
        if live and 200 <= status < 300 and call.answered_at is not None:
            assert b is not None
            if resp.to_tag == b.remote_tag:
                # A retransmission of the 2xx that answered the call: not a second answer.
                # Re-send our ACK if it went out already; otherwise it goes when the caller ACKs.
                self._resend_b_ack(call)
            else:
                self._kill_late_answer(call, key, resp, now)  # another fork answered too
            return
        if not live or call.state is CallState.ENDED:
            if 200 <= status < 300:
                self._kill_late_answer(call, key, resp, now)
            return
        assert b is not None
        if status > 100 and status < 300:
            try:
                self._learn_remote(b, resp)
            except SIPParseError as e:
                # Dropped and counted as the core does with malformed responses: the callee
                # retransmits a 2xx, and a provisional only informs.
                self._drop_response(b, e)
                return
        if status < 200:
            if status == 100:
                # Any response stops the no-response clock; now the ring timeout runs.
                call.attempt_deadline = now + self.config.ring_timeout_s
                self._at(call.attempt_deadline, call, "attempt")
                return
            call.got_provisional = True
            call.attempt_deadline = now + self.config.ring_timeout_s
            self._at(call.attempt_deadline, call, "attempt")
            if resp.get("Require") and "100rel" in resp.get("Require", "").lower():
                self._prack(call, b, resp, now)
            self._relay_provisional(call, resp, now)
            return
        if status >= 300:
            self._attempt_failed(call, status, resp.reason, now)
            return
        # 2xx: the call is answered.
        call.attempt_deadline = None
        b.remote_cseq = 0
        call.b_2xx = resp
        call.answered_at = now
        call.state = CallState.ANSWERED
        if call.media is not None and self.media is not None:
            # The media timeout counts from the answer: a call may ring silently for longer.
            self.media.restart_idle(call.media)
        call.attempts.append(
            (call.carrier if call.direction == "outbound" else None, call.gateway, status, resp.reason)
        )
        if call.failover is not None and call.failover.in_flight is not None:
            call.failover.record(status, resp.reason, now=now)
        if call.caller_cancelled:
            self._ack_b(call, b"", None, now)
            self._send_bye(call, b, now)
            self._finish(call, now, 487, hangup_by="caller", reason="cancelled")
            return
        if call.origin is not None:
            self._ack_b(call, b"", None, now)
            call.max_end_at = now + self.config.max_call_duration_s
            self._at(call.max_end_at, call, "max")
            metrics.ANSWERS_BY_DIRECTION[call.direction].inc()
            self._place_bridge(call, resp, now)
            return
        a = call.a
        ok = self._response_to_a(call, 200, resp, now)
        call.a_2xx = ok
        call.a_final_sent = True
        call.a_2xx_interval = self.tx.config.t1
        call.a_2xx_next = now + call.a_2xx_interval
        call.a_2xx_give_up = now + self.tx.config.timeout  # 64*T1 (RFC 3261 §13.3.1.4)
        self._at(call.a_2xx_next, call, "2xx")
        call.max_end_at = now + self.config.max_call_duration_s
        self._at(call.max_end_at, call, "max")
        self._session_refreshed(call, resp, now)
        metrics.ANSWERS_BY_DIRECTION[call.direction].inc()
        del a

    def _session_refreshed(self, call: Call, resp: Response, now: float) -> None:
        """A 2xx to INVITE/UPDATE carrying Session-Expires (RFC 4028) restarts the session
        watchdog: without another refresh by then, the session is dead and both legs get BYE."""
        value: str = resp.get("Session-Expires") or resp.get("x")
        if not value:
            return
        seconds: str = value.split(";", 1)[0].strip()
        if not seconds.isdigit() or int(seconds) < MIN_SESSION_EXPIRES_S:
            return
        call.session_expires_at = now + int(seconds)
        self._at(call.session_expires_at, call, "session")

    def _learn_remote(self, leg: Leg, resp: Response) -> None:
        """Take the dialog state of ``leg`` from a response to its INVITE (RFC 3261 §12.1.2).
        Raises SIPParseError, leaving ``leg`` unchanged, when Contact or Record-Route is malformed."""
        target = contact_uri(resp.get("Contact"))
        rr = resp.values("Record-Route")
        tag = resp.to_tag
        if tag:
            leg.remote_tag = tag
        if target:
            leg.remote_target = target
        if rr:
            leg.route_set = list(reversed(rr))

    def _drop_response(self, leg: Leg, err: SIPParseError) -> None:
        metrics.SIP_MESSAGES_DROPPED.labels(leg.peer.transport, "bad-response").inc()
        log.debug("dropped response from %s:%s: %s", leg.peer.host, leg.peer.port, err.reason)

    def _response_to_a(self, call: Call, status, resp: Response, now: float) -> Response:
        a = call.a
        assert a.invite is not None
        host, port = self.local_address(a.peer.transport)
        headers = [(n, v) for n, v in resp.headers if n in RELAYED_HEADERS and n != "Content-Type"]
        headers.append(("Contact", f"<sip:sbc@{_host(host)}:{port}>"))
        headers.append(("Server", self.user_agent))
        body = self._anchor(call, "b", resp)
        if body:
            headers.append(("Content-Type", resp.get("Content-Type") or "application/sdp"))
        if call.a_100rel and 100 < status < 200:
            if call.a_rel_pending is not None:
                # One reliable provisional at a time (RFC 3262 §3): keep the latest with SDP
                # (early media must not be lost), drop plain ringing.
                if body:
                    call.a_rel_queued = resp
                return call.a_rel_pending  # type: ignore[return-value]
            call.a_rseq += 1
            headers += [("Require", "100rel"), ("RSeq", str(call.a_rseq))]
        out = make_response(a.invite, status, resp.reason, to_tag=a.local_tag, headers=headers, body=body)
        for rr in a.invite.get_all("Record-Route"):
            out.add("Record-Route", rr)
        self.core.respond(a.invite_key, out, now)
        if call.a_100rel and 100 < status < 200:
            call.a_rel_pending = out
            call.a_rel_interval = self.tx.config.t1
            call.a_rel_next = now + call.a_rel_interval
            call.a_rel_give_up = now + self.tx.config.timeout
            self._at(call.a_rel_next, call, "rel1xx")
        return out

    def _retransmit_reliable_1xx(self, call: Call, now: float) -> None:
        """Re-send the reliable provisional until its PRACK; none in 64*T1 → the call fails
        with 500 towards the caller (RFC 3262 §3) and the callee is cancelled."""
        pending = call.a_rel_pending
        if pending is None or call.a_final_sent:
            call.a_rel_next = None
            return
        if call.a_rel_give_up is not None and now >= call.a_rel_give_up:
            call.a_rel_next = None
            self._abort(call, now, reason="no PRACK from caller")
            return
        self.tx.send_stateless(pending, call.a.peer)  # type: ignore[arg-type]
        call.a_rel_interval = min(call.a_rel_interval * 2, self.tx.config.t2)
        call.a_rel_next = min(now + call.a_rel_interval, call.a_rel_give_up or now + call.a_rel_interval)
        self._at(call.a_rel_next, call, "rel1xx")

    def _caller_pracked(self, call: Call, req: Request, now: float) -> None:
        """The caller PRACKed: stop retransmitting that provisional, send the queued one."""
        pending = call.a_rel_pending
        if pending is None:
            return
        rack = (req.get("RAck") or "").split()
        if not rack or rack[0] != pending.get("RSeq"):  # type: ignore[attr-defined]
            return
        call.a_rel_pending = None
        call.a_rel_next = None
        queued, call.a_rel_queued = call.a_rel_queued, None
        if queued is not None and not call.a_final_sent:
            self._response_to_a(call, queued.status, queued, now)  # type: ignore[attr-defined]

    def _relay_provisional(self, call: Call, resp: Response, now: float) -> None:
        if call.a_final_sent:
            return
        if call.state is CallState.ROUTING:
            call.state = CallState.EARLY
        if call.origin is None:
            self._response_to_a(call, resp.status, resp, now)

    def _prack(self, call: Call, leg: Leg, resp: Response, now: float) -> None:
        """Acknowledge a reliable provisional ourselves (RFC 3262 §7.2: PRACK with RAck)."""
        rseq = resp.get("RSeq")
        if not rseq:
            return
        cseq_num, method = resp.cseq
        host, port = self.local_address(leg.peer.transport)
        req = build_in_dialog(
            leg,
            "PRACK",
            via_host=_host(host),
            via_port=port,
            contact=f"<sip:sbc@{_host(host)}:{port}>",
            user_agent=self.user_agent,
            body=b"",
            content_type=None,
            extra=[("RAck", f"{rseq.strip()} {cseq_num} {method}")],
        )
        key = self.tx.send_request(
            req, target_address(leg.remote_target or "", leg.peer.transport, leg.peer), now
        )
        self._by_client_key[key] = (call, "local")

    def _ack_b(self, call: Call, body: bytes, ctype: str | None, now: float) -> None:
        """ACK the callee's 2xx (once; :meth:`_resend_b_ack` repeats it)."""
        b = call.b
        resp = call.b_2xx
        if b is None or resp is None or call.b_ack is not None:
            return
        host, port = self.local_address(b.peer.transport)
        assert b.invite is not None
        ack = build_in_dialog(
            b,
            "ACK",
            via_host=_host(host),
            via_port=port,
            contact="",
            user_agent=self.user_agent,
            body=body,
            content_type=ctype,
            extra=None,
            cseq=b.invite.cseq[0],
        )
        dest = target_address(b.remote_target or "", b.peer.transport, b.peer)
        data = ack.to_bytes()
        call.b_ack = (data, dest)  # kept for the 2xx's retransmissions: bytes are smaller
        self.tx.send_stateless(data, dest)

    def _resend_b_ack(self, call: Call) -> None:
        """Re-send the ACK of the callee's 2xx (it retransmitted the 2xx: our ACK was lost)."""
        if call.b_ack is not None:
            ack, dest = call.b_ack  # type: ignore[misc]
            self.tx.send_stateless(ack, dest)

    def _kill_late_answer(self, call: Call, key: TransactionKey, resp: Response, now: float) -> None:
        """A 2xx from an attempt we gave up on: ACK it and hang it up (RFC 3261 §13.2.2.4,
        §15). The ACK is a new transaction to the 2xx's Contact; a retransmitted 2xx is ACKed
        again but hung up only once."""
        known = call.late_answers.get((key, resp.to_tag))
        if known is not None:
            self.tx.send_stateless(*known[1])
            return
        req = self.tx.request(key)
        dest = self._client_peer(key)
        if req is None or dest is None:
            return
        leg = Leg(
            call_id=req.call_id,
            local_tag=req.from_tag or "",
            local_uri=strip_tag(req.get("From") or ""),
            remote_uri=strip_tag(req.get("To") or ""),
            remote_target=req.uri,
            peer=dest,
            local_cseq=req.cseq[0],
        )
        try:
            self._learn_remote(leg, resp)
        except SIPParseError as e:
            self._drop_response(leg, e)
            return
        host, port = self.local_address(dest.transport)
        ack = build_in_dialog(
            leg,
            "ACK",
            via_host=_host(host),
            via_port=port,
            contact="",
            user_agent=self.user_agent,
            body=b"",
            content_type=None,
            extra=None,
            cseq=req.cseq[0],
        )
        ack_dest = target_address(leg.remote_target or "", dest.transport, dest)
        data = ack.to_bytes()
        call.late_answers[(key, resp.to_tag)] = (leg, (data, ack_dest))  # re-sent as b_ack is
        self.tx.send_stateless(data, ack_dest)
        self._send_bye(call, leg, now)

    def _client_peer(self, key: TransactionKey) -> Address | None:
        tx = self.tx._clients.get(key)  # noqa: SLF001 - the layer keeps the destination
        return tx.peer if tx is not None else None

    def _stray(self, resp: Response, source: Address, now: float) -> None:
        """A 2xx retransmission after our INVITE transaction ended: re-send the ACK."""
        if not (200 <= resp.status < 300) or resp.cseq[1] != "INVITE":
            return
        entry = self._dialogs.get((resp.call_id, resp.from_tag or ""))
        if entry is None:
            return
        call, leg = entry
        if leg is call.b and resp.cseq[0] == (leg.invite.cseq[0] if leg.invite else -1):
            try:
                self._resend_b_ack(call)
            except Exception:
                self._isolation_failed(call, now, None)

    # -- caller side events ---------------------------------------------------------------------

    def _on_event(self, event: object, now: float) -> None:
        """CANCELs, ACKs and transaction ends from the core. Never raises (see :meth:`_isolation_failed`)."""
        entry: tuple
        if isinstance(event, tuple) and event and event[0] == "cancel":
            _, invite_key, cancel = event
            call = self._by_server_key.get(invite_key)
            if call is not None:
                try:
                    self._caller_cancelled(call, now)
                except Exception:
                    self._isolation_failed(call, now, None)
                return
            # A CANCEL of a re-INVITE carries the dialog's Call-ID and tags.
            entry = self._dialogs.get((cancel.call_id, cancel.to_tag or ""))
            if entry is not None:
                try:
                    self._cancel_reinvite(entry[0], invite_key, now)
                except Exception:
                    self._isolation_failed(entry[0], now, None)
        elif isinstance(event, AckReceived):
            entry = self._dialogs.get((event.request.call_id, event.request.to_tag or ""))
            if entry is not None:
                try:
                    self._on_ack(event.request, now)
                except Exception:
                    self._isolation_failed(entry[0], now, None)
        elif isinstance(event, (TransactionTimeout, TransactionTransportError)):
            if self.prober.owns(event.key):
                try:
                    self.prober.on_failure(event.key, now)
                except Exception:
                    self._isolation_failed(None, now, None)
                return
            entry = self._by_client_key.pop(event.key, None)
            if entry is not None:
                call, kind = entry
                try:
                    self._client_failed(call, kind, event, now)
                except Exception:
                    self._isolation_failed(call, now, None)
            else:
                call = self._by_server_key.get(event.key)
                if call is not None and isinstance(event, TransactionTransportError):
                    self._abort(call, now, reason="transport error")
        elif isinstance(event, TransactionTerminated):
            # The transaction is gone: nothing can arrive on its key any more.
            self._by_client_key.pop(event.key, None)
            self._relay_map.pop(event.key, None)

    def _client_failed(
        self, call: Call, kind: str, event: TransactionTimeout | TransactionTransportError, now: float
    ) -> None:
        """A client transaction of ``call`` got no final response (Timer B/F) or could not be sent."""
        timeout = isinstance(event, TransactionTimeout)
        if kind == "invite":
            b = call.b
            if call.state is not CallState.ENDED and b is not None and b.invite_key == event.key:
                code = None if timeout else CODE_TRANSPORT_ERROR
                self._attempt_failed(call, code, "timeout" if timeout else "transport error", now)
        elif kind == "relay":
            entry = self._relay_map.pop(event.key, None)
            if entry is not None:
                server_key, orig = entry
                code = CODE_TIMEOUT if timeout else CODE_TRANSPORT_ERROR
                with contextlib.suppress(TransactionError):
                    self.core.respond(server_key, make_response(orig, code), now)
        elif kind == "reinvite" and call.pending is not None and call.pending.client_key == event.key:
            self._fail_pending(call, now)
        elif kind == "bridge" and call.origin is not None and call.origin.invite_key == event.key:
            code = CODE_TIMEOUT if timeout else CODE_TRANSPORT_ERROR
            self._bridge_failed(call, code, "timeout" if timeout else "transport error", now)

    def _caller_cancelled(self, call: Call, now: float) -> None:
        if call.a_final_sent or call.state is CallState.ENDED:
            return
        call.caller_cancelled = True
        a = call.a
        assert a.invite is not None
        self.core.respond(a.invite_key, make_response(a.invite, 487, to_tag=a.local_tag), now)
        call.a_final_sent = True
        b = call.b
        if b is not None and b.invite_key is not None:
            self.tx.cancel(b.invite_key, now, [("Reason", 'SIP;cause=487;text="Caller cancelled"')])
            call.dead_b_keys.add(b.invite_key)
            self._by_client_key[b.invite_key] = (call, "invite")
            carrier = call.carrier if call.direction == "outbound" else None
            call.attempts.append((carrier, call.gateway, 487, "caller cancelled"))
            if call.failover is not None and call.failover.in_flight is not None:
                call.failover.record(None, "caller cancelled", caller_hung_up=True, now=now)
        elif call.failover is not None and call.failover.in_flight is None:
            call.failover.cancel()
        self._finish(call, now, 487, hangup_by="caller", reason="cancelled")

    def _on_ack(self, ack: Request, now: float) -> None:
        call: Call
        leg: Leg
        entry: tuple = self._dialogs.get((ack.call_id, ack.to_tag or ""))
        if entry is None:
            return
        call, leg = entry
        if leg is call.a and call.state is CallState.ANSWERED:
            if call.a.invite is not None and ack.cseq[0] != call.a.invite.cseq[0]:
                return
            call.a_2xx_next = None
            call.state = CallState.CONFIRMED
            self._ack_b(call, self._anchor(call, "a", ack), ack.get("Content-Type"), now)
            # Confirmed: what only the setup needed goes, so a long call keeps its dialog state
            # alone (~5 KB of messages and their parsed headers a call). The ACK sent to the
            # callee (b_ack) still answers its 2xx retransmissions.
            call.a_2xx = call.b_2xx = None
            call.a.invite = None
            if call.b is not None:
                call.b.invite = None
            return
        pending = call.pending
        if (
            pending is not None
            and pending.from_leg is leg
            and pending.ok_response is not None
            and ack.cseq[0] == pending.from_cseq
        ):
            self._ack_far(call, pending, ack, now)

    def _retransmit_2xx(self, call: Call, now: float) -> None:
        if call.state is not CallState.ANSWERED or call.a_2xx is None:
            return
        if call.a_2xx_give_up is not None and now >= call.a_2xx_give_up:
            # RFC 3261 §13.3.1.4: no ACK within 64*T1 → the dialog is over.
            self._hangup(call, now, by="sbc", reason="no ACK from caller")
            return
        self.tx.send_stateless(call.a_2xx, call.a.peer)  # type: ignore[arg-type]
        call.a_2xx_interval = min(call.a_2xx_interval * 2, self.tx.config.t2)
        call.a_2xx_next = now + call.a_2xx_interval
        if call.a_2xx_give_up is not None:
            call.a_2xx_next = min(call.a_2xx_next, call.a_2xx_give_up)
        self._at(call.a_2xx_next, call, "2xx")

    # -- in-dialog requests ---------------------------------------------------------------------

    def _on_in_dialog(self, req: Request, key: TransactionKey, now: float) -> bool:
        """A request with a To tag: handle it when it belongs to one of our dialogs and return
        True (answered or relayed), else False (the core answers 481). Never raises: a failure
        ends this call alone and the request gets 500."""
        call: Call
        leg: Leg
        entry: tuple = self._dialogs.get((req.call_id, req.to_tag or ""))
        if entry is None:
            return False
        call, leg = entry
        try:
            self._in_dialog(call, leg, req, key, now)
        except Exception:
            self._isolation_failed(call, now, (key, req))
        return True

    def _in_dialog(self, call: Call, leg: Leg, req: Request, key: TransactionKey, now: float) -> None:
        if req.cseq[0] <= leg.remote_cseq and req.method not in ("ACK", "CANCEL"):
            self.core.respond(key, make_response(req, 500, "Out Of Order CSeq", to_tag=None), now)
            return
        leg.remote_cseq = req.cseq[0]
        method: str = req.method
        if method == "BYE":
            self.core.respond(key, make_response(req, 200), now)
            if leg is call.a and call.answered_at is None:
                # RFC 3261 §15: the caller ended its early dialog; for the callee that is a CANCEL.
                self._caller_cancelled(call, now)
                return
            if call.state is CallState.ANSWERED:
                self._ack_b(call, b"", None, now)  # the callee's 2xx is ACKed before its BYE
            other = call.other(leg)
            if call.origin is not None and other is call.a and not call.origin.bridged:
                self._cancel_bridge(call, now)
            elif other is not None:
                self._send_bye(call, other, now)
            if call.pending is not None:
                self._fail_pending(call, now)
            self._finish(call, now, 200, hangup_by="caller" if leg is call.a else "callee", reason="bye")
            return
        if method == "OPTIONS" or method == "PRACK":
            self.core.respond(key, make_response(req, 200), now)
            if method == "PRACK" and leg is call.a:
                self._caller_pracked(call, req, now)
            return
        if call.state is CallState.ENDED or call.other(leg) is None:
            self.core.respond(key, make_response(req, 481), now)
            return
        if method == "INVITE" or method == "UPDATE":
            # RFC 3261 §12.2.2 / RFC 3311 §5.2: a target refresh may move the peer's Contact.
            target = contact_uri(req.get("Contact"))
            if target:
                leg.remote_target = target
        if method == "INVITE":
            self._relay_reinvite(call, leg, req, key, now)
            return
        self._relay_request(call, leg, req, key, now)

    def _relay_reinvite(self, call: Call, leg: Leg, req: Request, key: TransactionKey, now: float) -> None:
        if call.pending is not None or call.state is not CallState.CONFIRMED:
            # RFC 3261 §14.2: a re-INVITE while one is pending gets 491.
            self.core.respond(key, make_response(req, 491), now)
            return
        far = call.other(leg)
        assert far is not None
        new_key = self._send_far(call, far, "INVITE", req, now, "reinvite")
        out = self.tx.request(new_key)
        assert out is not None
        call.pending = PendingReinvite(
            leg, far, key, new_key, cseq=out.cseq[0], from_cseq=req.cseq[0], request=req
        )

    def _cancel_reinvite(self, call: Call, server_key: TransactionKey, now: float) -> None:
        """The originator of a relayed re-INVITE cancelled it: CANCEL the relayed one (RFC 3261
        §9: the far side answers it 487, which is mirrored back and ends the originator's
        transaction). Once the far side has answered, the CANCEL changes nothing (§9.2)."""
        pending = call.pending
        if pending is None or pending.server_key != server_key or pending.client_key is None:
            return
        if pending.ok_response is None:
            with contextlib.suppress(TransactionError):
                self.tx.cancel(
                    pending.client_key, now, [("Reason", 'SIP;cause=487;text="Request cancelled"')]
                )

    def _relay_request(self, call: Call, leg: Leg, req: Request, key: TransactionKey, now: float) -> None:
        far = call.other(leg)
        assert far is not None
        new_key = self._send_far(call, far, req.method, req, now, "relay")
        self._relay_map[new_key] = (key, req)

    def _send_far(
        self, call: Call, far: Leg, method: str, req: Request, now: float, kind: str
    ) -> TransactionKey:
        host, port = self.local_address(far.peer.transport)
        extra = [(n, v) for n, v in req.headers if n in RELAYED_HEADERS and n != "Content-Type"]
        out = build_in_dialog(
            far,
            method,
            via_host=_host(host),
            via_port=port,
            contact=f"<sip:sbc@{_host(host)}:{port}>",
            user_agent=self.user_agent,
            body=self._anchor(call, "b" if far is call.a else "a", req),
            content_type=req.get("Content-Type"),
            extra=extra,
        )
        dest = (
            far.peer
            if far is call.a and call.origin is None
            else target_address(far.remote_target or "", far.peer.transport, far.peer)
        )
        new_key = self.tx.send_request(out, dest, now)
        self._by_client_key[new_key] = (call, kind)
        return new_key

    def _reinvite_response(self, call: Call, key: TransactionKey, resp: Response, now: float) -> None:
        """A response to a relayed re-INVITE: mirrored to its originator. A 2xx waits for the
        originator's ACK (:meth:`_ack_far`); its retransmissions are mirrored again, or, once
        the ACK went out, answered by re-sending that ACK."""
        pending = call.pending
        if pending is None or pending.client_key != key:
            done = call.reinvite_ack
            if 200 <= resp.status < 300 and done is not None and done[0] == key:  # type: ignore[index]
                self.tx.send_stateless(done[1], done[2])  # type: ignore[index]
            return
        orig = pending.request
        if orig is None:
            return
        if resp.status < 200:
            if resp.status > 100:
                self.core.respond(pending.server_key, self._mirror(call, orig, resp, pending.from_leg), now)
            return
        if resp.status < 300:
            try:
                target = contact_uri(resp.get("Contact"))
            except SIPParseError as e:
                self._drop_response(pending.to_leg, e)
                return
            if target:
                pending.to_leg.remote_target = target  # target refresh (RFC 3261 §12.2.1.2)
        out = self._mirror(call, orig, resp, pending.from_leg)
        self.core.respond(pending.server_key, out, now)
        if resp.status >= 300:
            call.pending = None
            return
        if pending.ok_response is None:
            # The TU retransmits a 2xx to INVITE until the ACK (RFC 3261 §13.3.1.4).
            pending.ok_out = out
            pending.ok_interval = self.tx.config.t1
            pending.ok_next = now + pending.ok_interval
            pending.ok_give_up = now + self.tx.config.timeout
            self._at(pending.ok_next, call, "reinvite2xx")
        pending.ok_response = resp
        self._session_refreshed(call, resp, now)

    def _retransmit_reinvite_2xx(self, call: Call, now: float) -> None:
        """Re-send the mirrored 2xx of a relayed re-INVITE; without an ACK by 64*T1 the far
        side's 2xx is ACKed by the SBC and the call is ended with BYE (RFC 3261 §13.3.1.4),
        rather than every later re-INVITE getting 491 for ever."""
        pending = call.pending
        if pending is None or pending.ok_out is None or pending.ok_next is None:
            return
        if pending.ok_give_up is not None and now >= pending.ok_give_up:
            with contextlib.suppress(Exception):
                self._ack_far(call, pending, pending.request, now, body=b"")
            call.pending = None
            self._hangup(call, now, by="sbc", reason="no ACK for re-INVITE")
            return
        self.tx.send_stateless(pending.ok_out, pending.from_leg.peer)  # type: ignore[arg-type]
        pending.ok_interval = min(pending.ok_interval * 2, self.tx.config.t2)
        pending.ok_next = min(now + pending.ok_interval, pending.ok_give_up or now + pending.ok_interval)
        self._at(pending.ok_next, call, "reinvite2xx")

    def _ack_far(
        self,
        call: Call,
        pending: PendingReinvite,
        ack: Request | Response,
        now: float,
        *,
        body: bytes | None = None,
    ) -> None:
        """ACK the far leg's 2xx to a relayed re-INVITE: with the originator's ACK (its body
        anchored), or with ``body`` when the SBC ACKs on its own (``ack`` is then unused: the
        originator's re-INVITE is passed)."""
        far = pending.to_leg
        host, port = self.local_address(far.peer.transport)
        if body is None:
            body = self._anchor(call, "a" if pending.from_leg is call.a else "b", ack)
            ctype = ack.get("Content-Type")
        else:
            ctype = None
        out = build_in_dialog(
            far,
            "ACK",
            via_host=_host(host),
            via_port=port,
            contact="",
            user_agent=self.user_agent,
            body=body,
            content_type=ctype if body else None,
            extra=None,
            cseq=pending.cseq,
        )
        dest = (
            far.peer
            if far is call.a and call.origin is None
            else target_address(far.remote_target or "", far.peer.transport, far.peer)
        )
        self.tx.send_stateless(out, dest)
        call.reinvite_ack = (pending.client_key, out, dest)
        call.pending = None

    def _relay_response(self, call: Call, key: TransactionKey, resp: Response, now: float) -> None:
        orig: Request
        entry: tuple = self._relay_map.get(key)
        if entry is None:
            return
        server_key, orig = entry
        if resp.status < 200 and resp.status == 100:
            return
        entry_leg: tuple = self._dialogs.get((orig.call_id, orig.to_tag or ""))
        leg: Leg = entry_leg[1] if entry_leg else call.a
        self.core.respond(server_key, self._mirror(call, orig, resp, leg), now)
        if resp.status >= 200:
            self._relay_map.pop(key, None)
            if orig.method == "UPDATE" and resp.status < 300:
                self._session_refreshed(call, resp, now)
            elif resp.status in DIALOG_GONE_CODES and call.state is not CallState.ENDED:
                # RFC 5057 §5.1: 481 (or 408) to an in-dialog request means the far side's
                # dialog is gone: end the call rather than leave a half-dead one running.
                self._hangup(call, now, by="sbc", reason=f"far side answered {resp.status} in dialog")

    def _mirror(self, call: Call, orig: Request, resp: Response, leg: Leg) -> Response:
        """``resp`` from the far leg re-made as the answer to ``orig`` on ``leg``."""
        host, port = self.local_address(leg.peer.transport)
        headers = [(n, v) for n, v in resp.headers if n in RELAYED_HEADERS and n != "Content-Type"]
        if orig.method == "INVITE":
            headers.append(("Contact", f"<sip:sbc@{_host(host)}:{port}>"))
        body = self._anchor(call, "b" if leg is call.a else "a", resp)
        if body:
            headers.append(("Content-Type", resp.get("Content-Type") or "application/sdp"))
        return make_response(orig, resp.status, resp.reason, headers=headers, body=body)

    def _anchor(self, call: Call, side: str, msg: Request | Response) -> bytes:
        """The body of ``msg`` (from ``side``: 'a' caller, 'b' callee) for the other side: SDP
        rewritten to the relay when media is anchored, alone or as a part of a multipart body
        (SIP-I), anything else unchanged.
        Raises MediaError when the SDP cannot be anchored."""
        body = msg.body
        ctype: str = msg.content_type
        if self.media is None or not body or ctype is None:
            return body
        if ctype != "application/sdp" and not ctype.startswith("multipart/"):
            return body
        if call.media is None:
            call.media = CallMedia()
        media: CallMedia = call.media
        if ctype == "application/sdp":
            return self.media.rewrite(media, side, body, call)
        return self._anchor_multipart(call, side, msg, body)

    def _anchor_multipart(self, call: Call, side: str, msg: Request | Response, body: bytes) -> bytes:
        """:meth:`_anchor` of a multipart body (apart: its lambda would make _anchor a closure)."""
        media, manager = call.media, self.media
        try:  # SIP-I and the like: the SDP part is anchored, the others relayed as they are
            return rewrite_sdp(
                msg.get("Content-Type") or "", body, lambda sdp: manager.rewrite(media, side, sdp, call)
            )
        except SIPParseError as e:
            raise MediaError(f"bad multipart body: {e.reason}", 400) from None

    def on_media_events(self, events: list, now: float) -> None:
        """Relay events: a media timeout ends its answered call (BYE both legs, CDR says
        "media timeout"); DTMF digits are counted."""
        if self.media is None:
            return
        for event in events:
            call = self.media.owner(event.session_id)
            if not isinstance(call, Call) or call.state is CallState.ENDED:
                continue
            if isinstance(event, MediaTimeout):
                if call.answered_at is not None:
                    log.info("call %s: no RTP for %.1f s", call.id, event.idle)
                    self._hangup(call, now, by="sbc", reason="media timeout")
            elif isinstance(event, DtmfEvent):
                side = "caller" if event.leg == 0 else "callee"
                metrics.DTMF_EVENTS.labels(side).inc()
                if len(call.dtmf) < MAX_CDR_DTMF:
                    call.dtmf.append({
                        "digit": event.digit, "from": side, "duration_ms": round(event.duration_ms, 1),
                        "at": round(event.at + self.wall_offset, 3) if event.at else None,
                    })  # fmt: skip
                log.debug("call %s: DTMF %s from the %s", call.id, event.digit, side)

    def _fail_pending(self, call: Call, now: float) -> None:
        pending, call.pending = call.pending, None
        if pending is None:
            return
        orig = pending.request
        if orig is not None and pending.ok_response is None:
            with contextlib.suppress(TransactionError):
                self.core.respond(pending.server_key, make_response(orig, 408), now)

    # -- ending ---------------------------------------------------------------------------------

    def _send_bye(self, call: Call, leg: Leg, now: float) -> None:
        host, port = self.local_address(leg.peer.transport)
        req = build_in_dialog(
            leg,
            "BYE",
            via_host=_host(host),
            via_port=port,
            contact="",
            user_agent=self.user_agent,
        )
        dest = (
            leg.peer
            if leg is call.a and call.origin is None
            else target_address(leg.remote_target or "", leg.peer.transport, leg.peer)
        )
        key = self.tx.send_request(req, dest, now)
        self._by_client_key[key] = (call, "bye")

    def _hangup(self, call: Call, now: float, by: str, reason: str) -> None:
        """The SBC ends an established or answered call: BYE both legs (the callee's 2xx is
        ACKed first when the caller never ACKed ours)."""
        if call.state is CallState.ENDED:
            return
        if call.state is CallState.ANSWERED:
            self._ack_b(call, b"", None, now)
        for leg in (call.a, call.b):
            if leg is call.a and call.origin is not None and not call.origin.bridged:
                self._cancel_bridge(call, now)
            elif leg is not None and (leg is call.a or leg.remote_tag):
                self._send_bye(call, leg, now)
        self._finish(call, now, 200, hangup_by=by, reason=reason)

    def _fail_call(self, call: Call, now: float, code, end_reason: str = "failed") -> None:
        """No attempt succeeded: give the caller ``code`` (the CDR's end reason: ``end_reason``).

        A redirect (3xx) is not passed on: its Contact would reveal the far side and invite
        the caller around the SBC, and following it could reach any destination (toll fraud).
        The caller gets 480 instead; the CDR's attempts keep the 3xx."""
        if 300 <= code < 400:
            code = CODE_REDIRECT_REFUSED
        a = call.a
        if not call.a_final_sent and a.invite is not None:
            self.core.respond(a.invite_key, make_response(a.invite, code, None, to_tag=a.local_tag), now)
            call.a_final_sent = True
        self._finish(call, now, code, hangup_by=None, reason=end_reason)

    def _finish(self, call: Call, now: float, code, hangup_by: str | None, reason: str) -> None:
        """End ``call`` for good: forget it, release its limits, emit its CDR (exactly once).

        Its dialogs are forgotten at once: a late in-dialog request gets 481 from the core,
        retransmissions are answered by the transaction layer, and client transactions still
        running (BYEs, CANCELs) keep a reference to the call until they end."""
        if call.state is CallState.ENDED:
            return
        answered = call.answered_at is not None
        call.state = CallState.ENDED
        call.ended_at = now
        call.final_code = 200 if answered else code
        # Before an answer only the caller can hang up (CANCEL); a failure is nobody's hang-up.
        if not answered and hangup_by != "api":
            hangup_by = "caller" if call.caller_cancelled else None
        call.hangup_by = hangup_by
        call.end_reason = reason
        if self.media is not None and call.media is not None:
            try:
                call.media_stats = self.media.free(call.media)
            except Exception:
                log.exception("call %s: freeing its media failed", call.id)
        self._stale_timers += call.timer_entries
        if call.pending is not None:
            with contextlib.suppress(Exception):
                self._fail_pending(call, now)  # its originator still needs a final response
        self.calls.pop(call.id, None)
        self._by_server_key.pop(call.a.invite_key, None)  # type: ignore[arg-type]
        for leg in (call.a, call.b):
            if leg is not None:
                self._dialogs.pop((leg.call_id, leg.local_tag), None)
        scopes = [*call.scopes, *([call.carrier_scope] if call.carrier_scope else [])]
        call.scopes, call.carrier_scope = (), None
        if scopes:
            try:
                self.calls_in_progress.release([s.key for s in scopes])
            except ValueError:
                log.exception("call %s: limits released twice", call.id)
        self._emit_cdr(call)
        # What only the CDR needed goes now: the ended call may stay referenced for another
        # 32 s (Timer M: an INVITE key answers a 2xx retransmission or a late fork's 2xx),
        # which needs neither. The CDR holds its own copy of the attempts.
        call.media_stats = None
        call.attempts.clear()

    def _isolation_failed(self, call: Call | None, now: float, answer: tuple | None) -> None:
        """The handler of one piece of ``call``'s handling raised ``Exception`` (a bug): end that
        call alone (:meth:`_abort`), so the exception never reaches the core or another call.
        With ``answer`` (a server transaction and its request), that request then gets 500 if it
        has no final response yet. Called from ``except Exception:`` around each such piece (a
        try statement: a context manager object per message cost a call to create it and two
        to enter and leave it)."""
        log.exception("call %s: unexpected error, ending the call", call.id if call else "-")
        if call is not None:
            self._abort(call, now)
        if answer is not None and answer[1].method != "ACK":
            key, req = answer
            with contextlib.suppress(Exception):
                self.core.respond(key, make_response(req, CODE_INTERNAL_ERROR), now)

    def _abort(self, call: Call, now: float, reason: str = "internal error") -> None:
        """Tear ``call`` down after something went wrong on the SBC's side.

        The caller gets 500 if it has no final response yet, else a BYE; the callee gets a
        CANCEL while unanswered, else an ACK (if owed) and a BYE. The call ends with a CDR
        (hangup by the SBC when it was answered) and its limits are released. Each step is
        best effort; this never raises."""
        if call.state is CallState.ENDED:
            return
        a, b = call.a, call.b
        with contextlib.suppress(Exception):
            refused = False
            if not call.a_final_sent and a.invite is not None:
                response = make_response(a.invite, CODE_INTERNAL_ERROR, to_tag=a.local_tag)
                with contextlib.suppress(TransactionError):  # a 2xx may have gone out already
                    self.core.respond(a.invite_key, response, now)
                    refused = call.a_final_sent = True
            if not refused and (call.a_2xx is not None or call.answered_at is not None):
                self._send_bye(call, a, now)
        if b is not None and call.answered_at is not None:
            with contextlib.suppress(Exception):
                self._ack_b(call, b"", None, now)
            with contextlib.suppress(Exception):
                self._send_bye(call, b, now)
        elif b is not None and b.invite_key is not None:
            call.dead_b_keys.add(b.invite_key)
            with contextlib.suppress(Exception):
                self.tx.cancel(b.invite_key, now, [("Reason", 'SIP;cause=500;text="SBC error"')])
        try:
            self._finish(call, now, CODE_INTERNAL_ERROR, hangup_by="sbc", reason=reason)
        except Exception:
            log.exception("call %s: could not finish cleanly", call.id)
            call.state = CallState.ENDED
            self.calls.pop(call.id, None)

    def _emit_cdr(self, call: Call) -> None:
        offset = self.wall_offset
        answered = call.answered_at is not None
        code = call.final_code or 500
        if answered:
            disposition = "answered"
        elif code == 487 or call.caller_cancelled:
            disposition = "cancelled"
        elif code in (486, 600):
            disposition = "busy"
        elif code in (408, 480):
            disposition = "no_answer"
        elif 400 <= code < 500 or code >= 600:
            disposition = "rejected"
        else:
            disposition = "failed"
        try:
            record = CdrRecord(
                call_id=call.a.call_id,
                direction="originated" if call.origin is not None else call.direction,
                caller=call.caller or "anonymous",
                callee=call.callee or "unknown",
                setup_time=_wall(call.setup_at, offset),
                end_time=_wall(call.ended_at or call.setup_at, offset),
                disposition=disposition,
                sip_code=200 if answered else code,
                answer_time=_wall(call.answered_at, offset) if answered else None,
                hangup_by=call.hangup_by,
                customer=call.customer,
                carrier=call.carrier,
                trunk=call.trunk,
                gateway=call.gateway,
                attempts=tuple([CdrAttempt(c, g, code_, r) for c, g, code_, r in call.attempts]),
                end_reason=call.end_reason[:64],
                media={
                    **({"streams": call.media_stats} if call.media_stats else {}),
                    **({"dtmf": call.dtmf} if call.dtmf else {}),
                },
            )
        except ValueError:
            log.exception("could not build the CDR of call %s", call.id)
            return
        metrics.ENDED_BY_DISPOSITION[call.direction, disposition].inc()
        try:
            self.cdr_sink(record)
        except Exception:
            log.exception("CDR sink failed for call %s", call.id)

    # -- call control for the API (sbc.b2bua.control.CallControl) -------------------------------

    def live_calls(self, customer: str | None = None) -> list[LiveCall]:
        """Calls in progress, oldest first; only ``customer``'s when given."""
        calls = [c for c in self.calls.values() if customer is None or c.customer == customer]
        calls.sort(key=lambda c: c.setup_at)
        return [self._live(c) for c in calls]

    def find_call(self, call_id: str, customer: str | None = None) -> Call | None:
        """The live call ``call_id`` (the SBC's id), if it exists and belongs to ``customer``."""
        call = self.calls.get(call_id)
        if call is None or (customer is not None and call.customer != customer):
            return None
        return call

    def hangup(self, call_id: str, now: float, customer: str | None = None) -> bool:
        """End a live call on behalf of the API: BYE to answered legs, CANCEL to ringing ones,
        487 to a caller still waiting. Returns False when there is no such call (for
        ``customer``). The CDR says ``hangup_by="api"``."""
        call = self.find_call(call_id, customer)
        if call is None:
            return False
        try:
            if call.answered_at is not None:
                self._hangup(call, now, by="api", reason="hung up through the API")
                return True
            a = call.a
            if not call.a_final_sent and a.invite is not None:
                self.core.respond(a.invite_key, make_response(a.invite, 487, to_tag=a.local_tag), now)
                call.a_final_sent = True
            b = call.b
            if b is not None and b.invite_key is not None:
                self.tx.cancel(b.invite_key, now, [("Reason", 'SIP;cause=487;text="Hung up by API"')])
                call.dead_b_keys.add(b.invite_key)
                self._by_client_key[b.invite_key] = (call, "invite")
            call.end_reason = "hung up through the API"
            self._finish(call, now, 487, hangup_by="api", reason="hung up through the API")
        except Exception:
            self._isolation_failed(call, now, None)
        return True

    def originate(
        self,
        *,
        caller: str,
        callee: str,
        bridge_to: str,
        now: float,
        carrier: str | None = None,
        customer: str | None = None,
    ) -> LiveCall:
        """Place a call to ``callee`` and bridge it to ``bridge_to`` when answered (see
        :class:`sbc.b2bua.control.CallControl`). Raises OriginateError before any SIP is sent:
        404 unknown customer, carrier or trunk; 422 unusable number or URI; 503 no media
        anchoring, no route, or a limit reached."""
        if self.media is None:
            raise OriginateError(503, "originating calls needs media anchoring (SBC_MEDIA_ANCHORING=true)")
        if not _CALLER_RE.fullmatch(caller or ""):
            raise OriginateError(422, f"caller {caller!r} is not a usable calling number or user")
        e164 = normalize_e164(callee, self.config.default_country_code)
        if e164 is None:
            raise OriginateError(422, f"callee {callee!r} is not a phone number")
        tables = self.tables
        customer_obj = None
        if customer is not None:
            customer_obj = tables.customers.get(customer)
            if customer_obj is None:
                raise OriginateError(404, f"no customer {customer!r}")
        targets = self._bridge_targets(bridge_to, e164, customer)
        bridge_uri, bridge_dest = targets[0]
        if carrier is not None:
            carrier_obj = tables.carriers.get(carrier)
            if carrier_obj is None:
                raise OriginateError(404, f"no carrier {carrier!r}")
            plan = build_carrier_plan(carrier_obj, e164, self.rng, self.health)
        else:
            plan = build_outbound_plan(tables, e164, customer, now + self.wall_offset, self.rng, self.health)
        if not plan:
            raise OriginateError(503, f"no route to {e164}")
        scopes = [LimitScope("customer", customer, customer_obj.max_calls)] if customer_obj else []
        hit = check_limits(scopes, now, self.rates, self.calls_in_progress) if scopes else None
        if hit is not None:
            metrics.LIMIT_REJECTIONS_BY_SCOPE[hit.kind].inc()
            raise OriginateError(503, f"{hit.kind} {hit.limit} limit reached")
        a = self._bridge_leg(e164, bridge_uri, bridge_dest)
        call = Call(id=new_call_ref(), direction="outbound", a=a, caller=caller, callee=e164, setup_at=now)
        call.customer = customer
        call.origin = Origin(bridge_uri, bridge_dest, fallbacks=targets[1:])
        call.scopes = tuple(scopes)
        self.calls[call.id] = call
        metrics.ATTEMPTS_BY_DIRECTION[call.direction].inc()
        call.failover = FailoverState(plan)
        try:
            self._next_attempt(call, now)
        except Exception:
            self._isolation_failed(call, now, None)
        return self._live(call)

    def _bridge_targets(self, bridge_to: str, e164: str, customer: str | None) -> list[tuple[str, Address]]:
        """Request-URIs and addresses of ``bridge_to``, in the order to try them:
        ``trunk:CUSTOMER/NAME`` (its targets by priority then weight, the callee's number as user;
        names not resolved yet are left out) or a ``sip:`` URI with an IP address."""
        if bridge_to.startswith("trunk:"):
            owner, _, name = bridge_to[len("trunk:") :].partition("/")
            trunk = self.tables.numbers.trunk(owner, name)
            if trunk is None or (customer is not None and owner != customer):
                raise OriginateError(404, f"no trunk {bridge_to[len('trunk:') :]!r}")
            uris = [_inbound_request_uri(t.uri, e164) for t in build_inbound_plan(trunk, self.rng)]
            if not uris:
                raise OriginateError(422, f"trunk {owner}/{name} has no targets")
        elif bridge_to.startswith(("sip:", "sips:")):
            uris = [bridge_to]
        else:
            raise OriginateError(422, "bridge_to must be trunk:CUSTOMER/NAME or a sip: URI")
        found: list[tuple[str, Address]] = []
        for uri in uris:
            parsed = parse_target(uri)
            if parsed is None:
                raise OriginateError(422, f"{uri!r} is not a SIP URI")
            dest = self._destination(*parsed)
            if dest is not None:
                found.append((uri, dest))
        if not found:
            raise OriginateError(422, f"{uris[0]!r}: host does not resolve (yet)")
        return found

    def _bridge_leg(self, e164: str, bridge_uri: str, bridge_dest: Address) -> Leg:
        """A fresh client leg towards a bridge target, calling from the callee's number."""
        host, _port = self.local_address(bridge_dest.transport)
        bridge_user = bridge_uri.split(":", 1)[1].split("@", 1)[0] if "@" in bridge_uri else e164
        return Leg(
            call_id=new_call_id(_host(host)),
            local_tag=new_tag(),
            local_uri=f"<sip:{e164}@{_host(host)}>",
            remote_uri=f"<sip:{bridge_user}@{_host(bridge_dest.host)}>",
            peer=bridge_dest,
            remote_target=bridge_uri,
        )

    def _destination(self, host: str, port, transport: str) -> Address | None:
        """Where to send to ``host``: itself when an IP literal, else its first resolved address
        from the DNS cache; None when the name is not resolved (the cache then queues it)."""
        if _is_ip_literal(host):
            return Address(transport, host.strip("[]"), port or (5061 if transport == "tls" else 5060))
        if self.resolve is None:
            return None
        found = self.resolve(host, port, transport)
        if not found:
            return None
        return Address(transport, found[0][0], found[0][1])

    def _origin_offer(self, call: Call) -> bytes:
        """The SBC's own SDP offer for an originated call's callee: G.711 and RFC 4733 events on
        relay ports. The bridge side is not known yet: its leg points at the discard port of the
        SBC's own address (RFC 863) until the bridge target answers. Raises MediaError."""
        assert self.media is not None
        ip = self.media.advertised_ip
        family = "IP6" if ":" in ip else "IP4"
        sdp = (
            f"v=0\r\no=sbc 1 1 IN {family} {ip}\r\ns=-\r\nc=IN {family} {ip}\r\nt=0 0\r\n"
            "m=audio 9 RTP/AVP 0 8 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:8 PCMA/8000\r\n"
            "a=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-16\r\na=ptime:20\r\na=sendrecv\r\n"
        ).encode()
        if call.media is None:
            call.media = CallMedia()
        return self.media.rewrite(call.media, "a", sdp, call)

    def _place_bridge(self, call: Call, answer: Response, now: float) -> None:
        """The callee answered an originated call: INVITE the bridge target, offering the
        callee's media (its answer, anchored) so the two talk through the relay."""
        origin = call.origin
        assert origin is not None
        a = call.a
        host, port = self.local_address(origin.bridge_dest.transport)
        try:
            offer = self._anchor(call, "b", answer)
        except MediaError as e:
            self._bridge_failed(call, e.status, e.reason, now)
            return
        req = build_in_dialog(
            a,
            "INVITE",
            via_host=_host(host),
            via_port=port,
            contact=f"<sip:sbc@{_host(host)}:{port}>",
            user_agent=self.user_agent,
            body=offer,
            content_type="application/sdp" if offer else None,
        )
        a.invite = req
        key = self.tx.send_request(req, origin.bridge_dest, now)
        origin.invite_key = a.invite_key = key
        self._by_client_key[key] = (call, "bridge")
        self._dialogs[(a.call_id, a.local_tag)] = (call, a)

    def _bridge_response(self, call: Call, key: TransactionKey, resp: Response, now: float) -> None:
        """A response from the bridge target of an originated call."""
        origin = call.origin
        a = call.a
        if origin is None or key != origin.invite_key:
            return
        status = resp.status
        if 200 <= status < 300 and origin.bridged:
            if resp.to_tag == a.remote_tag and origin.a_ack is not None:
                self.tx.send_stateless(*origin.a_ack)  # our ACK was lost
            elif resp.to_tag != a.remote_tag:
                self._kill_late_answer(call, key, resp, now)  # a second fork answered
            return
        if call.state is CallState.ENDED:
            if 200 <= status < 300:
                self._kill_late_answer(call, key, resp, now)
            return
        if status < 200:
            if status > 100:
                with contextlib.suppress(SIPParseError):
                    self._learn_remote(a, resp)
            return
        if status >= 300:
            self._bridge_failed(call, status, resp.reason, now)
            return
        try:
            self._learn_remote(a, resp)
        except SIPParseError as e:
            self._drop_response(a, e)
            return
        a.remote_cseq = 0
        with contextlib.suppress(MediaError):
            self._anchor(call, "a", resp)  # points the relay at the bridge target's media
        ack = build_in_dialog(
            a,
            "ACK",
            via_host=_host(self.local_address(a.peer.transport)[0]),
            via_port=self.local_address(a.peer.transport)[1],
            contact="",
            user_agent=self.user_agent,
            body=b"",
            content_type=None,
            extra=None,
            cseq=a.invite.cseq[0] if a.invite is not None else None,
        )
        dest = target_address(a.remote_target or "", a.peer.transport, a.peer)
        origin.a_ack = (ack, dest)
        origin.bridged = True
        self.tx.send_stateless(ack, dest)
        call.state = CallState.CONFIRMED

    def _bridge_failed(self, call: Call, code, reason: str, now: float) -> None:
        """The bridge target refused or never answered: the trunk's next target is called when
        there is one and the failure allows it (no answer, transport error, 5xx: the trunk's
        failover rule for inbound calls), else the answered callee gets a BYE."""
        if call.state is CallState.ENDED:
            return
        call.attempts.append((None, f"{call.a.peer.host}:{call.a.peer.port}", code, f"bridge: {reason}"))
        origin = call.origin
        if (
            origin is not None
            and origin.fallbacks
            and origin.invite_key is not None  # an INVITE was sent (not a media refusal before it)
            and not origin.bridged
            and call.b_2xx is not None
            and (code == CODE_TIMEOUT or 500 <= code < 600)
        ):
            old = call.a
            self._dialogs.pop((old.call_id, old.local_tag), None)
            origin.bridge_uri, origin.bridge_dest = origin.fallbacks.pop(0)
            origin.invite_key = None
            call.a = self._bridge_leg(call.callee, origin.bridge_uri, origin.bridge_dest)
            self._place_bridge(call, call.b_2xx, now)  # type: ignore[arg-type]
            return
        b = call.b
        if b is not None:
            self._send_bye(call, b, now)
        self._finish(call, now, code, hangup_by="sbc", reason=f"bridge target answered {code}")

    def _cancel_bridge(self, call: Call, now: float) -> None:
        """Stop ringing the bridge target of an originated call (its INVITE is still running)."""
        origin = call.origin
        if origin is not None and origin.invite_key is not None and not origin.bridged:
            with contextlib.suppress(TransactionError):
                self.tx.cancel(origin.invite_key, now, [("Reason", 'SIP;cause=487;text="Call ended"')])

    def _live(self, call: Call) -> LiveCall:
        """The API's view of ``call``."""

        def leg_view(side: str, leg: Leg | None) -> LiveLeg | None:
            if leg is None or (side == "a" and call.origin is not None and leg.invite is None):
                return None
            confirmed = leg.remote_tag is not None and (
                call.answered_at is not None if side == "b" else call.origin is None or call.origin.bridged
            )
            return LiveLeg(
                side=side,
                call_id=leg.call_id,
                peer=f"{leg.peer.host}:{leg.peer.port}",
                remote_uri=leg.remote_uri,
                state="ended" if call.state is CallState.ENDED else "confirmed" if confirmed else "early",
            )

        legs = tuple(v for v in (leg_view("a", call.a), leg_view("b", call.b)) if v is not None)
        media: dict = {}
        if self.media is not None and call.media is not None and not call.media.freed:
            with contextlib.suppress(Exception):
                media = self.media.stats(call.media)
        return LiveCall(
            id=call.id,
            direction="originated" if call.origin is not None else call.direction,
            state=str(call.state),
            caller=call.caller,
            callee=call.callee,
            customer=call.customer,
            carrier=call.carrier,
            trunk=call.trunk,
            gateway=call.gateway,
            setup_at=call.setup_at + self.wall_offset,
            answered_at=call.answered_at + self.wall_offset if call.answered_at is not None else None,
            legs=legs,
            attempts=tuple(
                {"carrier": c, "gateway": g, "code": code, "reason": r} for c, g, code, r in call.attempts
            ),
            media=media,
        )

    # -- helpers --------------------------------------------------------------------------------

    def tx_source(self, key: TransactionKey) -> Address:
        """The address a server transaction's request came from."""
        tx = self.tx._servers.get(key)  # noqa: SLF001
        assert tx is not None
        return tx.peer


# A calling number or user for an originated call's From: what a SIP user part may hold
# without escaping, bounded like a dialled number.
_CALLER_RE = re.compile(r"[A-Za-z0-9+*#._-]{1,64}")


def _user_or_empty(value: str | None) -> str:
    """The user part of a name-addr, or "" when it does not parse (for a CDR's callee)."""
    try:
        return display_and_user(value or "")[1] or ""
    except SIPParseError:
        return ""


def _wall(t, offset) -> datetime:
    """Monotonic ``t`` as a wall-clock UTC time, ``offset`` being the wall clock minus ``now``."""
    return datetime.fromtimestamp(t + offset, UTC)


def _host(host: str) -> str:
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


def _quoted(display: str) -> str:
    """``display`` as an RFC 3261 §25.1 quoted-string (backslash and quote escaped)."""
    return '"' + display.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _inbound_request_uri(target: str, e164: str) -> str:
    """The Request-URI for delivering ``e164`` to a trunk target: the target's user if it has
    one, else the dialled number."""
    scheme, _, rest = target.partition(":")
    if "@" in rest.split(";", 1)[0]:
        return target
    return f"{scheme}:{e164}@{rest}"


def _best_code(codes: list[int]) -> int:
    """RFC 3261 §16.7: 6xx wins, else the lowest class; 503 is not passed back (becomes 500)."""
    six = [c for c in codes if c >= 600]
    if six:
        return six[0]
    best = min(codes, key=lambda c: c // 100)
    return 500 if best == 503 else best
