"""Digest authentication of customer trunks as the B2BUA sees it.

The authenticator's nonces carry wall-clock time (nodes of a cluster verify each other's), while
the call engine runs on the event loop's monotonic clock; this adapter adds the offset so the
engine can keep passing its own ``now``.
"""

from __future__ import annotations

from collections.abc import Callable

from ..sip.digest import AuthResult, DigestAuthenticator
from ..sip.message import Request, Response


class WallClockAuthenticator:
    """:class:`DigestAuthenticator` driven with monotonic time plus a fixed wall-clock offset."""

    def __init__(self, authenticator: DigestAuthenticator, wall_offset: float) -> None:
        self.authenticator = authenticator
        self.wall_offset = wall_offset

    def challenge(self, request: Request, now: float, *, stale: bool = False) -> Response:
        """A 401 with fresh nonces (see :meth:`DigestAuthenticator.challenge`)."""
        return self.authenticator.challenge(request, now + self.wall_offset, stale=stale)

    def verify(self, request: Request, lookup: Callable[[str], str | None], now: float) -> AuthResult:
        """Check the request's credentials (see :meth:`DigestAuthenticator.verify`)."""
        return self.authenticator.verify(request, lookup, now + self.wall_offset)
