"""RFC 3261 §17 transactions, updated by RFC 6026, as a sans-I/O state machine.

:class:`TransactionLayer` holds every client and server transaction of one SIP endpoint. It never
touches a socket or the clock: the I/O layer feeds it parsed messages with ``receive(msg, source,
now)``, asks ``next_timer()`` when to wake it and calls ``handle_timer(now)`` then, and drains
``pop_outgoing()`` for the bytes to send (first sends and retransmissions alike). What the
transaction user (TU, the B2BUA) must know comes back as events from :mod:`sbc.sip.events`.

The four state machines are data: ``*_TABLE`` maps ``(state, input)`` to ``(next state, actions,
timers to start)``; :meth:`TransactionLayer._apply` is the only code that moves between states.
An input with no row in the table is absorbed (a retransmission, a stale timer, a late response).

Timers live in one heap of ``(when, seq, transaction, timer)`` entries with lazy deletion: each
transaction keeps the deadline of its one retransmission timer (A, E, G, or the 100 Trying delay)
and of its one expiry timer (B, D, F, H, I, J, K, L, M); a heap entry whose deadline no longer
matches, or whose timer means nothing in the transaction's state, is dropped when it surfaces. The
heap is compacted when more than half of it is known to be stale.
"""

from __future__ import annotations

import heapq
import itertools
import re
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum

from .events import (
    AckReceived,
    Address,
    Event,
    Outgoing,
    RequestReceived,
    ResponseReceived,
    StrayResponse,
    TransactionKey,
    TransactionTerminated,
    TransactionTimeout,
    TransactionTransportError,
)
from .headers import via_view
from .message import Request, Response, make_response
from .randomness import random_hex
from .timers import TimerConfig

# RFC 3261 §8.1.1.7: a branch starting with this cookie was made by an RFC 3261 element and is
# unique; anything else (RFC 4475 §3.1.2.16 badbranch: the bare cookie) gets RFC 2543 matching.
MAGIC_COOKIE = "z9hG4bK"
_COOKIE_LOWER = MAGIC_COOKIE.lower()
_COOKIE_LEN = len(MAGIC_COOKIE)
# RFC 3261 §8.1.1.6: Max-Forwards SHOULD be 70 in requests the element originates (ACK, CANCEL).
MAX_FORWARDS_DEFAULT = 70
# Random octets after the magic cookie in branches made by make_branch(): 64 bits, as Kamailio.
BRANCH_RANDOM_BYTES = 8
# Compact the timer heap once stale entries outnumber live ones and the heap is at least this big
# (below it a compaction costs more than the stale entries do).
HEAP_COMPACT_MIN = 4096

# The common form of a Via's protocol and sent-by; anything else goes to headers.parse_via.
_SENT_BY_RE = re.compile(
    r"SIP/2\.0/[A-Za-z]+ ([A-Za-z0-9.\-]+|\[[0-9A-Fa-f:.]+\])(?::([0-9]{1,5}))?[ \t]*(?:;|\Z)"
)


class Kind(StrEnum):
    """Which of the four RFC 3261 §17 state machines a transaction runs."""

    INVITE_CLIENT = "INVITE client"
    NON_INVITE_CLIENT = "non-INVITE client"
    INVITE_SERVER = "INVITE server"
    NON_INVITE_SERVER = "non-INVITE server"


class State(StrEnum):
    """Transaction states (RFC 3261 figures 5-8; Accepted from RFC 6026 figures 3 and 5)."""

    CALLING = "Calling"
    TRYING = "Trying"
    PROCEEDING = "Proceeding"
    COMPLETED = "Completed"
    CONFIRMED = "Confirmed"
    ACCEPTED = "Accepted"
    TERMINATED = "Terminated"


class Input(StrEnum):
    """What can happen to a transaction: a message, a TU request, a timer, a transport error."""

    RESPONSE_1XX = "1xx received"
    RESPONSE_2XX = "2xx received"
    RESPONSE_FINAL = "300-699 received"
    REQUEST = "request retransmission received"
    ACK = "ACK received"
    SEND_1XX = "TU sends 1xx"
    SEND_2XX = "TU sends 2xx"
    SEND_FINAL = "TU sends 300-699"
    TRANSPORT_ERROR = "transport error"
    TIMER_A = "A"
    TIMER_B = "B"
    TIMER_D = "D"
    TIMER_E = "E"
    TIMER_F = "F"
    TIMER_G = "G"
    TIMER_H = "H"
    TIMER_I = "I"
    TIMER_J = "J"
    TIMER_K = "K"
    TIMER_L = "L"
    TIMER_M = "M"
    TIMER_100 = "100 Trying delay"


class Action(StrEnum):
    """What a transition does, in the order its row lists them."""

    PASS_UP = "pass the response to the TU"
    PASS_ACK = "pass the ACK to the TU"
    SEND = "send the TU's response"
    RESEND = "re-send the last response"
    SEND_ACK = "build and send the ACK for a non-2xx final"
    RESEND_ACK = "re-send the ACK"
    SEND_TRYING = "send 100 Trying unless the TU has responded"
    RETRANSMIT_DOUBLE = "retransmit, double the interval"
    RETRANSMIT_CAPPED = "retransmit, double the interval up to T2"
    RETRANSMIT_T2 = "retransmit, interval T2"
    SEND_PENDING_CANCEL = "send the CANCEL deferred until a provisional"
    DROP_PENDING_CANCEL = "drop the deferred CANCEL"
    REPORT_TIMEOUT = "report TransactionTimeout"
    REPORT_TRANSPORT_ERROR = "report TransactionTransportError"


Transition = tuple[State, tuple[Action, ...], tuple[Input, ...]]
Table = dict[tuple[State, Input], Transition]

_S = State
_I = Input
_A = Action
_TERMINATE_ON_ERROR: Transition = (_S.TERMINATED, (_A.REPORT_TRANSPORT_ERROR,), ())

# RFC 3261 §17.1.1 figure 5, with RFC 6026 §7.2 figure 5 (2xx -> Accepted, Timer M).
INVITE_CLIENT_TABLE: Table = {
    (_S.CALLING, _I.TIMER_A): (_S.CALLING, (_A.RETRANSMIT_DOUBLE,), ()),
    (_S.CALLING, _I.TIMER_B): (_S.TERMINATED, (_A.REPORT_TIMEOUT,), ()),
    (_S.CALLING, _I.RESPONSE_1XX): (_S.PROCEEDING, (_A.PASS_UP, _A.SEND_PENDING_CANCEL), ()),
    (_S.CALLING, _I.RESPONSE_2XX): (_S.ACCEPTED, (_A.PASS_UP, _A.DROP_PENDING_CANCEL), (_I.TIMER_M,)),
    (_S.CALLING, _I.RESPONSE_FINAL): (
        _S.COMPLETED,
        (_A.PASS_UP, _A.SEND_ACK, _A.DROP_PENDING_CANCEL),
        (_I.TIMER_D,),
    ),
    (_S.CALLING, _I.TRANSPORT_ERROR): _TERMINATE_ON_ERROR,
    (_S.PROCEEDING, _I.RESPONSE_1XX): (_S.PROCEEDING, (_A.PASS_UP,), ()),
    (_S.PROCEEDING, _I.RESPONSE_2XX): (_S.ACCEPTED, (_A.PASS_UP,), (_I.TIMER_M,)),
    (_S.PROCEEDING, _I.RESPONSE_FINAL): (_S.COMPLETED, (_A.PASS_UP, _A.SEND_ACK), (_I.TIMER_D,)),
    (_S.PROCEEDING, _I.TRANSPORT_ERROR): _TERMINATE_ON_ERROR,
    (_S.COMPLETED, _I.RESPONSE_FINAL): (_S.COMPLETED, (_A.RESEND_ACK,), ()),
    # Not in figure 5: a 2xx from another fork after a non-2xx final (e.g. 487 then 200 when a
    # CANCEL raced an answer) goes up, because only the TU can ACK it and end that dialog with BYE.
    (_S.COMPLETED, _I.RESPONSE_2XX): (_S.COMPLETED, (_A.PASS_UP,), ()),
    (_S.COMPLETED, _I.TIMER_D): (_S.TERMINATED, (), ()),
    (_S.COMPLETED, _I.TRANSPORT_ERROR): _TERMINATE_ON_ERROR,
    (_S.ACCEPTED, _I.RESPONSE_2XX): (_S.ACCEPTED, (_A.PASS_UP,), ()),
    (_S.ACCEPTED, _I.TIMER_M): (_S.TERMINATED, (), ()),
    (_S.ACCEPTED, _I.TRANSPORT_ERROR): _TERMINATE_ON_ERROR,
}

# RFC 3261 §17.1.2 figure 6.
NON_INVITE_CLIENT_TABLE: Table = {
    (_S.TRYING, _I.TIMER_E): (_S.TRYING, (_A.RETRANSMIT_CAPPED,), ()),
    (_S.TRYING, _I.TIMER_F): (_S.TERMINATED, (_A.REPORT_TIMEOUT,), ()),
    (_S.TRYING, _I.RESPONSE_1XX): (_S.PROCEEDING, (_A.PASS_UP,), ()),
    (_S.TRYING, _I.RESPONSE_2XX): (_S.COMPLETED, (_A.PASS_UP,), (_I.TIMER_K,)),
    (_S.TRYING, _I.RESPONSE_FINAL): (_S.COMPLETED, (_A.PASS_UP,), (_I.TIMER_K,)),
    (_S.TRYING, _I.TRANSPORT_ERROR): _TERMINATE_ON_ERROR,
    (_S.PROCEEDING, _I.TIMER_E): (_S.PROCEEDING, (_A.RETRANSMIT_T2,), ()),
    (_S.PROCEEDING, _I.TIMER_F): (_S.TERMINATED, (_A.REPORT_TIMEOUT,), ()),
    (_S.PROCEEDING, _I.RESPONSE_1XX): (_S.PROCEEDING, (_A.PASS_UP,), ()),
    (_S.PROCEEDING, _I.RESPONSE_2XX): (_S.COMPLETED, (_A.PASS_UP,), (_I.TIMER_K,)),
    (_S.PROCEEDING, _I.RESPONSE_FINAL): (_S.COMPLETED, (_A.PASS_UP,), (_I.TIMER_K,)),
    (_S.PROCEEDING, _I.TRANSPORT_ERROR): _TERMINATE_ON_ERROR,
    (_S.COMPLETED, _I.TIMER_K): (_S.TERMINATED, (), ()),
    (_S.COMPLETED, _I.TRANSPORT_ERROR): _TERMINATE_ON_ERROR,
}

# RFC 3261 §17.2.1 figure 7, with RFC 6026 §7.1 figure 3 (2xx -> Accepted, Timer L; ACK and
# INVITE retransmissions in Accepted).
INVITE_SERVER_TABLE: Table = {
    (_S.PROCEEDING, _I.TIMER_100): (_S.PROCEEDING, (_A.SEND_TRYING,), ()),
    (_S.PROCEEDING, _I.REQUEST): (_S.PROCEEDING, (_A.RESEND,), ()),
    (_S.PROCEEDING, _I.SEND_1XX): (_S.PROCEEDING, (_A.SEND,), ()),
    (_S.PROCEEDING, _I.SEND_2XX): (_S.ACCEPTED, (_A.SEND,), (_I.TIMER_L,)),
    (_S.PROCEEDING, _I.SEND_FINAL): (_S.COMPLETED, (_A.SEND,), (_I.TIMER_G, _I.TIMER_H)),
    (_S.PROCEEDING, _I.TRANSPORT_ERROR): _TERMINATE_ON_ERROR,
    (_S.COMPLETED, _I.REQUEST): (_S.COMPLETED, (_A.RESEND,), ()),
    (_S.COMPLETED, _I.TIMER_G): (_S.COMPLETED, (_A.RETRANSMIT_CAPPED,), ()),
    (_S.COMPLETED, _I.TIMER_H): (_S.TERMINATED, (_A.REPORT_TIMEOUT,), ()),
    (_S.COMPLETED, _I.ACK): (_S.CONFIRMED, (), (_I.TIMER_I,)),
    (_S.COMPLETED, _I.TRANSPORT_ERROR): _TERMINATE_ON_ERROR,
    (_S.CONFIRMED, _I.TIMER_I): (_S.TERMINATED, (), ()),
    (_S.CONFIRMED, _I.TRANSPORT_ERROR): _TERMINATE_ON_ERROR,
    (_S.ACCEPTED, _I.SEND_2XX): (_S.ACCEPTED, (_A.SEND,), ()),
    (_S.ACCEPTED, _I.ACK): (_S.ACCEPTED, (_A.PASS_ACK,), ()),
    (_S.ACCEPTED, _I.TIMER_L): (_S.TERMINATED, (), ()),
    (_S.ACCEPTED, _I.TRANSPORT_ERROR): _TERMINATE_ON_ERROR,
}

# RFC 3261 §17.2.2 figure 8.
NON_INVITE_SERVER_TABLE: Table = {
    (_S.TRYING, _I.SEND_1XX): (_S.PROCEEDING, (_A.SEND,), ()),
    (_S.TRYING, _I.SEND_2XX): (_S.COMPLETED, (_A.SEND,), (_I.TIMER_J,)),
    (_S.TRYING, _I.SEND_FINAL): (_S.COMPLETED, (_A.SEND,), (_I.TIMER_J,)),
    (_S.TRYING, _I.TRANSPORT_ERROR): _TERMINATE_ON_ERROR,
    (_S.PROCEEDING, _I.REQUEST): (_S.PROCEEDING, (_A.RESEND,), ()),
    (_S.PROCEEDING, _I.SEND_1XX): (_S.PROCEEDING, (_A.SEND,), ()),
    (_S.PROCEEDING, _I.SEND_2XX): (_S.COMPLETED, (_A.SEND,), (_I.TIMER_J,)),
    (_S.PROCEEDING, _I.SEND_FINAL): (_S.COMPLETED, (_A.SEND,), (_I.TIMER_J,)),
    (_S.PROCEEDING, _I.TRANSPORT_ERROR): _TERMINATE_ON_ERROR,
    (_S.COMPLETED, _I.REQUEST): (_S.COMPLETED, (_A.RESEND,), ()),
    (_S.COMPLETED, _I.TIMER_J): (_S.TERMINATED, (), ()),
    (_S.COMPLETED, _I.TRANSPORT_ERROR): _TERMINATE_ON_ERROR,
}

TABLES: dict[Kind, Table] = {
    Kind.INVITE_CLIENT: INVITE_CLIENT_TABLE,
    Kind.NON_INVITE_CLIENT: NON_INVITE_CLIENT_TABLE,
    Kind.INVITE_SERVER: INVITE_SERVER_TABLE,
    Kind.NON_INVITE_SERVER: NON_INVITE_SERVER_TABLE,
}

# Where each machine starts and which timers it starts there (RFC 3261 §17.1.1.2, §17.1.2.2,
# §17.2.1 (the 100 Trying delay), §17.2.2).
INITIAL: dict[Kind, tuple[State, tuple[Input, ...]]] = {
    Kind.INVITE_CLIENT: (_S.CALLING, (_I.TIMER_A, _I.TIMER_B)),
    Kind.NON_INVITE_CLIENT: (_S.TRYING, (_I.TIMER_E, _I.TIMER_F)),
    Kind.INVITE_SERVER: (_S.PROCEEDING, (_I.TIMER_100,)),
    Kind.NON_INVITE_SERVER: (_S.TRYING, ()),
}

# The members the per-message paths (TransactionLayer._apply, receive/send/cancel) use, bound once:
# compiled, each ``_A.X`` there is a module-global lookup plus an attribute lookup on the enum class
# (about 15 times the cost of a plain global on Python 3.11), run for every message and action.
_PASS_UP = _A.PASS_UP
_SEND = _A.SEND
_RESEND = _A.RESEND
_SEND_ACK = _A.SEND_ACK
_RESEND_ACK = _A.RESEND_ACK
_RETRANSMIT_DOUBLE = _A.RETRANSMIT_DOUBLE
_RETRANSMIT_CAPPED = _A.RETRANSMIT_CAPPED
_RETRANSMIT_T2 = _A.RETRANSMIT_T2
_SEND_TRYING = _A.SEND_TRYING
_PASS_ACK = _A.PASS_ACK
_SEND_PENDING_CANCEL = _A.SEND_PENDING_CANCEL
_DROP_PENDING_CANCEL = _A.DROP_PENDING_CANCEL
_REPORT_TIMEOUT = _A.REPORT_TIMEOUT
_ACCEPTED = _S.ACCEPTED
_COMPLETED = _S.COMPLETED
_CONFIRMED = _S.CONFIRMED
_TERMINATED = _S.TERMINATED
_SEND_1XX = _I.SEND_1XX
_RESPONSE_1XX = _I.RESPONSE_1XX
_RESPONSE_2XX = _I.RESPONSE_2XX
_RESPONSE_FINAL = _I.RESPONSE_FINAL
_ACK = _I.ACK
_REQUEST = _I.REQUEST
_INVITE_SERVER = Kind.INVITE_SERVER
_NON_INVITE_SERVER = Kind.NON_INVITE_SERVER
_INVITE_CLIENT = Kind.INVITE_CLIENT
_NON_INVITE_CLIENT = Kind.NON_INVITE_CLIENT
_SEND_2XX = _I.SEND_2XX
_SEND_FINAL = _I.SEND_FINAL
_CALLING = _S.CALLING
_PROCEEDING = _S.PROCEEDING
_TRANSPORT_ERROR = _I.TRANSPORT_ERROR

# Timers kept in a transaction's retransmission slot; every other timer uses the expiry slot.
RETRANSMIT_TIMERS = frozenset({_I.TIMER_A, _I.TIMER_E, _I.TIMER_G, _I.TIMER_100})


class TransactionError(Exception):
    """The TU asked for something the transaction layer cannot do: an unknown or terminated key,
    a response the state forbids (a second final), a duplicate branch. The layer is unchanged."""


@dataclass(slots=True)
class LayerStats:
    """Counters for metrics; the layer only ever increments them."""

    client_transactions: int = 0
    server_transactions: int = 0
    retransmissions_sent: int = 0
    requests_absorbed: int = 0
    responses_absorbed: int = 0
    stray_responses: int = 0
    timeouts: int = 0
    transport_errors: int = 0


class _Transaction:
    """One transaction's mutable state; only :class:`TransactionLayer` touches it."""

    __slots__ = (
        "kind",
        "table",
        "state",
        "key",
        "method",
        "request",
        "peer",
        "reliable",
        "wire",
        "to_tag",
        "ack",
        "retx_at",
        "retx_interval",
        "expire_at",
        "cancel_key",
        "cancel_request",
    )

    def __init__(self, kind: Kind, key: TransactionKey, method: str, request: Request, peer: Address) -> None:
        self.kind = kind
        self.table = TABLES[kind]
        self.state = INITIAL[kind][0]
        self.key = key
        self.method = method
        self.request = request
        # Client: where requests go. Server: where the request came from, so where responses go.
        self.peer = peer
        self.reliable = peer.reliable
        # Client: the serialised request. Server: the last response sent (None before the first).
        self.wire: bytes | None = None
        # Server: the To tag of the last response sent (RFC 2543 ACKs are matched by it).
        self.to_tag: str | None = None
        # INVITE client: the ACK sent for a non-2xx final, re-sent on its retransmissions.
        self.ack: bytes | None = None
        self.retx_at: float | None = None
        self.retx_interval = 0.0
        self.expire_at: float | None = None
        # INVITE client: key of the CANCEL sent or waiting for a provisional, and that CANCEL.
        self.cancel_key: TransactionKey | None = None
        self.cancel_request: Request | None = None


def make_branch() -> str:
    """Return a new RFC 3261 branch: the magic cookie and 64 random bits in hex (§8.1.1.7)."""
    return MAGIC_COOKIE + random_hex(BRANCH_RANDOM_BYTES)


def is_rfc3261_branch(branch: str | None) -> bool:
    """True when ``branch`` starts with the magic cookie and has something after it.

    A bare cookie (RFC 4475 badbranch) or a missing branch means the sender is RFC 2543 style.
    """
    return branch is not None and len(branch) > _COOKIE_LEN and branch[:_COOKIE_LEN].lower() == _COOKIE_LOWER


def _timer_live(entry: tuple) -> bool:
    """Whether heap entry ``(when, seq, transaction, timer)`` is still due: its deadline is the
    transaction's current one for that timer slot and the timer means something in its state."""
    tx: _Transaction
    when, _, tx, timer = entry
    slot = tx.retx_at if timer in RETRANSMIT_TIMERS else tx.expire_at
    return slot == when and (tx.state, timer) in tx.table


class TransactionLayer:
    """All transactions of one SIP endpoint, driven by messages, TU calls and a clock it is given.

    Nothing here blocks, reads the clock or raises on bad timing; every method that can change
    state takes ``now`` (seconds, any monotonic origin). Bytes to send accumulate until
    :meth:`pop_outgoing`.
    """

    def __init__(self, config: TimerConfig | None = None) -> None:
        self.config = config if config is not None else TimerConfig()
        self.stats = LayerStats()
        self._clients: dict[TransactionKey, _Transaction] = {}
        self._servers: dict[TransactionKey, _Transaction] = {}
        self._outgoing: list[Outgoing] = []
        self._heap: list[tuple[float, int, _Transaction, Input]] = []
        self._seq = itertools.count()
        self._stale = 0
        c = self.config
        base = {
            _I.TIMER_A: c.t1,
            _I.TIMER_B: c.timeout,
            _I.TIMER_E: c.t1,
            _I.TIMER_F: c.timeout,
            _I.TIMER_G: c.t1,
            _I.TIMER_H: c.timeout,
            _I.TIMER_L: c.timeout,
            _I.TIMER_M: c.timeout,
            _I.TIMER_100: c.trying_delay,
        }
        # Per reliability: the duration of each timer, None where the timer is not used.
        self._durations: dict[bool, dict[Input, float | None]] = {
            reliable: {
                **base,
                _I.TIMER_D: c.timer_d(reliable),
                _I.TIMER_I: c.timer_i(reliable),
                _I.TIMER_J: c.timer_j(reliable),
                _I.TIMER_K: c.timer_k(reliable),
            }
            for reliable in (False, True)
        }
        for timer in (_I.TIMER_A, _I.TIMER_E, _I.TIMER_G):
            # RFC 3261 §17.1.1.2, §17.1.2.2, §17.2.1: no retransmissions over reliable transports.
            self._durations[True][timer] = None

    # -- queries --------------------------------------------------------------------------------

    def __len__(self) -> int:
        """Number of live (not yet terminated) transactions."""
        return len(self._clients) + len(self._servers)

    def state(self, key: TransactionKey) -> State | None:
        """Return the state of transaction ``key``, or None when it is unknown or terminated."""
        tx = self._lookup(key)
        return tx.state if tx is not None else None

    def request(self, key: TransactionKey) -> Request | None:
        """Return the request that created transaction ``key``, or None when it is unknown or
        no longer kept: a server transaction and a non-INVITE client one drop it with their
        final response (see ``_release``); an INVITE client transaction keeps it to the end."""
        tx = self._lookup(key)
        return tx.request if tx is not None else None

    def find_invite_for_cancel(self, cancel: Request) -> TransactionKey | None:
        """Return the key of the INVITE server transaction ``cancel`` refers to, or None.

        Matching is RFC 3261 §9.2: the §17.2.3 rules with the method taken as INVITE (branch and
        sent-by, or the RFC 2543 fields for a branch without the magic cookie). The state of the
        INVITE transaction is not checked; ``state(key)`` tells whether a final was already sent.
        Raises SIPParseError when ``cancel`` lacks Via or CSeq. Leaves the layer unchanged.
        """
        key = self._server_key(cancel, "INVITE")
        return key if key in self._servers else None

    def has_server(self, req: Request) -> bool:
        """True if ``req`` belongs to a server transaction this layer has (a retransmission).
        Raises SIPParseError when ``req`` lacks what matching needs. Leaves the layer unchanged."""
        return self._server_key(req, req.method) in self._servers

    # -- input from the network -----------------------------------------------------------------

    def receive(self, msg: Request | Response, source: Address, now: float) -> list[Event]:
        """Feed one parsed message that arrived from ``source``; return what the TU must know.

        Requests: a new one creates a server transaction and yields :class:`RequestReceived`; a
        retransmission is absorbed (the last response, if any, is re-sent); an ACK is absorbed
        by the INVITE server transaction it completes, and otherwise yields :class:`AckReceived`.
        Responses: matched ones yield :class:`ResponseReceived` unless absorbed as
        retransmissions (a non-2xx final to INVITE is then answered by re-sending the ACK);
        unmatched ones yield :class:`StrayResponse`.
        Raises SIPParseError (layer unchanged) when the message lacks what matching needs: Via
        and CSeq, plus Call-ID, From and To for RFC 2543 requests.
        """
        if isinstance(msg, Response):
            return self._receive_response(msg, source, now)
        return self._receive_request(msg, source, now)

    def _receive_response(self, resp: Response, source: Address, now: float) -> list[Event]:
        # The str/tuple/list annotations on locals here and below are for the compiled build
        # (setup.py): Cython then compares, indexes and unpacks them in C. Python ignores them.
        branch: str = resp.branch
        tx: _Transaction = None
        if branch is not None:
            tx = self._clients.get(("C", branch.lower(), resp.cseq[1]))
        if tx is None:
            self.stats.stray_responses += 1
            return [StrayResponse(resp, source)]
        status = resp.status
        if status < 200:
            inp = _RESPONSE_1XX
        elif status < 300:
            inp = _RESPONSE_2XX
        else:
            inp = _RESPONSE_FINAL
        events: list[Event] = []
        self._apply(tx, inp, now, resp, source, events)
        if not events:  # matched but not passed up: a retransmission or a late response
            self.stats.responses_absorbed += 1
        return events

    def _receive_request(self, req: Request, source: Address, now: float) -> list[Event]:
        key: tuple
        tx: _Transaction
        method: str = req.method
        if method == "ACK":
            key = self._server_key(req, "INVITE")
            tx = self._find_2543_invite_for_ack(key) if key[0] == "S2543" else self._servers.get(key)
            if tx is None:
                return [AckReceived(req, source)]
            events: list[Event] = []
            if not self._apply(tx, _ACK, now, req, source, events):
                self.stats.requests_absorbed += 1
            return events
        key = self._server_key(req, method)
        tx = self._servers.get(key)
        if tx is not None:
            events = []
            self._apply(tx, _REQUEST, now, req, source, events)
            self.stats.requests_absorbed += 1
            return events
        kind = _INVITE_SERVER if method == "INVITE" else _NON_INVITE_SERVER
        tx = _Transaction(kind, key, method, req, source)
        self._servers[key] = tx
        self.stats.server_transactions += 1
        events = [RequestReceived(req, source, key)]
        for timer in INITIAL[kind][1]:
            self._start_timer(tx, timer, now, events)
        return events

    def _find_2543_invite_for_ack(self, key: TransactionKey) -> _Transaction | None:
        # RFC 3261 §17.2.3: an RFC 2543 ACK matches the INVITE by the same fields except that its
        # To tag equals the tag of the response the server transaction sent. The INVITE had the
        # same To tag (a re-INVITE) or none (the tag was added by the response).
        to_tag = key[2]
        if to_tag is None:
            return None
        tx = self._servers.get(key)
        if tx is None:
            tx = self._servers.get(key[:2] + (None,) + key[3:])
        if tx is None or tx.to_tag != to_tag:
            return None
        return tx

    def _server_key(self, req: Request, method: str) -> TransactionKey:
        host: str
        branch: str = req.branch
        if branch is not None and is_rfc3261_branch(branch):
            top_via: str = req.top_via
            m = _SENT_BY_RE.match(top_via)
            if m is not None:
                host = m.group(1).lower()
                port = int(m.group(2)) if m.group(2) else None
            else:
                via = via_view(top_via)[0]
                host = via.host.lower()
                port = via.port
            return ("S", branch.lower(), host, port, method)
        # RFC 3261 §17.2.3, RFC 2543 matching: Request-URI, To tag, From tag, Call-ID, CSeq, top
        # Via (the CSeq method stands in as ``method`` so ACK finds INVITE).
        return (
            "S2543",
            req.uri,
            req.to_tag,
            req.from_tag,
            req.call_id,
            req.cseq[0],
            method,
            req.top_via,
        )

    # -- input from the TU ----------------------------------------------------------------------

    def send_request(self, request: Request, dest: Address, now: float) -> TransactionKey:
        """Start a client transaction for ``request`` towards ``dest``; return its key.

        The request is serialised once and queued for :meth:`pop_outgoing`; retransmissions
        (Timer A/E, unreliable transports only) reuse the bytes. The top Via must carry a branch
        with the magic cookie (see :func:`make_branch`). Raises ValueError for ACK (not a
        transaction: use :meth:`send_stateless`) or a missing/RFC 2543 branch, and
        TransactionError when a transaction with the same branch and method exists; the layer is
        unchanged then. Leaves the new transaction in Calling (INVITE) or Trying.
        """
        method: str = request.method
        if method == "ACK":
            raise ValueError("ACK is not a transaction; send it with send_stateless()")
        branch: str = request.branch
        if not is_rfc3261_branch(branch):
            raise ValueError(f"top Via needs a branch starting with {MAGIC_COOKIE}, got {branch!r}")
        key: TransactionKey = ("C", branch.lower(), method)  # type: ignore[union-attr]
        if key in self._clients:
            raise TransactionError(f"a {method} client transaction with branch {branch} exists")
        self._start_client(key, request, dest, now)
        return key

    def _start_client(self, key: TransactionKey, request: Request, dest: Address, now: float) -> None:
        method: str = request.method
        kind = _INVITE_CLIENT if method == "INVITE" else _NON_INVITE_CLIENT
        tx = _Transaction(kind, key, method, request, dest)
        tx.wire = request.to_bytes()
        self._clients[key] = tx
        self.stats.client_transactions += 1
        self._outgoing.append(Outgoing(tx.wire, dest, key))
        for timer in INITIAL[kind][1]:
            self._start_timer(tx, timer, now, None)

    def send_response(self, key: TransactionKey, response: Response, now: float) -> list[Event]:
        """Send ``response`` on server transaction ``key``; return events it caused.

        The response is serialised once and queued to the address the request came from (its
        connection for stream transports). A 1xx keeps the transaction in Proceeding; a 2xx moves
        an INVITE transaction to Accepted (RFC 6026; further 2xx retransmissions by the TU are sent
        while Accepted lasts) and any final moves a non-INVITE one to Completed; a 300-699 moves
        an INVITE transaction to Completed and starts retransmitting it until the ACK. On reliable
        transports a non-INVITE transaction terminates at once, so the result may hold its
        :class:`TransactionTerminated`. Raises TransactionError when ``key`` is unknown or the
        state forbids the response (e.g. a second final); the layer is unchanged then.
        """
        tx = self._servers.get(key)
        if tx is None:
            raise TransactionError(f"no server transaction {key!r}")
        status = response.status
        if status < 200:
            inp = _SEND_1XX
        elif status < 300:
            inp = _SEND_2XX
        else:
            inp = _SEND_FINAL
        if (tx.state, inp) not in tx.table:
            raise TransactionError(f"cannot send {status} on a {tx.kind} transaction in {tx.state}")
        events: list[Event] = []
        self._apply(tx, inp, now, response, None, events)
        return events

    def send_stateless(self, msg: Request | Response | bytes, dest: Address) -> None:
        """Queue ``msg`` for ``dest`` outside any transaction (the ACK to a 2xx, RFC 3261
        §13.2.2.4; a TU's own 2xx retransmission after the transaction ended). No state changes.
        ``msg`` may be already serialised: a TU that keeps a message only to re-send it keeps
        its bytes (a third of the parsed message's memory)."""
        self._outgoing.append(Outgoing(msg if isinstance(msg, bytes) else msg.to_bytes(), dest))

    def cancel(
        self, key: TransactionKey, now: float, headers: Iterable[tuple[str, str]] = ()
    ) -> TransactionKey | None:
        """Cancel INVITE client transaction ``key`` (RFC 3261 §9.1); return the CANCEL's key.

        The CANCEL copies the INVITE's Request-URI, Call-ID, To, From, CSeq number, top Via and
        Route headers, adds ``headers`` (e.g. a Reason, RFC 3326), and runs as its own non-INVITE
        client transaction to the INVITE's destination. It is sent at once when a provisional has
        arrived (Proceeding); in Calling it waits for the first provisional and is dropped —
        with a :class:`TransactionTerminated` for its key — if a final arrives first. Calling it
        again returns the same key. Returns None, sending nothing, when the INVITE transaction
        is unknown or already has a final response (Completed/Accepted: the TU must ACK and BYE
        a 2xx). Raises TransactionError when ``key`` is a non-INVITE client transaction.
        """
        tx = self._clients.get(key)
        if tx is None:
            return None
        if tx.kind is not _INVITE_CLIENT:
            raise TransactionError(f"{key!r} is a {tx.kind} transaction; only INVITE is cancelled")
        if tx.cancel_key is not None:
            return tx.cancel_key
        if tx.state is not _CALLING and tx.state is not _PROCEEDING:
            return None
        cancel = build_cancel(tx.request, headers)
        cancel_key: TransactionKey = ("C", key[1], "CANCEL")
        tx.cancel_key = cancel_key
        if tx.state is _CALLING:
            tx.cancel_request = cancel
        else:
            self._start_client(cancel_key, cancel, tx.peer, now)
        return cancel_key

    def transport_error(self, key: TransactionKey, now: float) -> list[Event]:
        """The I/O layer could not send for transaction ``key`` (RFC 3261 §17.1.4, §17.2.4).

        Returns :class:`TransactionTransportError` and :class:`TransactionTerminated` for it; the
        transaction is removed. An unknown key (already terminated) returns [].
        """
        tx = self._lookup(key)
        if tx is None:
            return []
        events: list[Event] = []
        self._apply(tx, _TRANSPORT_ERROR, now, None, None, events)
        return events

    # -- time -------------------------------------------------------------------------------------

    def next_timer(self) -> float | None:
        """Return when :meth:`handle_timer` must next be called, or None when no timer runs.

        Amortised O(1): stale heap entries on top are discarded first. Leaves state unchanged
        apart from that clean-up.
        """
        heap: list = self._heap
        while heap:
            entry: tuple = heap[0]
            if _timer_live(entry):
                return entry[0]
            heapq.heappop(heap)
            if self._stale:
                self._stale -= 1
        return None

    def handle_timer(self, now: float) -> list[Event]:
        """Fire every timer due at or before ``now``, in deadline order; return the events.

        Retransmissions go to :meth:`pop_outgoing`; Timers B/F/H yield
        :class:`TransactionTimeout`; every transaction that ends yields
        :class:`TransactionTerminated` and is removed. Calling it early or twice is harmless.
        """
        events: list[Event] = []
        heap: list = self._heap
        entry: tuple
        tx: _Transaction
        while heap and heap[0][0] <= now:
            entry = heapq.heappop(heap)
            if not _timer_live(entry):
                if self._stale:
                    self._stale -= 1
                continue
            _, _, tx, timer = entry
            if timer in RETRANSMIT_TIMERS:
                tx.retx_at = None
            else:
                tx.expire_at = None
            self._apply(tx, timer, now, None, None, events)
        return events

    def pop_outgoing(self) -> list[Outgoing]:
        """Return and forget everything queued for sending, in the order it was queued."""
        out = self._outgoing
        if not out:
            return []
        self._outgoing = []
        return out

    # -- the machine ----------------------------------------------------------------------------

    def _lookup(self, key: TransactionKey) -> _Transaction | None:
        if key and key[0] == "C":
            return self._clients.get(key)
        return self._servers.get(key)

    def _start_timer(self, tx: _Transaction, timer: Input, now: float, events: list[Event] | None) -> None:
        duration = self._durations[tx.reliable][timer]
        if duration is None:
            return
        if duration == 0:
            # RFC 3261 §17: a zero timer (D, I, J, K on reliable transports) fires at once.
            self._apply(tx, timer, now, None, None, events if events is not None else [])
            return
        if timer in RETRANSMIT_TIMERS:
            tx.retx_interval = duration
            self._schedule_retx(tx, timer, now + duration)
        else:
            if tx.expire_at is not None:
                self._stale += 1
            when = tx.expire_at = now + duration
            self._push(when, tx, timer)

    def _schedule_retx(self, tx: _Transaction, timer: Input, when: float) -> None:
        if tx.retx_at is not None:
            self._stale += 1
        tx.retx_at = when
        self._push(when, tx, timer)

    def _push(self, when: float, tx: _Transaction, timer: Input) -> None:
        heap: list = self._heap
        heapq.heappush(heap, (when, next(self._seq), tx, timer))
        if self._stale > len(heap) // 2 and len(heap) >= HEAP_COMPACT_MIN:
            # In place: handle_timer() may be iterating over this very list.
            heap[:] = [e for e in heap if _timer_live(e)]
            heapq.heapify(heap)
            self._stale = 0

    def _apply(
        self,
        tx: _Transaction,
        inp: Input,
        now: float,
        msg: Request | Response | None,
        source: Address | None,
        events: list[Event],
    ) -> bool:
        """Run the table row for ``(tx.state, inp)``; return False when there is none (absorbed)."""
        actions: tuple
        timers: tuple
        row: tuple = tx.table.get((tx.state, inp))
        if row is None:
            return False
        new_state, actions, timers = row
        tx.state = new_state
        out: list = self._outgoing
        for action in actions:
            if action is _PASS_UP:
                events.append(ResponseReceived(msg, tx.key))  # type: ignore[arg-type]
            elif action is _SEND:
                tx.to_tag = msg.to_tag  # type: ignore[union-attr]
                tx.wire = msg.to_bytes()  # type: ignore[union-attr]
                out.append(Outgoing(tx.wire, tx.peer))
            elif action is _RESEND:
                if tx.wire is not None:
                    out.append(Outgoing(tx.wire, tx.peer))
                    self.stats.retransmissions_sent += 1
            elif action is _SEND_ACK:
                tx.ack = build_ack(tx.request, msg).to_bytes()  # type: ignore[arg-type]
                out.append(Outgoing(tx.ack, tx.peer))
            elif action is _RESEND_ACK:
                out.append(Outgoing(tx.ack, tx.peer))  # type: ignore[arg-type]
                self.stats.retransmissions_sent += 1
            elif (
                action is _RETRANSMIT_DOUBLE or action is _RETRANSMIT_CAPPED or action is _RETRANSMIT_T2
            ):
                out.append(Outgoing(tx.wire, tx.peer))  # type: ignore[arg-type]
                self.stats.retransmissions_sent += 1
                if action is _RETRANSMIT_DOUBLE:
                    tx.retx_interval *= 2
                elif action is _RETRANSMIT_CAPPED:
                    tx.retx_interval = min(2 * tx.retx_interval, self.config.t2)
                else:
                    tx.retx_interval = self.config.t2
                self._schedule_retx(tx, inp, now + tx.retx_interval)
            elif action is _SEND_TRYING:
                if tx.wire is None:  # the TU has not responded (wire is the last response sent)
                    self._apply(tx, _SEND_1XX, now, _trying_for(tx.request), None, events)
            elif action is _PASS_ACK:
                events.append(AckReceived(msg, source))  # type: ignore[arg-type]
            elif action is _SEND_PENDING_CANCEL:
                if tx.cancel_request is not None:
                    cancel, tx.cancel_request = tx.cancel_request, None
                    self._start_client(tx.cancel_key, cancel, tx.peer, now)  # type: ignore[arg-type]
            elif action is _DROP_PENDING_CANCEL:
                self._drop_pending_cancel(tx, events)
            elif action is _REPORT_TIMEOUT:
                self.stats.timeouts += 1
                events.append(TransactionTimeout(tx.key, tx.method))
            else:  # _REPORT_TRANSPORT_ERROR
                self.stats.transport_errors += 1
                events.append(TransactionTransportError(tx.key, tx.method))
        if new_state is _TERMINATED:
            self._terminate(tx, events)
        else:
            if new_state is _ACCEPTED or (new_state is _COMPLETED and tx.key[0] == "C"):
                # Nothing is retransmitted from here on (2xx retransmission is the TU's job; a
                # client's non-2xx is answered with tx.ack): the serialised message would only
                # sit out Timer L/M/D/K (32 s for an INVITE), ~1 KiB per call at 10,000 calls.
                tx.wire = None
            if new_state is _COMPLETED or new_state is _ACCEPTED or new_state is _CONFIRMED:
                _release(tx)
            for timer in timers:
                self._start_timer(tx, timer, now, events)
        return True

    def _drop_pending_cancel(self, tx: _Transaction, events: list[Event]) -> None:
        if tx.cancel_request is not None:
            events.append(TransactionTerminated(tx.cancel_key))  # type: ignore[arg-type]
            tx.cancel_request = None
            tx.cancel_key = None

    def _terminate(self, tx: _Transaction, events: list[Event]) -> None:
        if tx.retx_at is not None:
            self._stale += 1
            tx.retx_at = None
        if tx.expire_at is not None:
            self._stale += 1
            tx.expire_at = None
        self._drop_pending_cancel(tx, events)
        if tx.key[0] == "C":
            del self._clients[tx.key]
        else:
            del self._servers[tx.key]
        events.append(TransactionTerminated(tx.key))


def _release(tx: _Transaction) -> None:
    """Drop the request a transaction no longer needs once it has its final response.

    A server transaction from here on only absorbs retransmissions (re-sending ``tx.wire``) and
    matches ACKs (by key, or ``tx.to_tag`` for RFC 2543 ones: the response itself is not kept);
    a non-INVITE client transaction only absorbs late responses. They sit out Timer J/L/H/K for
    up to 32 s on UDP, so at 750 calls/s a worker held some 24,000 calls' requests and final
    responses for nothing (about
    12 KiB a call, memory that grew by 15 MB a second for the first 32 s of load). An INVITE
    client transaction keeps its request: a forked 2xx during Timer M is ACKed and hung up from
    it (``B2BUA._kill_late_answer``)."""
    if tx.key[0] == "S" or tx.method != "INVITE":
        tx.request = None


def _trying_for(request: Request) -> Response:
    # RFC 3261 §8.2.6.1: a 100 Trying copies the request's Timestamp header.
    ts = request.get("Timestamp")
    return make_response(request, 100, headers=[("Timestamp", ts)] if ts is not None else ())


def _request_skeleton(original: Request, method: str, to: str) -> Request:
    # The headers ACK (§17.1.1.3) and CANCEL (§9.1) share: top Via only, the original Route set,
    # From, To, Call-ID and the CSeq number with the new method.
    headers: list[tuple[str, str]] = [("Via", original.top_via)]
    headers.extend(h for h in original.headers if h[0] == "Route")
    headers.append(("Max-Forwards", str(MAX_FORWARDS_DEFAULT)))
    headers.append(("From", original.get("From") or ""))
    headers.append(("To", to))
    headers.append(("Call-ID", original.call_id))
    headers.append(("CSeq", f"{original.cseq[0]} {method}"))
    return Request(method, original.uri, headers)


def build_ack(invite: Request, response: Response) -> Request:
    """Build the ACK for a non-2xx final ``response`` to ``invite`` (RFC 3261 §17.1.1.3).

    Same Request-URI, Call-ID, From, CSeq number and top Via (hence branch) as the INVITE, the
    INVITE's Route headers, and the To of the response (with its tag). Raises SIPParseError when
    the INVITE lacks Via, Call-ID or CSeq.
    """
    return _request_skeleton(invite, "ACK", response.get("To") or invite.get("To") or "")


def build_cancel(invite: Request, headers: Iterable[tuple[str, str]] = ()) -> Request:
    """Build the CANCEL for ``invite`` (RFC 3261 §9.1), adding ``headers`` at the end.

    Same Request-URI, Call-ID, To, From, CSeq number, top Via and Route headers as the INVITE.
    Raises SIPParseError when the INVITE lacks Via, Call-ID or CSeq.
    """
    cancel = _request_skeleton(invite, "CANCEL", invite.get("To") or "")
    cancel.headers.extend(headers)
    return cancel
