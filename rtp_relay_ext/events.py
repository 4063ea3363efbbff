"""Events the relay engine reports to Python, and the errors its API raises.

Plain immutable values: the engine's native threads queue them in C, and
``RelayEngine.poll_events()`` turns each into one of these when Python drains
the queue (after the ``events_fd`` eventfd became readable).
"""

from __future__ import annotations

from dataclasses import dataclass

LEG_A = 0
"""Leg facing the first peer (by convention the caller / inbound side)."""
LEG_B = 1
"""Leg facing the second peer (by convention the callee / outbound side)."""


class RelayError(Exception):
    """A relay operation failed for a reason other than the ones below."""


class PoolExhausted(RelayError):
    """No session slot or no port pair is free (all ports in use or in quarantine)."""


class SessionNotFound(RelayError, KeyError):
    """The session id is unknown: never allocated, or already freed."""


@dataclass(frozen=True, slots=True)
class DtmfEvent:
    """One RFC 4733 telephone-event, reported once however many end packets came.

    ``leg`` is the leg the digit was received on (so it travels from that leg's
    peer to the other).  ``end_seen`` is False when every end packet was lost and
    the event was closed by the next one starting.
    """

    session_id: int
    leg: int
    digit: str
    event: int
    duration_ms: float
    volume: int
    end_seen: bool
    at: float


@dataclass(frozen=True, slots=True)
class MediaTimeout:
    """No packet in either direction for the session's timeout (or hold timeout when held).

    Reported once; reported again only after media flowed and stopped again.
    """

    session_id: int
    idle: float
    held: bool
    at: float
