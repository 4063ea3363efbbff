"""OPTIONS probing of carrier gateways (sans-I/O): sends the probes, feeds the health table.

The schedule and the up/down hysteresis live in :class:`routing.health.HealthTable`; this class
only turns due probes into OPTIONS client transactions and their outcome into
``record_probe`` calls. Routing skips gateways the table says are down.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable

from routing.health import HealthTable
from routing.model import Carrier, Gateway

from ..sip.events import Address, TransactionKey
from ..sip.message import Request, Response
from ..sip.transaction import TransactionLayer, make_branch
from ..transport.steering import PLACEMENT

log = logging.getLogger(__name__)

# A gateway that answers OPTIONS with any 2xx-4xx, or 501 (it does not implement OPTIONS), is
# reachable and parsing SIP (Kamailio's dispatcher is commonly set up to accept these with
# ds_ping_reply_codes). Other 5xx, 6xx and no answer at all count as failures.
_ALIVE_5XX = frozenset({501})


class GatewayProber:
    """Sends OPTIONS to every probed gateway at its carrier's interval."""

    def __init__(
        self,
        tx: TransactionLayer,
        local_address: Callable[[str], tuple[str, int]],
        *,
        user_agent: str = "sbc",
        table: HealthTable | None = None,
        resolve: Callable[[str, int | None, str], list[tuple[str, int]] | None] | None = None,
    ) -> None:
        self.tx = tx
        self.local_address = local_address
        # Host names of gateways, resolved ahead by sbc.resolver.DnsCache (None: IPs only).
        self.resolve = resolve
        self.user_agent = user_agent
        self.table = table or HealthTable()
        self._inflight: dict[TransactionKey, tuple[str, Gateway, float]] = {}
        self._seq = 0
        # HealthTable.next_due_at() scans every tracked gateway, and the core asks for the next
        # timer after every message; the schedule only moves in sync() and handle_timer().
        self._next_due: float | None = self.table.next_due_at()

    def sync(self, carriers: Iterable[Carrier], now: float) -> None:
        """Follow a provisioning change: new gateways get probed, removed ones forgotten."""
        self.table.sync(carriers, now)
        self._next_due = self.table.next_due_at()

    def next_timer(self) -> float | None:
        """When the next probe is due (None when nothing is probed)."""
        return self._next_due

    def handle_timer(self, now: float) -> None:
        """Send every probe that is due. Never raises: a probe that cannot be built or sent
        counts as a failed probe of its gateway."""
        if self._next_due is None or self._next_due > now:
            return
        for carrier, gateway in self.table.due_probes(now):
            try:
                self._send(carrier, gateway, now)
            except Exception:
                log.exception("could not probe %s gateway %s:%s", carrier, gateway.host, gateway.port)
                self.table.record_probe(carrier, gateway, False, None, now)
        self._next_due = self.table.next_due_at()

    def _send(self, carrier: str, gw: Gateway, now: float) -> None:
        transport = gw.transport.lower()
        host, port = self.local_address(transport)
        self._seq += 1
        target = f"[{gw.host}]" if ":" in gw.host else gw.host
        me = f"[{host}]" if ":" in host else host
        req = Request(
            "OPTIONS",
            f"sip:{target}:{gw.port}" + ("" if transport == "udp" else f";transport={transport}"),
            [
                ("Via", f"SIP/2.0/{transport.upper()} {me}:{port};branch={make_branch()};rport"),
                ("Max-Forwards", "70"),
                ("From", f"<sip:probe@{me}>;tag=probe{self._seq}"),
                ("To", f"<sip:{target}:{gw.port}>"),
                ("Call-ID", PLACEMENT.make(lambda: f"probe-{self._seq}-{make_branch()[7:]}@{me}")),
                ("CSeq", "1 OPTIONS"),
                ("User-Agent", self.user_agent),
            ],
        )
        dest = Address(transport, gw.host, gw.port)
        if self.resolve is not None:
            found = self.resolve(gw.host, gw.port, transport)
            if not found:
                # A gateway whose name does not resolve (yet) cannot answer: a failed probe.
                self.table.record_probe(carrier, gw, False, None, now)
                return
            dest = Address(transport, found[0][0], found[0][1])
        key = self.tx.send_request(req, dest, now)
        self._inflight[key] = (carrier, gw, now)

    def owns(self, key: TransactionKey) -> bool:
        """True when ``key`` is one of our probes."""
        return key in self._inflight

    def on_response(self, key: TransactionKey, response: Response, now: float) -> None:
        """A probe was answered (provisionals are ignored)."""
        if response.status < 200:
            return
        entry = self._inflight.pop(key, None)
        if entry is None:
            return
        carrier, gw, sent = entry
        ok = response.status < 500 or response.status in _ALIVE_5XX
        self.table.record_probe(carrier, gw, ok, now - sent if ok else None, now)

    def on_failure(self, key: TransactionKey, now: float) -> None:
        """A probe timed out (Timer F) or could not be sent."""
        entry = self._inflight.pop(key, None)
        if entry is not None:
            carrier, gw, _ = entry
            self.table.record_probe(carrier, gw, False, None, now)
