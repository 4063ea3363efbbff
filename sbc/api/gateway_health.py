"""Live health of carrier gateways as the API shows it, behind a small protocol.

The API does not know where health comes from: in ``sbc run`` it is the OPTIONS prober's
:class:`routing.health.HealthTable` (adapted by :class:`HealthTableSource`); in a cluster it may
be a shared view; in tests a fake. Anything with :meth:`HealthSource.gateway_state` will do.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol

from routing.health import HealthTable
from routing.model import Gateway


@dataclass(frozen=True, slots=True)
class GatewayState:
    """One gateway's health: up or down, smoothed probe latency, when it was last probed."""

    up: bool
    latency_ms: float | None
    last_probe: datetime | None


class HealthSource(Protocol):
    """Where the API reads gateway health from."""

    def gateway_state(self, carrier: str, gateway: Gateway) -> GatewayState | None:
        """The gateway's state, or None when it is not probed (routing treats it as up)."""
        ...


class HealthTableSource:
    """:class:`HealthSource` over the prober's :class:`HealthTable`.

    The table keeps loop time (``loop.time()``); ``wall_offset`` (wall clock minus loop clock,
    the same offset the B2BUA uses for CDRs) turns probe times into UTC datetimes.
    """

    def __init__(self, table: HealthTable, wall_offset: float) -> None:
        self._table = table
        self._wall_offset = wall_offset

    def gateway_state(self, carrier: str, gateway: Gateway) -> GatewayState | None:
        """See :meth:`HealthSource.gateway_state`; latency is the smoothed (EWMA) probe latency."""
        status = self._table.status(carrier, gateway)
        if status is None:
            return None
        latency = status.ewma_latency_s if status.ewma_latency_s is not None else status.last_latency_s
        last = status.last_probe_at
        return GatewayState(
            up=status.up,
            latency_ms=None if latency is None else round(latency * 1000.0, 3),
            last_probe=None if last is None else datetime.fromtimestamp(last + self._wall_offset, UTC),
        )


__all__ = ["GatewayState", "HealthSource", "HealthTableSource"]
