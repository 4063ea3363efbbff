"""What the sans-I/O SIP layer reports: small immutable event types, all defined here.

The transaction layer (:mod:`sbc.sip.transaction`) returns lists of these from ``receive``,
``handle_timer``, ``transport_error`` and friends, and hands bytes to send back as
:class:`Outgoing`. Nothing here does work; these are plain values the transaction user (the
B2BUA) matches on.

Transaction keys are opaque hashable tuples; the layer makes them, the TU only stores and passes
them back. The first element says which side the transaction is on: ``"C"`` for a client
transaction, ``"S"`` for a server transaction matched by its RFC 3261 branch, ``"S2543"`` for a
server transaction matched by the RFC 2543 rules (§17.2.3, requests without the magic cookie).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeAlias

from .message import Request, Response

TransactionKey: TypeAlias = tuple[str | int | None, ...]

# RFC 3261 §18: transports whose delivery is reliable (no SIP-level retransmissions, §17.1.1.2).
RELIABLE_TRANSPORTS = frozenset({"tcp", "tls", "ws", "wss", "sctp"})


@dataclass(frozen=True)
class Address:
    """Where a message came from or goes to.

    ``transport`` is lower case (``"udp"``, ``"tcp"``, ``"tls"``, ``"ws"``); ``conn_id``
    identifies the stream connection a request arrived on, so its responses go back over it
    (RFC 3261 §18.2.2); it is ``None`` for datagrams and for "open or reuse any connection".
    """

    transport: str
    host: str
    port: int
    conn_id: int | None = None

    @property
    def reliable(self) -> bool:
        """True for stream transports, where RFC 3261 §17 skips retransmissions."""
        return self.transport in RELIABLE_TRANSPORTS


@dataclass(frozen=True)
class Outgoing:
    """Bytes the I/O layer must send to ``dest`` now (first sends and retransmissions alike).

    ``key`` names the client transaction of a request's first send: when the I/O layer cannot
    send it (TCP connection refused, a transport it does not have) it reports that key back
    (RFC 3261 §17.1.4), so the call fails over at once instead of waiting for a timeout."""

    data: bytes
    dest: Address
    key: object = None


@dataclass(frozen=True)
class RequestReceived:
    """A new request created server transaction ``key``; answer it with ``send_response(key, ...)``.

    ACK is never reported this way (see :class:`AckReceived`); CANCEL is, with its own key.
    """

    request: Request
    source: Address
    key: TransactionKey


@dataclass(frozen=True)
class AckReceived:
    """An ACK that is not part of a non-2xx INVITE transaction: the end-to-end ACK of a 2xx
    (RFC 3261 §13.3.1.4, §17.1.1.3) — or an ACK that matched an INVITE server transaction in the
    RFC 6026 Accepted state. The dialog layer decides what it acknowledges."""

    request: Request
    source: Address


@dataclass(frozen=True)
class ResponseReceived:
    """A response matched client transaction ``key`` and is passed up (RFC 3261 §17.1).

    Every provisional and final response is reported once; absorbed retransmissions of a non-2xx
    final are not. Every 2xx to an INVITE is reported, retransmissions and other forks included
    (RFC 6026 Accepted state; also after a non-2xx final): the TU must ACK each 2xx it sees.
    """

    response: Response
    key: TransactionKey


@dataclass(frozen=True)
class StrayResponse:
    """A response that matched no client transaction (RFC 3261 §17.1.3 / §18.1.2).

    A B2BUA still needs stray 2xx retransmissions to INVITE to re-send its ACK.
    """

    response: Response
    source: Address


@dataclass(frozen=True)
class TransactionTimeout:
    """Timer B, F or H fired: the transaction gave up (RFC 3261 §17.1.1.2, §17.1.2.2, §17.2.1).

    For a client transaction the TU should act as on a 408; for an INVITE server transaction it
    means the ACK never came. A :class:`TransactionTerminated` for the same key follows.
    """

    key: TransactionKey
    method: str


@dataclass(frozen=True)
class TransactionTransportError:
    """The I/O layer could not send for transaction ``key`` (RFC 3261 §17.1.4, §17.2.4).

    The transaction is terminated; a :class:`TransactionTerminated` for the same key follows.
    """

    key: TransactionKey
    method: str


@dataclass(frozen=True)
class TransactionTerminated:
    """Transaction ``key`` reached Terminated and was removed; the key is now unknown.

    Every key the layer hands out (``RequestReceived.key``, ``send_request``, ``cancel``) ends
    with exactly one of these.
    """

    key: TransactionKey


Event: TypeAlias = (
    RequestReceived
    | AckReceived
    | ResponseReceived
    | StrayResponse
    | TransactionTimeout
    | TransactionTransportError
    | TransactionTerminated
)
