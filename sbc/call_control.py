"""The running SBC's :class:`sbc.b2bua.control.CallControl`: the B2BUA on the loop's clock.

The engine is sans-I/O: it takes ``now`` and leaves what it wants sent in the core's queue.
The API calls in from a request handler on the same event loop, so this adapter supplies the
loop's time and flushes the SIP core (sends, reschedules timers) after each action. The methods
are coroutines (the :class:`~sbc.b2bua.control.CallControl` contract) but never suspend: each
runs to its end on the loop, as the engine requires.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .b2bua.control import LiveCall, OriginateError

if TYPE_CHECKING:
    from .app import SbcApp


class AppCallControl:
    """Live calls, origination and hang-up for the API, bound to one running :class:`SbcApp`."""

    def __init__(self, app: SbcApp) -> None:
        self.app = app

    def _engine(self):
        b2bua = self.app.b2bua
        if b2bua is None or self.app.loop is None:
            raise OriginateError(503, "the SBC is not running")
        return b2bua

    async def live_calls(self, customer: str | None = None) -> list[LiveCall]:
        b2bua = self.app.b2bua
        return [] if b2bua is None else b2bua.live_calls(customer)

    async def originate(
        self,
        *,
        caller: str,
        callee: str,
        bridge_to: str,
        carrier: str | None = None,
        customer: str | None = None,
    ) -> LiveCall:
        b2bua = self._engine()
        try:
            return b2bua.originate(
                caller=caller,
                callee=callee,
                bridge_to=bridge_to,
                carrier=carrier,
                customer=customer,
                now=self.app.loop.time(),  # type: ignore[union-attr]
            )
        finally:
            self.app.flush()

    async def hangup(self, call_id: str, customer: str | None = None) -> bool:
        b2bua = self.app.b2bua
        if b2bua is None or self.app.loop is None:
            return False
        try:
            return b2bua.hangup(call_id, self.app.loop.time(), customer)
        finally:
            self.app.flush()
