"""The call-control contract between the REST API and the B2BUA.

The API (``sbc.api``) lists live calls, originates calls and hangs them up through this protocol
only; :class:`sbc.b2bua.engine.B2BUA` implements it (through ``sbc.app``), and API tests use a
fake. Keeping the contract in one small module lets the two sides change independently.

The methods are coroutines: in ``sbc run --workers N`` the API's call control
(:class:`sbc.workers.api.WorkerCallControl`) asks the other workers over a socket. A call control
that may answer for only part of the SBC says so: ``live_calls`` returns a :class:`LiveCallList`
whose ``missing`` names the workers that did not answer, and ``hangup`` raises
:class:`CallControlUnavailable` when the call was not found where it could look.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol


@dataclass(frozen=True, slots=True)
class LiveLeg:
    """One leg of a live call as the API shows it (no SIP internals beyond the dialog ids)."""

    side: str  # "a" (the leg that created the call) | "b" (the leg the SBC placed)
    call_id: str
    peer: str  # "host:port" of the far end
    remote_uri: str
    state: str  # "early" | "confirmed" | "ended"


@dataclass(frozen=True, slots=True)
class LiveCall:
    """A call in progress: what ``GET /v1/calls`` returns for each call."""

    id: str
    direction: str  # "inbound" | "outbound" | "originated"
    state: str  # sbc.b2bua.call.CallState value: routing, ringing, answered, ending
    caller: str
    callee: str
    customer: str | None
    carrier: str | None
    trunk: str | None
    gateway: str | None
    setup_at: float  # Unix time (seconds)
    answered_at: float | None
    legs: tuple[LiveLeg, ...]
    attempts: tuple[dict[str, Any], ...] = ()
    media: dict[str, Any] = field(default_factory=dict)  # relay stats per direction when anchored


class LiveCallList(list):
    """What ``live_calls`` returns: a list of :class:`LiveCall`, plus ``missing``, the indices of
    the workers (``sbc run --workers N``) that did not answer, whose calls are therefore absent.
    Empty for a single process and whenever every worker answered."""

    def __init__(self, calls: Iterable[LiveCall] = (), missing: Iterable[int] = ()) -> None:
        super().__init__(calls)
        self.missing: tuple[int, ...] = tuple(missing)


class CallControlUnavailable(Exception):
    """The answer depends on a part of the SBC that did not answer (a worker restarting or
    stalled); the API answers 503 with ``message``. ``missing``: those workers' indices."""

    def __init__(self, message: str, missing: Iterable[int] = ()) -> None:
        super().__init__(message)
        self.message = message
        self.missing: tuple[int, ...] = tuple(missing)


class OriginateError(Exception):
    """An origination was refused before any SIP was sent; ``status`` is the HTTP status to answer.

    404: the named carrier or the customer does not exist; 422: a number or URI is not usable;
    503: no route, no gateway up, or a limit was reached.
    """

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class CallControl(Protocol):
    """What the API may do to calls. Every method is a coroutine run on the event loop's thread."""

    async def live_calls(self, customer: str | None = None) -> list[LiveCall]:
        """Calls in progress, oldest first; only ``customer``'s calls when it is given. May be a
        :class:`LiveCallList` naming workers that did not answer (a plain list means complete)."""
        ...

    async def originate(
        self,
        *,
        caller: str,
        callee: str,
        bridge_to: str,
        carrier: str | None = None,
        customer: str | None = None,
    ) -> LiveCall:
        """Start an outbound call and return it (state ``routing``).

        ``callee`` (an E.164 number) is called through least-cost routing, or through the gateways
        of ``carrier`` when it is named; ``caller`` becomes the From user. When the callee answers,
        the SBC calls ``bridge_to`` (a trunk as ``trunk:CUSTOMER/NAME`` or a ``sip:`` URI) and joins
        the two. ``customer`` scopes the routes and limits and owns the call and its CDR.
        Raises :class:`OriginateError` when the call cannot be started at all; later failures end
        the call with a CDR like any other.
        """
        ...

    async def hangup(self, call_id: str, customer: str | None = None) -> bool:
        """End the call ``call_id`` (BYE to answered legs, CANCEL to ringing ones).

        Returns False when no such call is live (or it belongs to another customer than a given
        ``customer``); the call's CDR records ``hangup_by="api"``. Raises
        :class:`CallControlUnavailable` when the call was not found but part of the SBC (a
        worker) could not be asked.
        """
        ...
